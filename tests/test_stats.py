"""profiler.figures.stats on seeded synthetic timings: the median's interval covers the true median at
about its nominal rate, and a ratio is called significant exactly when it should be."""

from __future__ import annotations

import math
import random

import pytest

from profiler.figures.stats import (
    describe,
    distribution,
    median_interval,
    ratio_interval,
    significant_digits,
)


def timings(rng: random.Random, n: int, median: float = 0.05, spread: float = 0.03) -> list[float]:
    """Step times around `median` (log-normal: a true median of exactly `median`), with a slow
    tail as a loaded machine gives."""
    return [median * rng.lognormvariate(0, spread) * (1.5 if rng.random() < 0.05 else 1.0)
            for _ in range(n)]


def exact_coverage(n: int, k: int) -> float:
    return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n


def test_distribution_of_known_values():
    d = distribution(list(range(1, 11)))
    assert d["n"] == 10 and d["median"] == 5.5
    assert d["p10"] == pytest.approx(1.9) and d["p90"] == pytest.approx(9.1)
    assert (d["ci_low"], d["ci_high"]) == (2, 9)  # x_(2), x_(9): 97.9 % for n = 10
    assert distribution([None, float("nan"), 3.0])["n"] == 1


def test_too_few_values_have_no_interval():
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) == (None, None)  # [min, max] is 93.75 %
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) == (1.0, 6.0)
    empty = distribution([])
    assert empty["n"] == 0 and empty["median"] is None and empty["ci_low"] is None


def test_interval_covers_the_true_median_at_its_nominal_rate():
    n, trials = 15, 600
    rng = random.Random(20261201)
    covered = 0
    for _ in range(trials):
        # No slow tail here: with it the true median would not be exactly 0.05.
        low, high = median_interval([0.05 * rng.lognormvariate(0, 0.05) for _ in range(n)])
        covered += low <= 0.05 <= high
    nominal = exact_coverage(n, 4)  # the interval [x_(4), x_(12)] that n = 15 gives
    assert nominal >= 0.95
    assert abs(covered / trials - nominal) < 0.03, (covered / trials, nominal)


def test_a_planted_ten_percent_slowdown_is_significant():
    rng = random.Random(7)
    calls = [ratio_interval(timings(rng, 20, 0.055), timings(rng, 20, 0.050), resamples=500,
                            seed=trial) for trial in range(40)]
    assert sum(c["significant"] for c in calls) >= 38
    for c in calls:
        assert c["ci_low"] <= c["ratio"] <= c["ci_high"]
        if c["significant"]:
            assert c["verdict"] == "significantly higher"
    assert sum(c["ratio"] for c in calls) / len(calls) == pytest.approx(1.1, abs=0.01)


def test_no_difference_is_mostly_called_no_significant_difference():
    rng = random.Random(8)
    calls = [ratio_interval(timings(rng, 20), timings(rng, 20), resamples=500, seed=trial)
             for trial in range(80)]
    false_alarms = sum(c["significant"] for c in calls)
    assert false_alarms <= 8  # nominal 5 % of 80 is 4
    assert all(c["verdict"] == "no significant difference" for c in calls if not c["significant"])


def test_ratio_needs_enough_measurements_and_is_seeded():
    few = ratio_interval([1.0, 1.1, 1.2], [2.0, 2.1, 2.2])
    assert few["ratio"] == pytest.approx(1.1 / 2.1) and few["ci_low"] is None
    assert not few["significant"] and few["verdict"].startswith("n/a")
    rng = random.Random(3)
    a, b = timings(rng, 10), timings(rng, 10)
    assert ratio_interval(a, b, seed=5) == ratio_interval(a, b, seed=5)
    assert ratio_interval([], b)["ratio"] is None


def test_figures_print_with_three_significant_digits():
    assert significant_digits(15_634.2) == "15,600"
    assert significant_digits(1.8123) == "1.81"
    assert significant_digits(0.004123) == "0.00412"  # never rounded to zero
    assert significant_digits(None) == "n/a"
    text = describe(distribution([100.0 + i for i in range(20)]), "tokens/s")
    assert text.startswith("110 tokens/s (±") and text.endswith("n=20)")


# --- significance: the one verdict the app, the CLI and reports share ------------------------
from profiler.figures.significance import compare_figures, compare_samples, mann_whitney  # noqa: E402


def test_mann_whitney_matches_known_values():
    u, p = mann_whitney([1, 2, 3, 4, 5], [6, 7, 8, 9, 10])
    assert u == 0 and p == pytest.approx(0.0122, abs=0.001)  # scipy, normal approx + continuity
    assert mann_whitney([1, 1, 1], [1, 1, 1]) is None  # all tied: no test
    assert mann_whitney([1, 2, 3], [1, 2, 3])[1] == pytest.approx(1.0, abs=0.01)


def test_a_planted_ten_percent_slowdown_is_called_worse():
    rng = random.Random(11)
    worse = sum(compare_samples(timings(rng, 60), timings(rng, 60, median=0.055), "lower")
                ["verdict"] == "worse" for _ in range(20))
    assert worse >= 19


def test_no_planted_difference_is_mostly_within_noise():
    rng = random.Random(12)
    verdicts = [compare_samples(timings(rng, 60), timings(rng, 60), "lower")["verdict"]
                for _ in range(40)]
    assert verdicts.count("within noise") >= 37  # both tests must agree: false alarms < 5 %


def test_too_few_samples_is_not_comparable_and_direction_follows_better():
    few = compare_samples([1.0, 2.0], [3.0, 4.0], "lower")
    assert few["verdict"] == "not comparable" and "too few measured steps" in few["reason"]
    rng = random.Random(13)
    faster = compare_samples([1000 * rng.gauss(1, 0.01) for _ in range(40)],
                             [1100 * rng.gauss(1, 0.01) for _ in range(40)], "higher")
    assert faster["verdict"] == "better" and faster["delta_pct"] == pytest.approx(10, abs=1)


def test_figures_without_samples_use_their_intervals():
    def fig(value, low=None, high=None):
        return {"value": value, "distribution": {"ci_low": low, "ci_high": high}}
    bare = compare_figures(fig(100), fig(95), "lower")
    assert bare["verdict"] == "not comparable" and bare["reason"].startswith("no spread")
    assert compare_figures(fig(100, 98, 102), fig(101, 99, 103), "lower")["verdict"] == \
        "within noise"
    assert compare_figures(fig(100, 98, 102), fig(120, 118, 122), "lower")["verdict"] == "worse"


def test_signed_rank_null_distribution_matches_every_sign_pattern():
    """The exact null distribution of the signed-rank statistic: each of the 2^n sign patterns
    of ranks 1..n equally likely, T the sum of the positive ranks."""
    from itertools import product

    from profiler.figures.stats import _signed_rank_tail

    n = 8
    sums = [sum(rank for rank, sign in zip(range(1, n + 1), signs, strict=True) if sign)
            for signs in product((0, 1), repeat=n)]
    tails = _signed_rank_tail(n)
    assert len(tails) == n * (n + 1) // 2 + 1 and tails[-1] == pytest.approx(1.0)
    for t in range(len(tails)):
        assert tails[t] == pytest.approx(sum(s <= t for s in sums) / 2**n)


def test_signed_rank_interval_covers_the_centre_at_its_nominal_rate_and_is_narrower():
    """Symmetric noise (the log of a ratio of like measurements): the Hodges-Lehmann interval
    covers the true centre at its exact nominal rate, and is narrower than the median's."""
    from profiler.figures.stats import _signed_rank_tail, signed_rank_interval

    n, trials = 20, 500
    tails = _signed_rank_tail(n)
    k = max(k for k in range(1, 106) if 1 - 2 * tails[k - 1] >= 0.95)
    nominal = 1 - 2 * tails[k - 1]
    rng = random.Random(20261205)
    covered, ratio_of_widths = 0, []
    for _ in range(trials):
        values = [0.01 + rng.gauss(0, 0.01) for _ in range(n)]
        estimate, low, high = signed_rank_interval(values)
        covered += low <= 0.01 <= high
        m_low, m_high = median_interval(values)
        ratio_of_widths.append((m_high - m_low) / (high - low))
    assert 0.95 <= nominal < 0.96
    assert abs(covered / trials - nominal) < 0.03, covered / trials
    assert sorted(ratio_of_widths)[trials // 2] > 1.1  # the median's interval is wider
    assert signed_rank_interval([1.0, 2.0, 3.0, 4.0, 5.0])[1:] == (None, None)  # n < 6 at 95 %
    assert signed_rank_interval([])[0] is None
    assert signed_rank_interval([3.0, 1.0, 2.0, 10.0])[0] == 2.75  # the Walsh averages' median


def test_signed_rank_interval_calls_a_planted_shift_and_not_none():
    """A planted 1 % shift in 30 rounds of 1 % noise lies outside zero; no shift mostly not."""
    from profiler.figures.stats import signed_rank_interval

    rng = random.Random(3)
    shifted = excluded_null = 0
    for _ in range(100):
        _, low, _ = signed_rank_interval([0.01 + rng.gauss(0, 0.01) for _ in range(30)])
        shifted += low > 0
        _, low, high = signed_rank_interval([rng.gauss(0, 0.01) for _ in range(30)])
        excluded_null += not low <= 0 <= high
    assert shifted >= 95 and excluded_null <= 10


def test_lag1_autocorrelation_flags_a_drift_that_carries_and_not_independent_rounds():
    """Rounds where each carries part of the last one's deviation (an AR(1) drift) are flagged
    as not independent nearly always; independent rounds about 5 % of the time."""
    from profiler.figures.stats import independent_enough, lag1_autocorrelation

    rng = random.Random(11)
    flagged_iid = flagged_drift = 0
    for _ in range(200):
        iid = [rng.gauss(0, 1) for _ in range(60)]
        drift, last = [], 0.0
        for noise in iid:
            last = 0.6 * last + noise
            drift.append(last)
        flagged_iid += independent_enough(lag1_autocorrelation(iid), 60) is False
        flagged_drift += independent_enough(lag1_autocorrelation(drift), 60) is False
    assert flagged_drift >= 190 and flagged_iid <= 20
    assert lag1_autocorrelation([1.0, 1.0, 1.0]) is None and lag1_autocorrelation([1.0, 2.0]) is None
    assert lag1_autocorrelation([1.0, 1.0 + 2.3e-16, 1.0, 1.0 + 4.5e-16]) is None  # rounding
    assert independent_enough(None, 60) is None


def test_a_difference_under_the_noise_floor_is_within_noise_whatever_its_p():
    """Thousands of steps make a 0.5 % shift statistically clear; it is still no verdict."""
    from profiler.figures.significance import NOISE_FLOOR_PCT, verdict_text

    rng = random.Random(14)
    base = [1000 * rng.lognormvariate(0, 0.01) for _ in range(4000)]
    other = [1005 * rng.lognormvariate(0, 0.01) for _ in range(4000)]
    found = compare_samples(base, other, "higher")
    assert found["p_value"] < 0.001 and found["ci_low"] > 1  # statistically apart ...
    assert 0 < found["delta_pct"] < NOISE_FLOOR_PCT            # ... but under the floor
    assert found["verdict"] == "within noise" and "noise floor" in found["reason"]
    assert verdict_text(found).startswith("within noise: +0.") and "% is under the 1 % noise " \
        "floor (p<0.001)" in verdict_text(found)
    clear = compare_samples(base, [1030 * rng.lognormvariate(0, 0.01) for _ in range(400)],
                            "higher")
    assert clear["verdict"] == "better" and verdict_text(clear) == "significant: better (p<0.001)"


def test_every_verdict_says_its_reason():
    from profiler.figures.significance import verdict, verdict_text

    apart = {"delta_pct": -20.0, "apart": True, "p_value": 1e-6}
    assert verdict(apart, "higher")["verdict"] == "worse"
    busy = verdict(apart, "higher", busy="'b': other processes used 1.7 of 2 cores")
    assert busy["verdict"] == "machine busy"
    assert verdict_text(busy) == ("machine busy: no verdict ('b': other processes used 1.7 of 2 "
                                  "cores)")
    odd = verdict(apart, "higher", not_comparable="no matching segment", busy="x")
    assert verdict_text(odd) == "not comparable: no matching segment"  # the first reason wins
    overlap = verdict({"delta_pct": 3.0, "apart": False, "p_value": None}, "higher")
    assert verdict_text(overlap) == "within noise (the 95 % intervals overlap)"
    counted = verdict({"delta_pct": -50.0, "apart": True, "counted": True}, "lower",
                      busy="x")  # counted bytes: other processes change nothing
    assert counted["verdict"] == "better" and "counted" in counted["reason"]
