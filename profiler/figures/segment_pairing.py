"""Like with like: which segment of one run has the configuration of the other. A run whose
techniques changed mid-run went through several configurations (profiler.figures.segments); comparing
it with another run compares the segments whose techniques match, named in words, never a
headline over configurations with one of another. No torch, no Qt.
"""

from __future__ import annotations


def _techniques(listed: object) -> dict[str, dict]:
    """{name: params} of the registry's techniques in a summary's "techniques" list (what was
    applied at the start; entries that are not techniques, e.g. a fine-tuning note, left out)."""
    from techniques import registry

    out: dict[str, dict] = {}
    for item in listed if isinstance(listed, list) else []:
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            continue
        try:
            registry.get(name)
        except registry.UnknownTechnique:
            continue
        params = item.get("params")
        out[name] = dict(params) if isinstance(params, dict) else {}
    return out


def _changed(config: dict[str, dict], change: dict) -> dict[str, dict]:
    """A configuration after one mid-run change, as techniques.runtime.change applies it: off
    with enabled = false, else the given parameters over the current ones (the registry's
    defaults for a technique switched on)."""
    from techniques import registry

    name, params = change.get("technique"), dict(change.get("params") or {})
    out = dict(config)
    if not isinstance(name, str):
        return out
    if params.pop("enabled", True) is False:
        out.pop(name, None)
        return out
    try:
        base = out.get(name) or registry.get(name).defaults()
    except registry.UnknownTechnique:
        base = out.get(name) or {}
    out[name] = {**base, **params}
    return out


def _key(config: dict[str, dict]) -> str:
    import json

    return json.dumps(config, sort_keys=True, default=str)


def configurations(summary: object) -> list[dict[str, dict]] | None:
    """The techniques each segment of a run ran with ({name: params}; one entry for a run of one
    configuration), rebuilt from the summary: the techniques applied at the start, then each
    segment's changes in order. None when the summary cannot say (no techniques recorded, or
    the rebuilt last configuration is not the one the run reports it ended in)."""
    if not isinstance(summary, dict):
        return None
    ended = summary.get("active_techniques")
    ended = {str(k): dict(v) if isinstance(v, dict) else {} for k, v in ended.items()} \
        if isinstance(ended, dict) else None
    start = _techniques(summary.get("techniques"))
    parts = summary.get("segments")
    if not isinstance(parts, list) or len(parts) < 2:
        if ended is not None:
            return [ended]
        return [start] if isinstance(summary.get("techniques"), list) else None
    out, config = [], start
    for index, part in enumerate(parts):
        if not isinstance(part, dict):
            return None
        for change in part.get("changes") or [] if index else []:
            if isinstance(change, dict):
                config = _changed(config, change)
        out.append(config)
    if ended is not None and _key(out[-1]) != _key(ended):
        return None
    return out


def configuration_text(config: dict[str, dict]) -> str:
    """"optimizer (algorithm = adamw, ...); precision (dtype = bf16)"."""
    if not config:
        return "no techniques"
    return "; ".join(f"{name} ({', '.join(f'{k} = {v}' for k, v in sorted(params.items()))})"
                     if params else name for name, params in sorted(config.items()))


def segment_name(part: dict | None, count: int) -> str:
    """"the whole run" or "segment 2 of 3 (steps 21..40, after precision dtype = bf16)"."""
    if part is None:
        return "the whole run"
    return (f"segment {part.get('index', '?')} of {count} (steps {part.get('start_step', '?')}.."
            f"{part.get('end_step', '?')}, {'from the start' if part.get('label') == 'start' else 'after ' + str(part.get('label', '?'))})")


def _parts(summary: dict) -> list[dict] | None:
    parts = summary.get("segments") if isinstance(summary, dict) else None
    if isinstance(parts, list) and len(parts) >= 2 and all(isinstance(p, dict) for p in parts):
        return parts
    return None


def pairing(base: dict, other: dict) -> dict:
    """Which stretch of each run a comparison of their figures reads, like with like. Two runs
    of one configuration each: the whole runs. A run that changed techniques mid-run: the
    segment whose configuration is the other's (the pair with a run's last segment, the
    configuration its headline figures describe, first). {"base": segment or None (the whole
    run), "other": ..., "reason": "" or why nothing matches, "pairs": every (base index, other
    index) that matches, 0-based, "count": (segments of base, of other)}."""
    parts = _parts(base), _parts(other)
    counts = tuple(len(p) if p else 1 for p in parts)
    out = {"base": None, "other": None, "reason": "", "pairs": [], "count": counts}
    if parts == (None, None):
        return out
    configs = configurations(base), configurations(other)
    for config, summary_parts, which in zip(configs, parts, ("baseline", "other run"),
                                            strict=True):
        if config is None or len(config) != (len(summary_parts) if summary_parts else 1):
            out["reason"] = (f"the {which}'s segments cannot be matched: its summary does not say "
                             "which techniques each segment ran with")
            return out
    keys = [[_key(c) for c in config] for config in configs]
    out["pairs"] = [(i, j) for i, a in enumerate(keys[0]) for j, b in enumerate(keys[1]) if a == b]
    if not out["pairs"]:
        split = [n for n, p in zip(("the baseline", "the other run"), parts, strict=True) if p]
        out["reason"] = (f"no matching segment: {' and '.join(split)} changed techniques mid-run "
                         "and no segment of one ran the configuration of the other (each run's "
                         "segments are listed in the settings diff)")
        return out
    last = (counts[0] - 1, counts[1] - 1)
    headline = [p for p in out["pairs"] if p[0] == last[0] or p[1] == last[1]]
    i, j = max(headline or out["pairs"])
    out["base"] = parts[0][i] if parts[0] else None
    out["other"] = parts[1][j] if parts[1] else None
    return out


def timed_window(part: dict | None) -> tuple[int, int] | None:
    """The steps (first, last) whose per-step samples a segment's timed figures are the median
    of (its timed steps); None for the whole run."""
    if part is None:
        return None
    low, high = part.get("timed_from"), part.get("end_step")
    if isinstance(low, int) and isinstance(high, int):
        return low, high
    return (0, -1)
