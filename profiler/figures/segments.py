"""A run's segments: the stretches of steps between mid-run changes, each with its own figures.

A `set` the worker applies is announced as an `event` of kind "toggle" at step s and holds from
step s on (profiler/engine/workloads/loop.handle_command runs before step s is taken), so step s opens
a new segment. Each segment has its own speed, tokens per step, memory and loss slope: a run
that went fp32 -> bf16 -> accumulation is three configurations, and one number over all of them
describes none. The workloads build the summary's "segments" from their step records; the app
and the reports read that, and the app computes the same figures from the live stream while a
run goes (`from_messages`). No torch, no Qt.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from profiler.figures.metrics import format_summary_figure
from profiler.figures.stats import figure, percentile, timed_figure

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
