"""The metric catalogue (catalogue.py, plain data), how a key finds its entry (keys.py) and how
a figure becomes text (format.py). The app, the CLI and the reports read figures through here."""

from __future__ import annotations

from profiler.figures.metrics.catalogue import (
    BATCH_DEPENDENT,
    CATALOGUE,
    CHARTS,
    CHARTS_BY_NAME,
    COUNT_UNITS,
    DIMENSIONLESS,
    HIGHER,
    LOWER,
    ORDER,
    TIMED_GROUPS,
    Chart,
    Metric,
)
from profiler.figures.metrics.format import (
    SIGNIFICANT,
    format_change,
    format_delta,
    format_figure,
    format_summary_figure,
    format_value,
    is_missing,
    json_safe,
    scoring_note,
    significant,
    spread_text,
)
from profiler.figures.metrics.keys import PATTERNS, VARIANT_PREFIXES, known, metric

__all__ = [
    "BATCH_DEPENDENT", "CATALOGUE", "CHARTS", "CHARTS_BY_NAME", "COUNT_UNITS", "DIMENSIONLESS",
    "HIGHER", "LOWER", "ORDER", "PATTERNS", "SIGNIFICANT", "TIMED_GROUPS", "VARIANT_PREFIXES",
    "Chart", "Metric", "format_change", "format_delta", "format_figure", "format_summary_figure",
    "format_value", "is_missing", "json_safe", "known", "metric", "scoring_note", "significant",
    "spread_text",
]
