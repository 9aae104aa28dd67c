"""What a run offers a comparison, read once: its summary and, from its stream, the per-step
readings a verdict needs (profiler.figures.significance judges with them), with the machine state of
any stretch of its steps. Reads a stored run (profiler.store.StoredRun), a loaded one
(profiler.report.load.RunData) or a bare summary alike. No torch, no Qt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from profiler.figures import busy, segments
from profiler.figures.metrics import format_value

READ_KEYS = ("tokens_per_s", "step_time_s", "other_cpu_cores", "loss_train", "loss_distill",
             "loss_val")
"""The per-step readings a comparison reads from a run's stream."""


def _clean(values) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)]


@dataclass
class Evidence:
    """A run as a comparison reads it, read once: its summary, and from its stream the per-step
    readings of READ_KEYS, each (step, value, phase)."""

    run_id: str
    name: str
    summary: dict
    readings: dict[str, list[tuple[int, float, str | None]]] = field(default_factory=dict)

    @classmethod
    def of(cls, run) -> Evidence:
        """From a stored run (profiler.store.StoredRun: one scan of its stream) or a loaded one
        (profiler.report.load.RunData, which keeps every reading with its phase)."""
        series = getattr(run, "series", None)
        # A loaded run (RunData) keeps every reading with its phase, unless its long series were
        # reduced for drawing: then its stream is read again, since a verdict needs them all.
        if isinstance(series, dict) and getattr(run, "complete", True):
            summary = run.summary if isinstance(run.summary, dict) else {}
            readings = {k: [(s, v, p) for v, s, p in zip(found.values, found.steps, found.phases,
                                                         strict=True)
                            if isinstance(s, int) and _clean([v])]
                        for k in READ_KEYS if (found := series.get(k)) is not None}
            return cls(run.run_id, str(run.name), summary, readings)
        summary = (run.summary if isinstance(getattr(run, "summary", None), dict)
                   else run.summary() or {})
        readings: dict[str, list] = {}
        for message in run.messages(warnings=[]):
            step, found = message.get("step"), message.get("metrics")
            if message.get("type") != "sample" or not isinstance(step, int) \
                    or isinstance(step, bool) or not isinstance(found, dict):
                continue
            for key in READ_KEYS:
                value = found.get(key)
                if _clean([value]):
                    readings.setdefault(key, []).append((step, float(value),
                                                         message.get("phase")))
        meta = getattr(run, "meta", None)
        name = ((meta() if callable(meta) else meta) or {}).get("name") if meta is not None \
            else getattr(run, "name", None)
        return cls(run.run_id, str(name or run.run_id), summary, readings)

    def measured(self, key: str, window: tuple[int, int] | None) -> list[float]:
        """The measured-phase readings of `key` in the steps `window` (None: every measured
        step, or for a run that changed techniques mid-run its headline's last segment)."""
        span = window if window is not None else segments.headline_span(
            self.summary.get("segments"))
        return [v for step, v, phase in self.readings.get(key, [])
                if phase == "measure" and (span is None or span[0] <= step <= span[1])]

    def last_step(self, key: str) -> int | None:
        steps = [step for step, _, phase in self.readings.get(key, []) if phase != "teacher"]
        return max(steps) if steps else None

    def busy(self, window: tuple[int, int] | None) -> str:
        """Why this run's measured steps shared the machine ("" when they did not): the run's
        contention flag (profiler.measure.contention), or other processes' CPU read during the steps."""
        cores = self.summary.get("contention_cores")
        cores = cores if isinstance(cores, int) and not isinstance(cores, bool) else None
        readings = self.measured("other_cpu_cores", window)
        if readings and busy.contended(sum(readings) / len(readings), cores):
            mean = sum(readings) / len(readings)
            return (f"during the measured steps of {self.name!r} other processes used "
                    f"{format_value(mean, 'cores')}" + (f" of {cores}" if cores else ""))
        sentence = busy.sentence(self.summary)
        return f"{self.name!r}: {sentence}" if sentence else ""


def evidence_of(run, cache: dict | None = None) -> Evidence:
    """Evidence.of(run), once per run id when a cache is given; a bare summary (a dict) is
    evidence without per-step readings."""
    if isinstance(run, Evidence):
        return run
    if isinstance(run, dict):
        return Evidence(str(run.get("run_id", "")), "a run", run)
    if cache is None:
        return Evidence.of(run)
    key = getattr(run, "run_id", id(run))
    if key not in cache:
        cache[key] = Evidence.of(run)
    return cache[key]


def run_samples(run, keys: tuple[str, ...] | None = None) -> dict:
    """{sample key: measured values} for every sample key a verdict reads (or `keys`), warmup
    and compile steps left out, and in a run that changed techniques mid-run every step outside
    its headline's last segment: the samples the headline figure is the median of."""
    found = Evidence.of(run) if not isinstance(run, Evidence) else run
    wanted = keys or ("tokens_per_s", "step_time_s")
    if any(k not in READ_KEYS for k in wanted):
        raise ValueError(f"run_samples reads {', '.join(READ_KEYS)}; not {wanted}")
    return {k: found.measured(k, None) for k in wanted}
