"""Small statistics on plain lists: percentiles, summary figures, intervals and the bootstrap.

No torch. numpy (a dependency through pyqtgraph and torch) is imported only inside the functions
that resample or rank, so that importing this module stays cheap for the CLI."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100), as numpy's default; None for no values."""
    data = sorted(v for v in values if v is not None and not math.isnan(v))
    if not data:
        return None
    if len(data) == 1:
        return data[0]
    rank = (len(data) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (rank - low)


def figure(value: float | int | None, unit: str, how: str) -> dict:
    """A summary figure travels with its unit and how it was measured."""
    if isinstance(value, float) and not math.isfinite(value):
        value = None
    return {"value": value, "unit": unit, "how": how}


# --- distributions and comparisons ---------------------------------------------------------
CI_LEVEL = 0.95
MIN_BOOTSTRAP_N = 5
"""Below this many measurements a side, a bootstrap sees too few values to stand for the noise."""


def _clean(values: list[float]) -> list[float]:
    return sorted(v for v in values if v is not None and not math.isnan(v))


def median_interval(values: list[float],
                    level: float = CI_LEVEL) -> tuple[float | None, float | None]:
    """Distribution-free interval of the median from order statistics.

    [x_(k), x_(n+1-k)] covers the true median with probability 1 - 2 P(B <= k - 1) for
    B ~ Bin(n, 1/2);
    the narrowest such interval of at least `level` is returned, (None, None) when even
    [min, max] falls short (n < 6 at 95 %): too few measurements for an honest interval.
    """
    data = _clean(values)
    n = len(data)
    if n == 0:
        return None, None
    tail = 1 / 2**n  # P(B <= k - 1) for k = 1
    best = None
    for k in range(1, n // 2 + 1):
        coverage = 1 - 2 * tail
        if coverage < level:
            break
        best = k
        tail += math.comb(n, k) / 2**n
    if best is None:
        return None, None
    return data[best - 1], data[n - best]


def _signed_rank_tail(n: int) -> list[float]:
    """P(T <= t) for t = 0..n(n+1)/2, T the Wilcoxon signed-rank statistic of n values under
    symmetry about the true centre (exact: the count of subsets of ranks 1..n with each sum)."""
    import numpy as np

    dist = np.ones(1)
    for rank in range(1, n + 1):  # each rank is in the positive set or not, with chance 1/2
        grown = np.zeros(len(dist) + rank)
        grown[:len(dist)] += dist
        grown[rank:] += dist
        dist = grown / 2
    return np.cumsum(dist).tolist()


def signed_rank_interval(values: list[float], level: float = CI_LEVEL
                         ) -> tuple[float | None, float | None, float | None]:
    """(estimate, low, high): the Hodges-Lehmann estimate of the centre of `values` (the median
    of the Walsh averages (x_i + x_j) / 2, i <= j) and its distribution-free interval from the
    signed-rank test, exact for every n: [W_(k), W_(M+1-k)] of the M sorted Walsh averages
    covers the centre with probability 1 - 2 P(T <= k - 1). It assumes the values are spread
    symmetrically about their centre (as the log of a ratio of two like measurements is), not
    that they are normal, and is nearly as narrow as a mean's t interval on normal data (the
    order statistics' interval of the median is about 1.25 times as wide). (None, None, None)
    without values; an estimate and (None, None) when n is too small for `level` (n < 6 at
    95 %)."""
    import numpy as np

    data = np.asarray(_clean(values), dtype=float)
    n = len(data)
    if n == 0:
        return None, None, None
    upper = np.triu_indices(n)
    walsh = np.sort((data[upper[0]] + data[upper[1]]) / 2)
    estimate = float(np.median(walsh))
    tails = np.asarray(_signed_rank_tail(n))
    # The largest k whose interval still covers at least `level`: 1 - 2 P(T <= k - 1) >= level.
    covering = np.nonzero(1 - 2 * tails[:len(walsh) // 2] >= level)[0]
    if not len(covering):
        return estimate, None, None
    best = int(covering[-1]) + 1
    return estimate, float(walsh[best - 1]), float(walsh[len(walsh) - best])


def lag1_autocorrelation(values: list[float]) -> float | None:
    """The correlation of each value with the next, in the order given (in time): near 0 for
    independent measurements, clearly positive when a slow drift carries from one to the next;
    None for fewer than 3 values or values that never vary (beyond floating-point rounding,
    whose correlation means nothing)."""
    data = [v for v in values if v is not None and not math.isnan(v)]
    if len(data) < 3:
        return None
    mean = sum(data) / len(data)
    spread = sum((v - mean) ** 2 for v in data)
    if max(data) - min(data) <= 1e-9 * max(abs(mean), 1e-300):
        return None
    return sum((a - mean) * (b - mean) for a, b in zip(data, data[1:], strict=False)) / spread


def independent_enough(r1: float | None, n: int) -> bool | None:
    """Whether a lag-1 autocorrelation is within what independent measurements show 95 % of the
    time (|r1| < 1.96 / sqrt(n)); None when there is no autocorrelation to judge."""
    if r1 is None or n < 3:
        return None
    return abs(r1) < 1.96 / math.sqrt(n)


def distribution(values: list[float]) -> dict:
    """What a timed figure carries: n, median, p10 / p90 and a 95 % interval of the median."""
    data = _clean(values)
    low, high = median_interval(data)
    return {"n": len(data), "median": percentile(data, 50), "p10": percentile(data, 10),
            "p90": percentile(data, 90), "ci_low": low, "ci_high": high}


def timed_figure(values: list[float], unit: str, how: str) -> dict:
    """A timed summary figure: the median of `values` (one per measurement, in `unit`) as its
    value, and the whole distribution beside it. Every speed figure of a summary is one of these:
    {"value", "unit", "how", "distribution": {"n", "median", "p10", "p90", "ci_low", "ci_high"}}.
    """
    dist = distribution(values)
    return {**figure(dist["median"], unit, how), "distribution": dist}


def figure_interval(fig: dict | None) -> tuple[float, float] | None:
    """The 95 % interval of a timed figure's median, (low, high); None for a bare number."""
    dist = (fig or {}).get("distribution") or {}
    low, high = dist.get("ci_low"), dist.get("ci_high")
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        return float(low), float(high)
    return None


def _median(data: list[float]) -> float:
    data = sorted(data)
    mid = len(data) // 2
    return data[mid] if len(data) % 2 else (data[mid - 1] + data[mid]) / 2


def bootstrap_medians(values: list[float], resamples: int, rng) -> np.ndarray:
    """The medians of `resamples` bootstrap resamples (n values drawn with replacement from the n
    `values`), drawn without building a resample: a resample's k-th smallest value is
    x_(ceil(n·U)) of the sorted values, U the k-th smallest of n uniforms, which is Beta(k, n + 1
    - k) distributed; the (k+1)-th is U + (1 - U)·Beta(1, n - k). The same distribution as
    resampling (tests/test_stats.py checks it against resampling and scipy.stats.bootstrap), at a
    cost that does not grow with n. rng: a numpy Generator."""
    import numpy as np

    data = np.sort(np.asarray(values, dtype=float))
    n = len(data)

    def order_statistic(u):
        return data[np.clip(np.ceil(u * n).astype(np.int64), 1, n) - 1]

    k = (n + 1) // 2 if n % 2 else n // 2
    low = rng.beta(k, n + 1 - k, resamples)
    if n % 2:
        return order_statistic(low)
    high = low + (1 - low) * rng.beta(1, n - k, resamples)
    return (order_statistic(low) + order_statistic(high)) / 2


def ratio_interval(a: list[float], b: list[float], level: float = CI_LEVEL,
                   resamples: int = 2000, seed: int = 0) -> dict:
    """median(a) / median(b) with a seeded percentile-bootstrap interval (a and b resampled
    independently, bootstrap_medians); `significant` only when the interval excludes 1."""
    import numpy as np

    a, b = _clean(a), _clean(b)
    if not a or not b or _median(b) == 0:
        return {"ratio": None, "ci_low": None, "ci_high": None, "significant": False,
                "verdict": "n/a: no measurements to compare"}
    ratio = _median(a) / _median(b)
    if min(len(a), len(b)) < MIN_BOOTSTRAP_N:
        return {"ratio": ratio, "ci_low": None, "ci_high": None, "significant": False,
                "verdict": f"n/a: an interval needs {MIN_BOOTSTRAP_N} or more measurements of each"}
    rng = np.random.default_rng(seed)
    numerators = bootstrap_medians(a, resamples, rng)
    denominators = bootstrap_medians(b, resamples, rng)
    keep = denominators != 0
    ratios = numerators[keep] / denominators[keep]
    tail = (1 - level) / 2 * 100
    low, high = (float(v) for v in np.percentile(ratios, [tail, 100 - tail])) if len(ratios) \
        else (None, None)
    significant = low is not None and high is not None and not low <= 1.0 <= high
    if not significant:
        verdict = "no significant difference"
    else:
        verdict = "significantly higher" if ratio > 1 else "significantly lower"
    return {"ratio": ratio, "ci_low": low, "ci_high": high, "significant": significant,
            "verdict": verdict}


def significant_digits(value: float | None, digits: int = 3) -> str:
    """A number with `digits` significant digits and thousands separators ("15,600", "1.81",
    "0.00412"), never rounded to zero; "n/a" for a missing value (profiler.figures.metrics.significant,
    the project's one rounding rule)."""
    from profiler.figures.metrics import significant

    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return significant(value, digits)


def describe(dist: dict, unit: str = "", scale: float = 1.0) -> str:
    """A distribution as people read it: "15,600 tokens/s (±2.1 %, n=195)"; the ± is the larger
    half of the median's 95 % interval, relative to the median."""
    median = dist.get("median")
    if median is None:
        return "n/a"
    text = significant_digits(median * scale) + (f" {unit}" if unit else "")
    low, high = dist.get("ci_low"), dist.get("ci_high")
    if low is None or high is None or not median:
        return f"{text} (interval n/a, n={dist['n']})"
    spread = max(median - low, high - median) / abs(median) * 100
    return f"{text} (±{significant_digits(spread, 2)} %, n={dist['n']})"


def describe_ratio(result: dict) -> str:
    """"1.02x (0.99-1.05): no significant difference"."""
    if result.get("ratio") is None:
        return result.get("verdict", "n/a")
    text = f"{significant_digits(result['ratio'])}x"
    if result.get("ci_low") is None:
        return f"{text} ({result['verdict']})"
    return (f"{text} ({significant_digits(result['ci_low'])}-"
            f"{significant_digits(result['ci_high'])}): {result['verdict']}")


def ratio_text(row: dict | None) -> str | None:
    """"1.53x (1.41-1.66)" or "within noise (1.02x, 0.97-1.06)" ("machine busy (...)" on a
    shared machine); None without a ratio."""
    if not row or row.get("ratio") is None:
        return None
    interval = row.get("vs_baseline") or {}
    low, high = interval.get("ci_low"), interval.get("ci_high")
    value = f"{significant_digits(row['ratio'])}x"
    if low is None or high is None:
        return f"{value} (no interval: too few timed runs)"
    span = f"{significant_digits(low)}-{significant_digits(high)}"
    if not interval.get("significant"):  # the one rule's verdict (significance.paired_verdict)
        return f"{interval.get('verdict') or 'within noise'} ({value}, 95 % interval {span})"
    return f"{value} (95 % interval {span})"


def ratio_cell(row: dict | None) -> str:
    """A ratio for a table cell: "1.53x (1.41-1.66)" with its 95 % interval where the row was
    timed often enough for one, "1.02x (0.97-1.06), within noise" when the interval contains 1,
    the bare ratio for a row that is not a timing (bytes), "n/a" without one."""
    if not row or row.get("ratio") is None:
        return "n/a"
    value = f"{significant_digits(row['ratio'])}x"
    interval = row.get("vs_baseline")
    if not isinstance(interval, dict):
        return value
    low, high = interval.get("ci_low"), interval.get("ci_high")
    if low is None or high is None:
        return f"{value} (no interval: too few timed runs)"
    span = f"({significant_digits(low)}-{significant_digits(high)})"
    if interval.get("significant"):
        return f"{value} {span}"
    if interval.get("verdict") in ("machine busy", "not comparable"):
        return f"{value} {span}, {interval['verdict']}"
    return f"{value} {span}, within noise"


def round_order(names: Sequence[str], index: int, order: str, seed: int) -> list[str]:
    """Who goes when in round `index` of interleaved measurements (the benches, the tuner's final
    re-measure): "rotate" shifts the list by one per round (each candidate
    leads equally often), "random" shuffles it with a seed of its own per round."""
    names = list(names)
    if order == "random":
        random.Random(seed * 1_000_003 + index).shuffle(names)
        return names
    if order != "rotate":
        raise ValueError(f"order = {order!r}: use 'rotate' or 'random'")
    shift = index % len(names) if names else 0
    return names[shift:] + names[:shift]
