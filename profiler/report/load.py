"""Read one run back from the store into plain data that every report format draws from.

Nothing here trusts the run: a damaged line, a missing summary, a config that no longer
validates, a worker that died mid-step — each becomes a value (None, "n/a", a warning) so that a
report of a broken run still renders and says how the run ended.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any

from profiler.metrics import metric
from profiler.store import StoredRun

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

WARMUP_PHASES = ("warmup", "compile")


@dataclass
class Series:
    """Every reading of one metric, in stream order; value None is a missing reading (a gap)."""

    key: str
    steps: list[int] = field(default_factory=list)
    times_s: list[float | None] = field(default_factory=list)
    phases: list[str | None] = field(default_factory=list)
    values: list[float | None] = field(default_factory=list)

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
        seen: set[int] = set()
        for series in self.series.values():
            for step, phase in zip(series.steps, series.phases, strict=True):
                if phase in WARMUP_PHASES:
                    seen.add(step)
        return sorted(seen)

    def compile_steps(self) -> list[int]:
        seen: set[int] = set()
        for series in self.series.values():
            seen.update(s for s, p in zip(series.steps, series.phases, strict=True)
                        if p == "compile")
        return sorted(seen)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def load_run(stored: StoredRun) -> RunData:
    """Everything the reports need from one run folder; never raises for damaged content."""
    warnings: list[str] = []
    meta = stored.meta()
    config_text = stored.config_text()
    try:
        config = tomllib.loads(config_text) if config_text else {}
    except (tomllib.TOMLDecodeError, RecursionError, ValueError) as exc:
        config = {}
        warnings.append(f"config.toml could not be parsed ({exc}); shown as text only")
    hello = started = done = None
    series: dict[str, Series] = {}
    events: list[dict] = []
    errors: list[dict] = []
    profiles: list[dict] = []
    samples = points = 0
    for message in stored.messages(warnings):
        kind = message.get("type")
        if kind == "sample":
            metrics = message.get("metrics")
            step = message.get("step")
            if not isinstance(metrics, dict) or isinstance(step, bool) or not isinstance(step, int):
                warnings.append("a sample without a step or metrics was skipped")
                continue
            samples += 1
            time_s = _number(message.get("time"))
            phase = message.get("phase") if isinstance(message.get("phase"), str) else None
            for key, value in metrics.items():
                points += 1
                s = series.setdefault(str(key), Series(str(key)))
                s.steps.append(step)
                s.times_s.append(time_s)
                s.phases.append(phase)
                s.values.append(_number(value))
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
        series=series, samples=samples, points=points, events=events, errors=errors,
        profiles=profiles, done=done, load_warnings=warnings, path=str(stored.path),
    )
