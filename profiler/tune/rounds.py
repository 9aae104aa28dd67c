"""Successive halving over jobs: each rung's candidates measured in groups, a group to a job,
jobs spread over the devices.

The tuner's one halving: rung 0 in priority order while the budget leaves room for the rungs
after it; the best 1/eta of each rung measured again for eta times the steps; a failure is
recorded and the search goes on; the ranking by the highest rung reached, then the figure there.
Its unit is a job, not a trial (`search` is the plain case: one candidate a job, one device):

- a job measures several candidates at once: the candidates of a warm-run group are segments of
  one run, interleaved in rounds (profiler.tune.warm), so a rung of twenty candidates that
  differ only in what a running worker can switch costs one start-up, not twenty;
- jobs run on every device at once (profiler.tune.devices.DevicePool); a group larger than its
  share is split so that no device idles, and a device that fails hands its job to another.

Time: a job's cost is its run's, start-up included, split between its candidates by their
steps; the search's spent time is the device time divided by the devices (the wall time of an
evenly shared queue), what the budget bounds. Nothing here runs a model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from profiler.tune.devices import DeviceLost
from profiler.tune.search import (
    Evaluator,
    Measurement,
    SearchResult,
    Trial,
    priority,
    prune,
    rung_steps,
    survivors,
)
from profiler.tune.space import Candidate

Job = tuple[list[Candidate], int, int]
"""(candidates, timed steps of each, rung)."""
RunJobs = Callable[[list[Job]], list]
"""Runs jobs (on the devices), results in order: {candidate: Measurement}, an exception (no
device left), or None (not started: a stop request)."""


class JobCosts:
    """cost(job) = start-up + per candidate-step x candidates x steps, fitted on the jobs so
    far (mean of each part)."""

    def __init__(self) -> None:
        self.fixed: list[float] = []
        self.per_step: list[float] = []
        self.jobs_per_candidate: float = 1.0

    def add(self, measured: dict[Candidate, Measurement], steps: int) -> None:
        if not measured:
            return
        cost = sum(m.cost_s for m in measured.values())
        fixed = sum(m.fixed_cost_s for m in measured.values())
        if cost <= 0:
            return
        self.fixed.append(fixed)
        self.per_step.append(max(0.0, cost - fixed) / (len(measured) * max(steps, 1)))

    @property
    def known(self) -> bool:
        return bool(self.fixed)

    def job(self, candidates: int, steps: int) -> float:
        if not self.fixed:
            return 0.0
        return (sum(self.fixed) / len(self.fixed)
                + sum(self.per_step) / len(self.per_step) * candidates * steps)

    def schedule(self, n0: int, steps: list[int], eta: int) -> float:
        """Predicted cost of the rungs after rung 0 for n0 candidates measured there."""
        total, n = 0.0, n0
        for s in steps[1:]:
            if n <= 2:
                break
            n = survivors(n, eta)
            jobs = max(1, round(n * self.jobs_per_candidate))
            total += self.job(n, s) + (jobs - 1) * self.job(0, s)
        return total


def split_for(jobs: list[list[Candidate]], devices: int) -> list[list[Candidate]]:
    """Halve the largest group until every device has a job (each part keeps two candidates
    or more, so it is still a warm run)."""
    jobs = [list(j) for j in jobs]
    while len(jobs) < devices:
        largest = max(range(len(jobs)), key=lambda i: len(jobs[i]), default=None)
        if largest is None or len(jobs[largest]) < 4:
            break
        group = jobs.pop(largest)
        half = math.ceil(len(group) / 2)
        jobs[largest:largest] = [group[:half], group[half:]]
    return jobs


def halving(candidates: Sequence[Candidate], group: Callable[[list[Candidate]], list[list[Candidate]]],
            run_jobs: RunJobs, *, budget_s: float, devices: int = 1, min_steps: int = 6,
            eta: int = 3, max_steps: int = 54, higher_is_better: bool = True,
            baseline: Candidate | None = None, on_trial: Callable[[Trial], Any] | None = None,
            should_stop: Callable[[], bool] | None = None,
            on_estimate: Callable[[float], Any] | None = None) -> dict:
    """Successive halving over jobs within `budget_s`; returns {"trials", "not_tried",
    "ranking", "failed", "spent_s", "stop_reason"}, with "device_s" (the jobs' cost summed)
    beside. on_estimate(seconds): after each wave, the
    search's time left as the jobs so far predict it (0 at its end)."""
    if min_steps < 1 or eta < 2 or max_steps < min_steps:
        raise ValueError("min_steps must be 1 or more, eta 2 or more and max_steps at least "
                         "min_steps")
    devices = max(1, devices)
    steps = rung_steps(min_steps, eta, max_steps)
    ordered = priority(candidates, baseline) if baseline is not None else list(candidates)
    trials: list[Trial] = []
    best_at: dict[Candidate, Trial] = {}
    costs = JobCosts()
    device_s = 0.0
    stop_reason = ""

    def stop_asked() -> bool:
        return should_stop is not None and should_stop()

    def record(jobs: list[Job], results: list) -> list[Candidate]:
        """The jobs' measurements as trials, in job order; the candidates measured."""
        nonlocal device_s
        measured = []
        for (job, job_steps, rung), result in zip(jobs, results, strict=True):
            if result is None:
                continue  # never started: a stop request
            if isinstance(result, BaseException):
                result = {c: Measurement(error=f"{type(result).__name__}: {result}")
                          for c in job}
            costs.add({c: m for c, m in result.items() if not m.extra.get("stopped")},
                      job_steps)
            for candidate in job:
                m = result.get(candidate) or Measurement(error="not measured")
                device_s += m.cost_s
                if m.extra.get("stopped"):
                    continue
                trial = Trial(len(trials) + 1, candidate, rung, job_steps, m)
                trials.append(trial)
                if not trial.failed:
                    best_at[candidate] = trial
                    measured.append(candidate)
                if on_trial is not None:
                    on_trial(trial)
        return measured

    def spent() -> float:
        return device_s / devices

    def sign(t: Trial) -> float:
        value = t.measurement.value
        return value if higher_is_better else -value

    # Rung 0: groups in priority order, a wave of one job per device, while the budget leaves
    # room for the job and the rungs that must follow.
    queue = split_for(group(ordered), devices)
    costs.jobs_per_candidate = len(queue) / max(1, len(ordered))
    measured: list[Candidate] = []
    not_tried: list[Candidate] = []
    out_of_budget = False
    while queue and not out_of_budget:
        if stop_asked():
            stop_reason = "stopped on request"
            break
        wave: list[Job] = []
        planned = 0.0
        for job in list(queue[:devices]):
            take = job
            if costs.known:  # the first wave runs whole: nothing to estimate it from yet
                n = len(measured) + sum(len(w[0]) for w in wave)
                while take and spent() + (planned + costs.job(len(take), steps[0]) + costs.schedule(
                        n + len(take), steps, eta)) / devices > budget_s:
                    take = take[:-1]
            if not take:
                out_of_budget = True
                break
            wave.append((take, steps[0], 0))
            planned += costs.job(len(take), steps[0])
            queue.remove(job)
            if len(take) < len(job):
                not_tried += job[len(take):]
                out_of_budget = True
                break
        if wave:
            measured += record(wave, run_jobs(wave))
            if on_estimate is not None and costs.known:
                waiting = sum(len(j) for j in queue)
                on_estimate((sum(costs.job(len(j), steps[0]) for j in queue) + costs.schedule(
                    len(measured) + waiting, steps, eta)) / devices)
    if not stop_reason and stop_asked():
        stop_reason = "stopped on request"
    not_tried += [c for job in queue for c in job]
    if stop_reason:
        tried = {t.candidate for t in trials}
        not_tried = [c for c in ordered if c not in tried]
    elif out_of_budget:
        stop_reason = (f"the budget ({budget_s:.0f} s) left room for "
                       f"{len(ordered) - len(not_tried)} of {len(ordered)} candidates at the "
                       "first rung")
    alive = [c for c in ordered if c in best_at]
    rung = 0
    while len(alive) > 2 and rung + 1 < len(steps) and not stop_reason.startswith("stopped"):
        ranked = sorted(alive, key=lambda c: sign(best_at[c]), reverse=True)
        alive = ranked[:survivors(len(ranked), eta)]
        rung += 1
        if stop_asked():
            stop_reason = "stopped on request"
            break
        jobs = [(job, steps[rung], rung) for job in split_for(group(alive), devices)]
        estimate = sum(costs.job(len(j[0]), steps[rung]) for j in jobs)
        if spent() + estimate / devices > budget_s:
            stop_reason = f"the budget ran out at rung {rung + 1}"
            break
        promoted = set(record(jobs, run_jobs(jobs)))
        if stop_asked():
            stop_reason = "stopped on request"
            break
        if not promoted:
            stop_reason = f"every trial of rung {rung + 1} failed"
            break
        alive = [c for c in alive if c in promoted]
        if on_estimate is not None:
            on_estimate(costs.schedule(len(alive), steps[rung:], eta) / devices)
    ranking = sorted(best_at.values(), key=lambda t: (t.rung, sign(t)), reverse=True)
    if on_estimate is not None:
        on_estimate(0.0)
    return {"trials": trials, "not_tried": not_tried, "failed": [t for t in trials if t.failed],
            "ranking": [{"candidate": t.candidate, "rung": t.rung, "steps": t.steps, "trial": t}
                        for t in ranking],
            "spent_s": spent(), "device_s": device_s,
            "stop_reason": stop_reason or "successive halving finished"}


def sequential(measure: Callable[[list[Candidate], int, int], dict]) -> RunJobs:
    """Jobs one after another on one device (a DeviceLost becomes the job's result)."""

    def run(jobs: list[Job]) -> list:
        out = []
        for job in jobs:
            try:
                out.append(measure(*job))
            except DeviceLost as exc:
                out.append(exc)
        return out

    return run


def search(candidates: Sequence[Candidate], evaluate: Evaluator, *,
           predict: Callable[[Candidate], float | None], memory_limit: float | None,
           budget_s: float, baseline: Candidate | None = None, **kw: Any) -> SearchResult:
    """Prune by predicted memory, then halving over the rest, one candidate a job on one
    device: `evaluate(candidate, steps)` measures a trial (an exception is its failure)."""
    fit, pruned, predicted = prune(candidates, predict, memory_limit)

    def measure(job: list[Candidate], steps: int, _rung: int) -> dict:
        (candidate,) = job
        try:
            return {candidate: evaluate(candidate, steps)}
        except Exception as exc:  # noqa: BLE001 - a failing trial never stops the search
            return {candidate: Measurement(error=f"{type(exc).__name__}: {exc}")}

    out = halving(fit, lambda group: [[c] for c in group], sequential(measure),
                  budget_s=budget_s, baseline=baseline, **kw)
    return SearchResult(out["trials"], pruned, out["not_tried"], out["ranking"], out["failed"],
                        out["spent_s"], budget_s, predicted, out["stop_reason"])


__all__ = ["Job", "JobCosts", "RunJobs", "halving", "search", "sequential", "split_for"]
