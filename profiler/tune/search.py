"""The search's parts: what a trial measures and records, memory pruning, the rung schedule and
the first rung's order. The halving itself (over jobs, on one device or several) is
profiler.tune.rounds.halving; `rounds.search` is pruning then halving, one candidate a job.

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
