"""A run's segments: the stretches of steps between mid-run changes, each with its own figures.

A `set` the worker applies is announced as an `event` of kind "toggle" at step s and holds from
step s on (profiler/workloads/loop.handle_command runs before step s is taken), so step s opens
a new segment. Each segment has its own speed, tokens per step, memory and loss slope: a run
that went fp32 -> bf16 -> accumulation is three configurations, and one number over all of them
describes none. The workloads build the summary's "segments" from their step records; the app
and the reports read that, and the app computes the same figures from the live stream while a
run goes (`from_messages`). No torch, no Qt.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from profiler.metrics import format_summary_figure
from profiler.stats import figure, percentile, timed_figure

RETIMED_STEPS = 1
"""Steps at the start of every segment after a change that its timed figures leave out: the
step right after a change pays for it once (a re-compiled graph, a new autocast cache, a
re-allocated gradient buffer), and counting it would charge the new configuration for the
switch. The steps of the run's own warmup are left out as well."""

STEP_KEYS = ("step", "step_time_s", "tokens", "loss_train", "rss_bytes",
             "torch_peak_allocated_bytes")
"""What one step record holds (a workload builds them, `records_from_messages` reads them back)."""


def step_record(step: int, step_time_s: float, tokens: int, loss_train: float | None,
                rss_bytes: float | None = None,
                torch_peak_allocated_bytes: float | None = None) -> dict:
    return {"step": step, "step_time_s": step_time_s, "tokens": tokens, "loss_train": loss_train,
            "rss_bytes": rss_bytes, "torch_peak_allocated_bytes": torch_peak_allocated_bytes}


def change_of(event: dict) -> dict:
    """What a toggle event changed, as a segment lists it."""
    out = {"step": event.get("step"), "technique": event.get("technique"),
           "params": event.get("params") or {}, "message": event.get("message", "")}
    if isinstance(event.get("tokens_per_step"), int):
        out["tokens_per_step"] = event["tokens_per_step"]
    return out


def change_text(changes: list[dict]) -> str:
    """"precision dtype = bf16; grad_accumulation micro_batches = 4" ("start" for none)."""
    if not changes:
        return "start"
    parts = []
    for change in changes:
        params = ", ".join(f"{k} = {v}" for k, v in (change.get("params") or {}).items())
        parts.append(f"{change.get('technique') or '?'}" + (f" {params}" if params else ""))
    return "; ".join(parts)


def loss_slope(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of loss against step (nats/token per step); None below two steps."""
    points = [(s, v) for s, v in points if isinstance(v, (int, float)) and v == v]
    if len(points) < 2:
        return None
    n = len(points)
    mean_step = sum(s for s, _ in points) / n
    mean_loss = sum(v for _, v in points) / n
    spread = sum((s - mean_step) ** 2 for s, _ in points)
    if spread == 0:
        return None
    return sum((s - mean_step) * (v - mean_loss) for s, v in points) / spread


def _peak(values: list) -> float | None:
    present = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return max(present) if present else None


def split(steps: list[dict], toggles: Iterable[dict], warmup_steps: int) -> list[dict]:
    """The segments of a run from its step records (see `step_record`, in step order) and its
    toggle events; a segment without any step (a change right before the run stopped) is left
    out."""
    opened: dict[int, list[dict]] = {}
    for event in toggles:
        if isinstance(event.get("step"), int):
            opened.setdefault(event["step"], []).append(change_of(event))
    starts = sorted(s for s in opened if s > 1)
    groups: list[tuple[list[dict], list[dict]]] = []  # (changes that opened it, its steps)
    changes_at_start = opened.get(1, []) + [c for s, cs in opened.items() if s < 1 for c in cs]
    current: list[dict] = []
    pending = list(starts)
    head = changes_at_start
    for record in steps:
        while pending and record["step"] >= pending[0]:
            groups.append((head, current))
            head, current = opened[pending.pop(0)], []
        current.append(record)
    groups.append((head, current))
    out = []
    for index, (changes, records) in enumerate(g for g in groups if g[1]):
        out.append(_segment(len(out) + 1, changes, records, warmup_steps, after_change=index > 0))
    return out


def _segment(index: int, changes: list[dict], records: list[dict], warmup_steps: int,
             after_change: bool) -> dict:
    first, last = records[0]["step"], records[-1]["step"]
    skip = RETIMED_STEPS if after_change else 0
    timed = [r for r in records[skip:] if r["step"] > warmup_steps and r["step_time_s"]]
    left_out = len(records) - len(timed)
    span = f"steps {first}..{last}"
    what = "the run's start" if not changes else f"after {change_text(changes)}"
    excluded = []
    if after_change:
        excluded.append(f"the first {RETIMED_STEPS} step after the change (it pays for the switch)")
    if first <= warmup_steps:
        excluded.append(f"warmup steps 1..{warmup_steps}")
    how_timed = (f"median over {len(timed)} of {len(records)} steps ({span}, {what})"
                 + (f", leaving out {' and '.join(excluded)}" if excluded and left_out else ""))
    token_counts = Counter(r["tokens"] for r in records if r.get("tokens"))
    tokens_per_step = token_counts.most_common(1)[0][0] if token_counts else None
    slope = loss_slope([(r["step"], r.get("loss_train")) for r in records])
    # The run's first segment holds its warmup, whose peak (a compile, the first optimizer
    # states) is not the configuration's: the allocator's counter restarts after warmup.
    settled = [r for r in records if r["step"] > warmup_steps] or records
    settled_span = (span if settled is records
                    else f"steps {settled[0]['step']}..{last}, after warmup")
    return {
        "index": index,
        "start_step": first,
        "end_step": last,
        "steps": len(records),
        "measured_steps": len(timed),
        "changes": changes,
        "label": change_text(changes),
        "timed_from": timed[0]["step"] if timed else None,
        "figures": {
            "tokens_per_s": timed_figure([r["tokens"] / r["step_time_s"] for r in timed],
                                         "tokens/s", "tokens / step time per step, " + how_timed),
            "step_time_s": timed_figure([r["step_time_s"] for r in timed], "s", how_timed),
            "step_time_p90_s": figure(percentile([r["step_time_s"] for r in timed], 90), "s",
                                      "90th percentile, " + how_timed),
            "step_time_p99_s": figure(percentile([r["step_time_s"] for r in timed], 99), "s",
                                      "99th percentile, " + how_timed),
            "tokens_per_step": figure(tokens_per_step, "tokens",
                                      f"tokens one optimizer step read ({span})"),
            "peak_rss_bytes": figure(
                _peak([r.get("rss_bytes") for r in records]), "bytes",
                f"highest worker RSS read after a step in {span} (RSS seldom shrinks: it "
                "includes what earlier segments left allocated)"),
            "peak_torch_allocated_bytes": figure(
                _peak([r.get("torch_peak_allocated_bytes") for r in settled]), "bytes",
                f"torch peak allocated in {settled_span}: the workloads restart the allocator's "
                "peak counter after warmup and at each change, on every rank, so the figure is "
                "this segment's own (n/a on CPU)"),
            "loss_slope": figure(slope, "nats/token per step",
                                 f"least-squares slope of the train loss over all {len(records)} "
                                 f"steps of {span} (negative: learning)"),
        },
    }


def records_from_messages(messages: Iterable[dict]) -> tuple[list[dict], list[dict], int]:
    """(step records, toggle events, warmup steps) read back from a run's messages: the
    training samples (step >= 1, not a teacher's or evaluation's), the toggles, and the
    `started` message's warmup_steps. Tokens come from the sample's tokens_per_s x step_time_s."""
    steps: dict[int, dict] = {}
    toggles: list[dict] = []
    warmup = 0
    for message in messages:
        kind = message.get("type")
        if kind == "started":
            warmup = int(((message.get("run") or {}).get("warmup_steps")) or 0)
        elif kind == "event" and message.get("kind") == "toggle":
            toggles.append(message)
        elif kind == "sample" and message.get("phase") in (None, "warmup", "compile", "measure"):
            metrics, step = message.get("metrics") or {}, message.get("step")
            time_s, rate = metrics.get("step_time_s"), metrics.get("tokens_per_s")
            if not isinstance(step, int) or step < 1 or not time_s or rate is None:
                continue
            steps[step] = step_record(step, time_s, round(rate * time_s),
                                      metrics.get("loss_train"), metrics.get("rss_bytes"),
                                      metrics.get("torch_peak_allocated_bytes"))
    return [steps[s] for s in sorted(steps)], toggles, warmup


def from_messages(messages: Iterable[dict]) -> list[dict]:
    """A run's segments from its stream (live or stored); the summary's when the run has one."""
    messages = list(messages)
    for message in reversed(messages):
        if message.get("type") == "done":
            stored = (message.get("summary") or {}).get("segments")
            if isinstance(stored, list):
                return stored
            break
    return split(*records_from_messages(messages))


def headline_span(segments: object) -> tuple[int, int] | None:
    """The steps (first, last) a run's headline speed figures are taken over when it changed
    techniques mid-run: the timed steps of its last segment, the configuration it ended in;
    None for a run of one configuration (every measured step counts); (0, -1), no step at all,
    when the last segment has no timed step. Reads a summary's segments as stored, so anything
    that is not a list of segments counts as one configuration."""
    if not isinstance(segments, list) or len(segments) < 2 or not isinstance(segments[-1], dict):
        return None
    low, high = segments[-1].get("timed_from"), segments[-1].get("end_step")
    if isinstance(low, int) and isinstance(high, int):
        return low, high
    return (0, -1)


def last_timed(segments: list[dict], records: list[dict]) -> list[dict]:
    """The step records the run's headline speed figures are computed from when it changed
    techniques mid-run (headline_span), never an average over configurations."""
    span = headline_span(segments)
    if span is None:
        return []
    return [r for r in records if span[0] <= r["step"] <= span[1] and r["step_time_s"]]


def headline(segments: list[dict], records: list[dict]) -> dict | None:
    """What a run's headline speed figures are taken from when it changed techniques mid-run:
    the last segment's timed steps (step_times, step_rates in tokens/s, tokens) and how that was
    taken in words (window); None for a run of one configuration (its measured steps are the
    headline's)."""
    if len(segments) < 2:
        return None
    last = last_timed(segments, records)
    return {"step_times": [r["step_time_s"] for r in last],
            "step_rates": [r["tokens"] / r["step_time_s"] for r in last],
            "tokens": sum(r["tokens"] for r in last), "window": headline_window(segments)}


def headline_window(segments: list[dict]) -> str:
    """How the headline of a run with several segments was taken, in words."""
    last = segments[-1]
    changed = ", ".join(str(s["start_step"]) for s in segments[1:])
    return (f"the last segment only: steps {last['timed_from']}..{last['end_step']} "
            f"({last['measured_steps']} steps, after {last['label']}); the run changed techniques "
            f"at step(s) {changed}, each segment's figures are listed apart")


TABLE_COLUMNS = (("tokens_per_s", "Tokens/s"), ("step_time_s", "Step time p50"),
                 ("step_time_p90_s", "Step time p90"), ("tokens_per_step", "Tokens/step"),
                 ("peak_rss_bytes", "Peak RSS"), ("peak_torch_allocated_bytes", "Peak allocated"),
                 ("loss_slope", "Loss slope"))
"""The figures a segment table shows, in order, with their column headers."""


def table(parts: object) -> tuple[list[str], list[list[str]]] | None:
    """The segments of a run as a table of text for every front end (the CLI, the reports, the
    app): (headers, rows), each row "#", steps, what opened it, then TABLE_COLUMNS formatted
    with their spread; None when the run has one segment (its headline says everything) or the
    summary's segments are not a list of dicts."""
    if not isinstance(parts, list) or len(parts) < 2:
        return None
    headers = ["#", "Steps", "After"] + [header for _, header in TABLE_COLUMNS]
    rows = []
    for part in parts:
        if not isinstance(part, dict):
            return None
        figures = part.get("figures") if isinstance(part.get("figures"), dict) else {}
        rows.append([str(part.get("index", "?")),
                     f"{part.get('start_step', '?')}..{part.get('end_step', '?')}",
                     str(part.get("label", "?"))]
                    + [format_summary_figure(key, figures.get(key)) for key, _ in TABLE_COLUMNS])
    return headers, rows


# --- like with like: which segment of one run has the configuration of the other ----------------
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
