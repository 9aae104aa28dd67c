"""Read one run back from the store into plain data that every report format draws from.

Nothing here trusts the run: a damaged line, a missing summary, a config that no longer
validates, a worker that died mid-step — each becomes a value (None, "n/a", a warning) so that a
report of a broken run still renders and says how the run ended.

Memory stays bounded whatever the stream holds (a run of a million steps, or a forged stream):
a long series is kept as the min and max of each stretch of readings (what a chart can draw,
with every gap), events, profiles and warnings are capped with a warning saying how many were
left out, and whatever needs every reading (the JSON and CSV exports, the verdicts) reads the
stream again, streamed (RunData.messages).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from profiler.figures.metrics import metric
from profiler.store import StoredRun

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

WARMUP_PHASES = ("warmup", "compile")
DRAWN_BUCKETS = 4096
"""A series past this many readings is kept as the min, max and gap of each of at most this
many stretches (a chart is a few hundred pixels wide; svg reduces it further)."""
MAX_SERIES = 1000
"""Distinct metric keys kept per run (the catalogue has about a hundred); more is a forged
stream, and their readings are left out with a warning."""
MAX_EVENTS, MAX_ERRORS, MAX_PROFILES, MAX_WARNINGS = 10_000, 1_000, 20, 200


@dataclass
class Series:
    """The readings of one metric, in stream order; value None is a missing reading (a gap).
    Every reading while there are at most DRAWN_BUCKETS of them; past that (`decimated`) the
    min and max and first gap of each stretch, and `count` says how many the stream holds."""

    key: str
    steps: list[int] = field(default_factory=list)
    times_s: list[float | None] = field(default_factory=list)
    phases: list[str | None] = field(default_factory=list)
    values: list[float | None] = field(default_factory=list)
    count: int | None = None
    """Readings in the stream (None: as many as held)."""

    @property
    def decimated(self) -> bool:
        return self.count is not None and self.count > len(self.values)

    @property
    def label(self) -> str:
        return metric(self.key).label

    @property
    def unit(self) -> str:
        return metric(self.key).unit

    def has_data(self) -> bool:
        return any(v is not None for v in self.values)

    def present(self) -> list[tuple[int, float]]:
        """(step, value) of the readings that exist."""
        return [(s, v) for s, v in zip(self.steps, self.values, strict=True) if v is not None]


@dataclass
class RunData:
    run_id: str
    name: str
    meta: dict
    config: dict                 # the parsed config.toml ({} when unreadable)
    config_text: str
    summary: dict                # summary.json, or a stand-in when the run has none
    hello: dict | None
    started: dict | None
    series: dict[str, Series]    # metric key -> every reading, in the order received
    samples: int                 # sample messages in the stream
    points: int                  # metric readings in the stream (null ones included)
    events: list[dict]
    errors: list[dict]
    profiles: list[dict]
    done: dict | None
    load_warnings: list[str]
    path: str
    phase_steps: dict[str, list[int]] | None = None
    """The steps recorded in the warmup and compile phases (None: read from the series)."""

    def messages(self, warnings: list[str] | None = None) -> Iterator[dict]:
        """The run's stream read again, streamed: for what needs every reading (the JSON and
        CSV exports, the verdicts) where the series hold a drawn view."""
        if not self.path:
            return iter(())
        return StoredRun(self.run_id, Path(self.path)).messages(
            warnings if warnings is not None else [])

    @property
    def complete(self) -> bool:
        """Whether the series hold every reading (none was reduced for drawing)."""
        return not any(s.decimated for s in self.series.values())

    # --- how the run ended ---------------------------------------------------------------------
    @property
    def status(self) -> str:
        return str(self.summary.get("status") or self.meta.get("status") or "unknown")

    @property
    def end(self) -> str:
        return str(self.summary.get("end") or "")

    def figure(self, key: str) -> float | None:
        """A summary figure's value, None when absent or not a finite number."""
        fig = (self.summary.get("figures") or {}).get(key)
        value = fig.get("value") if isinstance(fig, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return value if math.isfinite(value) else None

    @property
    def figures(self) -> dict[str, dict]:
        figs = self.summary.get("figures") or {}
        return {k: v for k, v in figs.items() if isinstance(v, dict)}

    @property
    def no_figures_reason(self) -> str:
        """Why the run has no summary figures, as a clause ("the worker never sent its
        summary"), for a run whose summary holds none."""
        if self.done is None:
            return "the worker never sent its summary"
        completed, measured = (self.summary.get("steps_completed"),
                               self.summary.get("measured_steps"))
        if isinstance(completed, int) and (measured == 0 or completed == 0):
            warmup = self.run_info.get("warmup_steps")
            within = (f", all within its {warmup} warmup steps"
                      if isinstance(warmup, int) and 0 < completed <= warmup else "")
            return (f"it ended after {completed} step{'' if completed == 1 else 's'}{within}, so "
                    "no step was measured")
        return "the worker's summary holds no figures"

    @property
    def run_info(self) -> dict:
        """The `started` message's run description ({} when the run never started)."""
        return (self.started or {}).get("run") or {}

    @property
    def environment(self) -> dict:
        """{versions, device, host}: from the stream's hello, else from the summary."""
        if self.hello:
            return {"versions": self.hello.get("versions") or {},
                    "device": self.hello.get("device") or {},
                    "host": self.hello.get("environment") or {}}
        env = self.summary.get("environment") or {}
        return {"versions": env.get("versions") or {}, "device": env.get("device") or {},
                "host": env.get("host") or {}}

    @property
    def capabilities(self) -> dict:
        return self.run_info.get("capabilities") or {}

    @property
    def device(self) -> str:
        return str(self.summary.get("device") or self.run_info.get("device")
                   or self.config.get("device") or "n/a")

    @property
    def techniques(self) -> list[dict]:
        """What each technique did at the start: [{name, label, params, report}]."""
        items = self.summary.get("techniques") or self.run_info.get("techniques") or []
        return [t for t in items if isinstance(t, dict)]

    def events_of(self, *kinds: str) -> list[dict]:
        return [e for e in self.events if e.get("kind") in kinds]

    def warmup_steps(self) -> list[int]:
        """Steps recorded in a warmup or compile phase (left out of the summary figures)."""
        return sorted(set(self._steps_in("warmup")) | set(self._steps_in("compile")))

    def compile_steps(self) -> list[int]:
        return self._steps_in("compile")

    def _steps_in(self, phase: str) -> list[int]:
        if self.phase_steps is not None:
            return self.phase_steps.get(phase, [])
        seen: set[int] = set()
        for series in self.series.values():
            seen.update(s for s, p in zip(series.steps, series.phases, strict=True) if p == phase)
        return sorted(seen)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


Point = tuple[int, int, float | None, str | None, float | None]
"""(order in the stream, step, time, phase, value)."""


def _extremes(points: list[Point]) -> list[Point]:
    """The min, the max and the first gap of some readings, in stream order."""
    present = [p for p in points if p[4] is not None]
    keep = {min(present, key=lambda p: p[4]), max(present, key=lambda p: p[4])} if present else set()
    gap = next((p for p in points if p[4] is None), None)
    if gap is not None:
        keep.add(gap)
    return sorted(keep)


class _Drawn:
    """One series as loaded: every reading up to DRAWN_BUCKETS, then the extremes (min, max,
    first gap) of stretches that double in length whenever there would be more stretches."""

    def __init__(self, buckets: int = DRAWN_BUCKETS):
        self.buckets_max = buckets
        self.width = 1
        self.buckets: list[list[Point]] = []
        self.count = 0
        self._reset()

    def _reset(self, points: list[Point] = ()) -> None:
        """The open stretch: empty, or holding the extremes of `points`."""
        present = [p for p in points if p[4] is not None]
        self.low = min(present, key=lambda p: p[4]) if present else None
        self.high = max(present, key=lambda p: p[4]) if present else None
        self.gap = next((p for p in points if p[4] is None), None)
        self.open_n = 0

    def add(self, step: int, time_s: float | None, phase: str | None,
            value: float | None) -> None:
        self.count += 1
        point = (self.count, step, time_s, phase, value)
        if self.width == 1:
            self.buckets.append([point])
        else:
            if value is None:
                if self.gap is None:
                    self.gap = point
            else:
                if self.low is None or value < self.low[4]:
                    self.low = point
                if self.high is None or value > self.high[4]:
                    self.high = point
            self.open_n += 1
            if self.open_n < self.width:
                return
            self.buckets.append(self._open_points())
            self._reset()
        if len(self.buckets) > self.buckets_max:
            self._halve()

    def _open_points(self) -> list[Point]:
        return sorted({p for p in (self.low, self.high, self.gap) if p is not None})

    def _halve(self) -> None:
        odd = self.buckets.pop() if len(self.buckets) % 2 else None
        self.buckets = [_extremes(a + b) for a, b in zip(self.buckets[0::2], self.buckets[1::2],
                                                         strict=True)]
        if odd is not None:  # half a stretch of the new width: it stays open
            self._reset(odd)
            self.open_n = self.width
        self.width *= 2

    def series(self, key: str) -> Series:
        points = [p for bucket in self.buckets for p in bucket] + self._open_points()
        return Series(key, [p[1] for p in points], [p[2] for p in points],
                      [p[3] for p in points], [p[4] for p in points],
                      count=self.count if self.count > len(points) else None)


class _Capped(list):
    """A list that keeps its first `cap` items and counts the rest."""

    def __init__(self, cap: int):
        super().__init__()
        self.cap, self.left_out = cap, 0

    def append(self, item: Any) -> None:
        if len(self) < self.cap:
            super().append(item)
        else:
            self.left_out += 1


def sample_readings(message: dict) -> Iterator[tuple[str, int, float | None, str | None,
                                                      float | None]] | None:
    """(key, step, time, phase, value) of each reading of a sample message as every report reads
    it (value None: missing or not finite); None for a sample without a step or metrics."""
    metrics = message.get("metrics")
    step = message.get("step")
    if not isinstance(metrics, dict) or isinstance(step, bool) or not isinstance(step, int):
        return None
    time_s = _number(message.get("time"))
    phase = message.get("phase") if isinstance(message.get("phase"), str) else None
    return ((str(key), step, time_s, phase, _number(value)) for key, value in metrics.items())


Sink = Callable[[str, int, "float | None", "str | None", "float | None"], None]
"""Takes each kept reading as it is read: (key, step, time, phase, value)."""


def load_run(stored: StoredRun, sink: Sink | None = None) -> RunData:
    """Everything the reports need from one run folder; never raises for damaged content.
    `sink` gets every kept reading in stream order as it is read (an export streams them to its
    file in the same pass)."""
    warnings: list[str] = []
    meta = stored.meta()
    config_text = stored.config_text()
    try:
        config = tomllib.loads(config_text) if config_text else {}
    except (tomllib.TOMLDecodeError, RecursionError, ValueError) as exc:
        config = {}
        warnings.append(f"config.toml could not be parsed ({exc}); shown as text only")
    hello = started = done = None
    drawn: dict[str, _Drawn] = {}
    events, errors, profiles = _Capped(MAX_EVENTS), _Capped(MAX_ERRORS), _Capped(MAX_PROFILES)
    skipped_samples = unkept = samples = points = 0
    phase_steps: dict[str, set[int]] = {"warmup": set(), "compile": set()}
    stream_warnings = _Capped(MAX_WARNINGS)
    for message in stored.messages(stream_warnings):
        kind = message.get("type")
        if kind == "sample":
            readings = sample_readings(message)
            if readings is None:
                skipped_samples += 1
                continue
            samples += 1
            for key, step, time_s, phase, value in readings:
                series = drawn.get(key)
                if series is None:
                    if len(drawn) >= MAX_SERIES:
                        unkept += 1
                        continue
                    series = drawn[key] = _Drawn()
                points += 1
                series.add(step, time_s, phase, value)
                if sink is not None:
                    sink(key, step, time_s, phase, value)
                if phase in phase_steps and len(phase_steps[phase]) < 100_000:
                    phase_steps[phase].add(step)
        elif kind == "event":
            events.append(message)
        elif kind == "error":
            errors.append(message)
        elif kind == "profile":
            profiles.append(message)
        elif kind == "hello":
            hello = message
        elif kind == "started":
            started = message
        elif kind == "done":
            done = message
    warnings.extend(stream_warnings)
    if stream_warnings.left_out:
        warnings.append(f"{stream_warnings.left_out:,} more lines of the stream were skipped "
                        "(damaged or overlong)")
    if skipped_samples:
        warnings.append(f"{skipped_samples:,} sample{'s' if skipped_samples > 1 else ''} without "
                        "a step or metrics were skipped")
    if unkept:
        warnings.append(f"{unkept:,} readings of metrics beyond the first {MAX_SERIES:,} "
                        "distinct metric names were left out")
    for what, kept in (("events", events), ("errors", errors), ("profiles", profiles)):
        if kept.left_out:
            warnings.append(f"{kept.left_out:,} more {what} than the {kept.cap:,} kept were "
                            "left out")
    series = {key: d.series(key) for key, d in drawn.items()}
    summary = stored.summary()
    # What could not be read in the folder (a symlink, a FIFO, a file over its size) comes first.
    warnings[:0] = [f"{problem} (in {stored.path})" for problem in stored.problems]
    if summary is None:
        status = meta.get("status", "unknown")
        if status == "running":
            status = "unknown"
        summary = {"status": status,
                   "end": "no summary.json: the run is still going, or its front end died before "
                          "it could record how the run ended"}
        if done is not None and isinstance(done.get("summary"), dict):
            summary = {**done["summary"], "status": done.get("status", status),
                       "end": summary["end"]}
    return RunData(
        run_id=stored.run_id, name=str(meta.get("name") or stored.run_id), meta=meta,
        config=config, config_text=config_text, summary=summary, hello=hello, started=started,
        series=series, samples=samples, points=points, events=list(events), errors=list(errors),
        profiles=list(profiles), done=done, load_warnings=warnings, path=str(stored.path),
        phase_steps={phase: sorted(steps) for phase, steps in phase_steps.items()},
    )
