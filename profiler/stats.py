"""Small statistics on plain lists (no numpy, no torch): percentiles and summary figures."""

from __future__ import annotations

import math


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
