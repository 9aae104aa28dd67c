"""The benches' one measuring loop: interleaved rounds, warmup rounds dropped, failures kept
apart, every metric a distribution and a ratio against the baseline."""

from __future__ import annotations

import random

import pytest

from profiler.bench.loop import Candidate, compare
from profiler.figures.stats import round_order


def recorder(name: str, calls: list[str], values: list[float]):
    def measure() -> dict:
        calls.append(name)
        return {"seconds": values.pop(0)}
    return measure


def test_rounds_rotate_and_warmup_rounds_are_dropped():
    calls: list[str] = []
    a = [100.0] + [1.0] * 6  # the first (warmup) round is far off: it must not count
    b = [100.0] + [2.0] * 6
    result = compare([Candidate("A", recorder("A", calls, a)), Candidate("B", recorder("B", calls, b))],
                     ["seconds"], repeats=6, warmup=1, log=lambda text: None)
    assert calls[:4] == ["A", "B", "B", "A"]  # each leads in turn
    assert result["rounds"][:3] == [["A", "B"], ["B", "A"], ["A", "B"]]
    a_figures = result["candidates"]["A"]["metrics"]["seconds"]
    b_figures = result["candidates"]["B"]["metrics"]["seconds"]
    assert a_figures["samples"] == [1.0] * 6 and a_figures["distribution"]["median"] == 1.0
    assert b_figures["vs_baseline"]["ratio"] == 2.0 and b_figures["vs_baseline"]["significant"]
    assert result["baseline"] == "A"


def test_random_order_is_seeded_and_a_permutation():
    names = ["A", "B", "C", "D"]
    orders = [round_order(names, i, "random", seed=3) for i in range(6)]
    assert orders == [round_order(names, i, "random", seed=3) for i in range(6)]
    assert all(sorted(o) == names for o in orders) and len({tuple(o) for o in orders}) > 1
    with pytest.raises(ValueError, match="rotate"):
        round_order(names, 0, "abab", 0)


def test_failed_measurements_are_reported_not_counted():
    rng = random.Random(1)
    flaky = iter([{"error": "out of memory"}] + [{"seconds": 1 + rng.random() / 100} for _ in range(6)])
    steady = [Candidate("steady", lambda: {"seconds": 1 + rng.random() / 100}),
              Candidate("flaky", lambda: next(flaky))]
    result = compare(steady, ["seconds"], repeats=7, log=lambda text: None)
    flaky_result = result["candidates"]["flaky"]
    assert flaky_result["errors"] == ["out of memory"]
    assert flaky_result["metrics"]["seconds"]["distribution"]["n"] == 6
    assert flaky_result["metrics"]["seconds"]["vs_baseline"]["verdict"] == "no significant difference"
