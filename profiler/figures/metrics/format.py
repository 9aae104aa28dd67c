"""Figures as text: `format_value` is the one way a reading becomes text ("n/a" when missing,
three significant digits, binary bytes, SI FLOPs), with the spread of a timed figure, signed
deltas and changes, JSON without NaN, and the note on batch-dependent quality figures.
"""

from __future__ import annotations

import math
from typing import Any

from profiler.figures.metrics.catalogue import BATCH_DEPENDENT, COUNT_UNITS, DIMENSIONLESS
from profiler.figures.metrics.keys import known, metric

SIGNIFICANT = 3
_SI = (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3))
_BINARY = (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


def is_missing(value: object) -> bool:
    """No reading: None, NaN, or a value that is not finite (an infinite time, rate or change
    is not a figure anyone can read; it is shown "n/a" and its reason is said beside it)."""
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def json_safe(value: Any) -> Any:
    """value with every non-finite float replaced by None, so that JSON written from it is
    valid (strict JSON has no NaN or Infinity) and says n/a where the figure has none."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def significant(x: float, digits: int = SIGNIFICANT) -> str:
    """x to `digits` significant digits in plain notation with thousands separators; a value
    that is not zero never prints as zero ("0.00123", "1.81", "12,300"); "n/a" for one that
    is not finite."""
    if x == 0:
        return "0"
    if not math.isfinite(x):
        return "n/a"
    exponent = math.floor(math.log10(abs(x)))
    if abs(round(x, digits - 1 - exponent)) >= 10 ** (exponent + 1):
        exponent += 1  # 0.9996 rounds up to 1.00, not 1.000
    if exponent < -6 or exponent >= 18:
        return f"{x:.{digits - 1}e}"
    decimals = digits - 1 - exponent
    return f"{round(x, decimals):,.{max(decimals, 0)}f}"


def format_value(value: object, unit: str, with_unit: bool = True) -> str:
    """A reading as people read it: "n/a" when missing, three significant digits, bytes in
    KiB / MiB / GiB, seconds in µs / ms / s, fractions and MFU as %, FLOPs and B/s with SI prefixes,
    whole counts exact. with_unit=False leaves the unit out (a column header says it)."""
    if is_missing(value) or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "n/a"
    number, shown = value, unit
    if unit == "bytes":
        number, shown = value, "B"
        for name, scale in _BINARY:
            if abs(value) >= scale:
                number, shown = value / scale, name
                break
    elif unit == "s" and value != 0 and abs(value) < 1:
        number, shown = (value * 1e3, "ms") if abs(value) >= 1e-3 else (value * 1e6, "µs")
    elif unit == "fraction":
        number, shown = value * 100, "%"
    elif unit in ("FLOP", "FLOP/s", "B/s"):
        for prefix, scale in _SI:
            if abs(value) >= scale:
                number, shown = value / scale, prefix + unit
                break
    elif unit == DIMENSIONLESS:
        shown = ""
    if isinstance(number, int) and (unit in COUNT_UNITS or unit in ("", DIMENSIONLESS, "bytes")):
        text = f"{number:,}"
    else:
        text = significant(float(number))
    if not with_unit or not shown:
        return text
    return f"{text}×" if shown == "x" else f"{text} {shown}"


def format_figure(key: str, value: object, unit: str = "") -> str:
    """A figure of `key`: in the catalogue's unit, or for a key the catalogue lacks in the unit
    it came with."""
    return format_value(value, metric(key).unit if known(key) else unit or metric(key).unit)


def spread_text(fig: object) -> str:
    """The spread of a timed summary figure (one with a "distribution", see
    stats.timed_figure) as people read it: "±2.1 %, n=195"; "interval n/a, n=3" with too few
    measurements for an honest interval; "" for a bare number."""
    dist = fig.get("distribution") if isinstance(fig, dict) else None
    if not isinstance(dist, dict):
        return ""
    n, median = dist.get("n"), dist.get("median")
    low, high = dist.get("ci_low"), dist.get("ci_high")
    numbers = (median, low, high)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers) \
            or not median:
        return f"interval n/a, n={n}" if isinstance(n, int) else ""
    half = max(median - low, high - median) / abs(median) * 100
    return f"±{significant(half, 2)} %, n={n}"


def format_summary_figure(key: str, fig: object) -> str:
    """A summary figure dict as text: its value in the catalogue's unit, and for a timed figure
    its spread: "15,600 tokens/s (±2.1 %, n=195)"."""
    if not isinstance(fig, dict):
        return "n/a"
    value = fig.get("value")
    text = format_figure(key, value if isinstance(value, (int, float)) and not
                         isinstance(value, bool) else None, str(fig.get("unit", "")))
    spread = spread_text(fig)
    return f"{text} ({spread})" if spread and text != "n/a" else text


def format_delta(delta: float | None, unit: str) -> str:
    """A signed difference in the figure's own unit: "+1.20 MiB", "−3.40 ms"."""
    if is_missing(delta):
        return "n/a"
    sign = "+" if delta > 0 else "−" if delta < 0 else "±"
    return sign + format_value(abs(delta), unit)


def format_change(pct: float | None) -> str:
    """A percentage change: "+12.3 %", "−0.0456 %", "0 %"."""
    if is_missing(pct):
        return "n/a"
    sign = "+" if pct > 0 else "−" if pct < 0 else ""
    return f"{sign}{significant(abs(pct))} %"


def scoring_note(windows_per_pass: int, techniques: list[str] | tuple[str, ...]) -> str:
    """"dynamic int8 quantizes each forward input's activations with one scale taken over the
    whole input (here 8 windows): this figure holds for 8 windows per forward pass, another
    number gives another figure" for a batch-dependent technique; "" otherwise."""
    named = [BATCH_DEPENDENT[t] for t in techniques if t in BATCH_DEPENDENT]
    if not named:
        return ""
    plural = "s" if windows_per_pass != 1 else ""
    return (f"{'; '.join(named)} (here {windows_per_pass} window{plural}): this figure holds for "
            f"{windows_per_pass} window{plural} per forward pass, another number gives another "
            "figure")
