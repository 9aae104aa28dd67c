"""The project's statistics against scipy.stats, an independent oracle, on seeded data:
Mann-Whitney U, the signed-rank interval and the bootstrap interval of a ratio of medians.
scipy is a test-only dependency (the `test` extra); the project itself never imports it."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from profiler.figures.significance import mann_whitney
from profiler.figures.stats import bootstrap_medians, ratio_interval, signed_rank_interval

scipy_stats = pytest.importorskip("scipy.stats")


def lognormal(rng: random.Random, n: int, centre: float, spread: float = 0.05) -> list[float]:
    return [centre * rng.lognormvariate(0, spread) for _ in range(n)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mann_whitney_equals_scipy_with_and_without_ties(seed):
    rng = random.Random(seed)
    cases = [
        (lognormal(rng, 40, 1.0), lognormal(rng, 55, 1.02)),             # continuous
        ([round(rng.gauss(0, 1), 1) for _ in range(30)],                  # many ties
         [round(rng.gauss(0.4, 1), 1) for _ in range(25)]),
        (lognormal(rng, 5, 1.0), lognormal(rng, 7, 1.1)),                 # small
    ]
    for a, b in cases:
        u, p = mann_whitney(a, b)
        oracle = scipy_stats.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic",
                                          use_continuity=True)
        assert u == pytest.approx(float(oracle.statistic), abs=1e-9)
        assert p == pytest.approx(float(oracle.pvalue), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("seed", "n"), [(4, 12), (5, 15), (6, 20)])
def test_signed_rank_interval_is_what_scipys_exact_test_does_not_reject(seed, n):
    """[low, high] is the set of centres d that the exact two-sided signed-rank test on x - d
    does not reject at 5 %: just outside each end it rejects, just inside it does not."""
    rng = random.Random(seed)
    x = np.array([rng.gauss(0.3, 1) for _ in range(n)])
    estimate, low, high = signed_rank_interval(list(x))
    walsh = np.sort([(x[i] + x[j]) / 2 for i in range(n) for j in range(i, n)])
    assert estimate == pytest.approx(float(np.median(walsh)))

    def p_value(centre: float) -> float:
        return float(scipy_stats.wilcoxon(x - centre, method="exact").pvalue)

    for end in (low, high):
        at = int(np.searchsorted(walsh, end))
        assert walsh[at] == end
        below, above = (walsh[at - 1] + end) / 2, (end + walsh[at + 1]) / 2
        outside, inside = (below, above) if end == low else (above, below)
        assert p_value(outside) <= 0.05 < p_value(inside)


def test_bootstrap_medians_have_the_exact_bootstrap_distribution():
    """Enumerating every one of the n**n resamples gives the bootstrap distribution of the median
    exactly; the order-statistic draw reproduces it (odd and even n)."""
    generator = np.random.default_rng(7)
    for n in (4, 5):
        data = np.sort(generator.random(n))
        exact: dict[float, float] = {}
        for picks in itertools.product(range(n), repeat=n):
            median = float(np.median(data[list(picks)]))
            exact[median] = exact.get(median, 0.0) + 1 / n**n
        drawn = bootstrap_medians(list(data), 200_000, np.random.default_rng(8))
        values, counts = np.unique(drawn, return_counts=True)
        seen = dict(zip(values.tolist(), (counts / len(drawn)).tolist(), strict=True))
        assert set(seen) <= set(exact)  # only medians some resample has
        for value, probability in exact.items():
            assert seen.get(value, 0.0) == pytest.approx(probability, abs=0.005), (n, value)


@pytest.mark.parametrize("seed", [9, 10])
def test_ratio_interval_agrees_with_scipys_bootstrap(seed):
    rng = random.Random(seed)
    a, b = lognormal(rng, 200, 1000.0), lognormal(rng, 150, 1030.0)
    mine = ratio_interval(a, b, resamples=20_000, seed=seed)

    def ratio(x, y, axis):
        return np.median(x, axis=axis) / np.median(y, axis=axis)

    oracle = scipy_stats.bootstrap((np.array(a), np.array(b)), ratio, method="percentile",
                                   n_resamples=20_000, random_state=seed + 100,
                                   vectorized=True, batch=2_000).confidence_interval
    assert mine["ratio"] == pytest.approx(float(np.median(a) / np.median(b)))
    # Two independent Monte-Carlo draws of the same bootstrap: ends within 0.2 % of each other.
    assert mine["ci_low"] == pytest.approx(float(oracle.low), rel=2e-3)
    assert mine["ci_high"] == pytest.approx(float(oracle.high), rel=2e-3)
