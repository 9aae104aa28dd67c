"""Energy of a run's timed steps: NVML's energy counter read around each step, summed over the
job's GPUs, given only over a window long enough for the counter to resolve. No torch."""

from __future__ import annotations

from typing import Any

from profiler.figures.stats import figure

ENERGY_MIN_S = 2.0
"""The fewest measured seconds an energy figure is given for: NVML's energy counter advances in
steps (a power reading integrated over the driver's own period), so a shorter window is mostly
rounding."""


class EnergyMeter:
    """Joules of each timed step: NVML's total-energy counter read right before the step's clock
    starts and right after the step ends (the device synchronised), so validation passes, memory
    probes and everything between steps stay out; where the GPU has no counter, its power
    reading x the step's time (said so in `how`). None (n/a) without a GPU or on a MIG slice."""

    def __init__(self, sampler: Any) -> None:
        self.sampler = sampler
        self._start: float | None = None
        self.method = "counter"
        """counter, power (mean power x time) or none, as the last step was measured."""

    def begin(self) -> None:
        self._start = self.sampler.energy_now() if self.sampler is not None else None

    def end(self, step_time_s: float) -> float | None:
        if self.sampler is None:
            self.method = "none"
            return None
        end = self.sampler.energy_now()
        if self._start is not None and end is not None:
            self.method = "counter"
            return max(0.0, end - self._start)
        power = self.sampler.latest().get("gpu_power_w")
        self.method = "power" if power is not None else "none"
        return power * step_time_s if power is not None else None

    def why_not(self) -> str:
        """Why the run has no energy figure, when it has none."""
        note = self.sampler.gpu_note if self.sampler is not None else ""
        return f"n/a: {note}" if note else "n/a: no energy counter for CPUs"


def energy_figures(step_energy: list[float | None], step_times: list[float], tokens: int,
                   world_size: int, method: str, why_not: str, window: str) -> dict:
    """Joules per token and per step over the headline window's steps (`window` in words):
    each step's joules summed over every GPU of the job, divided by the job's tokens."""
    seconds = sum(step_times)
    how = ""
    joules = None
    if not step_energy:
        how = "n/a: no step measured"
    elif any(j is None for j in step_energy):
        how = why_not
    elif seconds < ENERGY_MIN_S:
        how = (f"n/a: the measured steps lasted {seconds:.2g} s, under the {ENERGY_MIN_S:g} s "
               "NVML's energy counter needs to resolve a figure; run more steps")
    else:
        joules = sum(step_energy)
        source = ("NVML total-energy counter read around each timed step" if method == "counter"
                  else "fallback: NVML power x each step's time (this GPU has no energy counter)")
        gpus = f", summed over {world_size} GPUs" if world_size > 1 else ""
        how = (f"{source}{gpus}, over {window}; validation passes, memory probes and the time "
               "between steps left out")
    steps = len(step_energy)
    return {
        "energy_j": figure(joules, "J", how),
        "energy_per_token_j": figure(joules / tokens if joules is not None and tokens else None,
                                     "J/token", how),
        "energy_per_step_j": figure(joules / steps if joules is not None and steps else None,
                                    "J/step", how),
    }


def job_joules(ranks: list[list[float | None]], column: int) -> float | None:
    """One step's joules for the whole job: every rank's reading (a row of the step's gathered
    figures) summed; None (n/a) when any rank has none, never a part passed off as the whole."""
    values = [row[column] for row in ranks]
    return None if any(v is None for v in values) else sum(values)
