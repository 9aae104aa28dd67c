"""The search: memory pruning, then successive halving over what is predicted to fit.

Nothing here runs a model: an evaluator does (runner.RunEvaluator launches real short runs;
the tests pass a deterministic cost model). The search

1. prunes: a candidate whose predicted peak exceeds the memory limit is never evaluated and is
   listed as "predicted not to fit" (a candidate without a prediction is tried);
2. measures every remaining candidate for `min_steps` measured steps (rung 0), the config as
   given first, then single changes before combinations, while the budget allows the rung and
   the rungs that must follow it;
3. keeps the best third (eta) and measures them for eta times more steps, and so on, until two
   are left or `max_steps` is reached; a trial that fails is recorded with its reason and its
   candidate drops out, the search goes on.

The ranking is by the highest rung each candidate reached, then by its figure there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from profiler.tune.space import Candidate


@dataclass
class Measurement:
    """What an evaluator returns for one trial."""

    value: float | None = None
    """The objective's figure (e.g. the median tokens/s of the measured steps)."""
    ci_low: float | None = None
    ci_high: float | None = None
    """The 95 % interval of that figure (None where too few steps for one)."""
    peak_bytes: float | None = None
    """The measured memory peak (CUDA: torch peak allocated; CPU: RSS added by training)."""
    cost_s: float = 0.0
    """Seconds the trial took, start-up included: what the budget is spent in."""
    fixed_cost_s: float = 0.0
    """The part of cost_s that does not grow with the steps (start-up, warmup, compile)."""
    error: str | None = None
    """Why the trial failed (its figure is then None)."""
    run_id: str | None = None
    samples: list[float] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


Evaluator = Callable[[Candidate, int], Measurement]
"""evaluate(candidate, measured_steps) -> Measurement."""


@dataclass
class Trial:
    number: int
    candidate: Candidate
    rung: int
    steps: int
    measurement: Measurement

    @property
    def failed(self) -> bool:
        return self.measurement.error is not None or self.measurement.value is None


@dataclass
class SearchResult:
    trials: list[Trial]
    pruned: list[dict]
    """{"candidate", "predicted_bytes", "limit_bytes"}: predicted not to fit, never launched."""
    not_tried: list[Candidate]
    """Candidates the budget left no room for at rung 0."""
    ranking: list[dict]
    """Best first: {"candidate", "rung", "steps", "trial"} for each candidate measured."""
    failed: list[Trial]
    spent_s: float
    budget_s: float
    predicted: dict[Candidate, float | None]
    stop_reason: str

    @property
    def best(self) -> Candidate | None:
        return self.ranking[0]["candidate"] if self.ranking else None

    @property
    def runner_up(self) -> Candidate | None:
        return self.ranking[1]["candidate"] if len(self.ranking) > 1 else None


def prune(candidates: Sequence[Candidate], predict: Callable[[Candidate], float | None],
          limit_bytes: float | None) -> tuple[list[Candidate], list[dict], dict]:
    """(candidates predicted to fit or without a prediction, pruned ones, every prediction)."""
    keep, pruned, predicted = [], [], {}
    for candidate in candidates:
        value = predict(candidate)
        predicted[candidate] = value
        if limit_bytes is not None and value is not None and value > limit_bytes:
            pruned.append({"candidate": candidate, "predicted_bytes": value,
                           "limit_bytes": limit_bytes})
        else:
            keep.append(candidate)
    return keep, pruned, predicted


def priority(candidates: Sequence[Candidate], baseline: Candidate) -> list[Candidate]:
    """The baseline first, then by how many dimensions differ from it; among as many changes,
    the earlier dimensions first (the space lists cheap, common ones such as the batch before
    torch.compile, whose cold compile makes a trial long)."""
    order = {d: i for i, (d, _) in enumerate(baseline.values)}

    def key(c: Candidate) -> tuple:
        changed = [order[d] for d, v in c.values if baseline.value(d) != v]
        return (c != baseline, len(changed), changed)

    return sorted(candidates, key=key)


def rung_steps(min_steps: int, eta: int, max_steps: int) -> list[int]:
    steps, out = min_steps, []
    while True:
        out.append(min(steps, max_steps))
        if steps >= max_steps:
            return out
        steps *= eta


def survivors(n: int, eta: int) -> int:
    """How many of n go on to the next rung (at least two, for the final comparison)."""
    return max(2, math.ceil(n / eta))


class _CostModel:
    """cost(steps) = fixed + per_step * steps, fitted on the trials so far (mean of each part)."""

    def __init__(self) -> None:
        self.fixed: list[float] = []
        self.per_step: list[float] = []

    def add(self, m: Measurement, steps: int) -> None:
        self.fixed.append(m.fixed_cost_s)
        self.per_step.append(max(0.0, m.cost_s - m.fixed_cost_s) / max(steps, 1))

    def estimate(self, steps: int) -> float:
        if not self.fixed:
            return 0.0
        return (sum(self.fixed) / len(self.fixed)
                + sum(self.per_step) / len(self.per_step) * steps)

    def schedule(self, n0: int, steps: list[int], eta: int) -> float:
        """Predicted cost of the rungs after rung 0 for n0 candidates measured there."""
        total, n = 0.0, n0
        for s in steps[1:]:
            if n <= 2:
                break
            n = survivors(n, eta)
            total += n * self.estimate(s)
        return total


def successive_halving(candidates: Sequence[Candidate], evaluate: Evaluator, *, budget_s: float,
                       min_steps: int = 6, eta: int = 3, max_steps: int = 54,
                       higher_is_better: bool = True, baseline: Candidate | None = None,
                       on_trial: Callable[[Trial], Any] | None = None,
                       should_stop: Callable[[], bool] | None = None) -> dict:
    """Successive halving within `budget_s` (the evaluator's cost_s summed). Returns
    {"trials", "not_tried", "ranking", "failed", "spent_s", "stop_reason"}."""
    if min_steps < 1 or eta < 2 or max_steps < min_steps:
        raise ValueError("min_steps must be 1 or more, eta 2 or more and max_steps at least "
                         "min_steps")
    steps = rung_steps(min_steps, eta, max_steps)
    ordered = priority(candidates, baseline) if baseline is not None else list(candidates)
    trials: list[Trial] = []
    costs = _CostModel()
    spent = 0.0
    stop_reason = ""
    best_at: dict[Candidate, Trial] = {}

    def run(candidate: Candidate, rung: int) -> Trial:
        nonlocal spent
        try:
            m = evaluate(candidate, steps[rung])
        except Exception as exc:  # noqa: BLE001 - a failing trial never stops the search
            m = Measurement(error=f"{type(exc).__name__}: {exc}")
        trial = Trial(len(trials) + 1, candidate, rung, steps[rung], m)
        trials.append(trial)
        spent += m.cost_s
        if m.cost_s > 0:
            costs.add(m, steps[rung])
        if not trial.failed:
            best_at[candidate] = trial
        if on_trial is not None:
            on_trial(trial)
        return trial

    def sign(t: Trial) -> float:
        value = t.measurement.value
        return value if higher_is_better else -value

    # Rung 0: as many as the budget allows, with room for the rungs that follow them.
    measured: list[Candidate] = []
    not_tried: list[Candidate] = []
    for index, candidate in enumerate(ordered):
        if should_stop is not None and should_stop():
            not_tried = ordered[index:]
            stop_reason = "stopped on request"
            break
        if trials:
            ahead = costs.estimate(steps[0]) + costs.schedule(len(measured) + 1, steps, eta)
            if spent + ahead > budget_s:
                not_tried = ordered[index:]
                stop_reason = (f"the budget ({budget_s:.0f} s) left room for {index} of "
                               f"{len(ordered)} candidates at the first rung")
                break
        trial = run(candidate, 0)
        if not trial.failed:
            measured.append(candidate)
    alive = measured
    rung = 0
    while len(alive) > 2 and rung + 1 < len(steps) and not stop_reason.startswith("stopped"):
        ranked = sorted(alive, key=lambda c: sign(best_at[c]), reverse=True)
        alive = ranked[:survivors(len(ranked), eta)]
        rung += 1
        promoted = []
        for candidate in alive:
            if should_stop is not None and should_stop():
                stop_reason = "stopped on request"
                break
            if spent + costs.estimate(steps[rung]) > budget_s:
                stop_reason = f"the budget ran out at rung {rung + 1}"
                break
            if not run(candidate, rung).failed:
                promoted.append(candidate)
        if stop_reason:
            break
        if not promoted:
            stop_reason = f"every trial of rung {rung + 1} failed"
            break
        alive = promoted
    ranking = sorted(best_at.values(), key=lambda t: (t.rung, sign(t)), reverse=True)
    return {"trials": trials, "not_tried": not_tried, "failed": [t for t in trials if t.failed],
            "ranking": [{"candidate": t.candidate, "rung": t.rung, "steps": t.steps, "trial": t}
                        for t in ranking],
            "spent_s": spent, "stop_reason": stop_reason or "successive halving finished"}


def search(candidates: Sequence[Candidate], evaluate: Evaluator, *,
           predict: Callable[[Candidate], float | None], memory_limit: float | None,
           budget_s: float, baseline: Candidate | None = None, **halving: Any) -> SearchResult:
    """Prune by predicted memory, then successive halving over the rest (see the module doc)."""
    fit, pruned, predicted = prune(candidates, predict, memory_limit)
    out = successive_halving(fit, evaluate, budget_s=budget_s, baseline=baseline, **halving)
    return SearchResult(out["trials"], pruned, out["not_tried"], out["ranking"], out["failed"],
                        out["spent_s"], budget_s, predicted, out["stop_reason"])
