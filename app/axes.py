"""The y axis of a chart: in log scale it labels enough ticks to read a value off, also when the
curve spans less than a decade (a loss from 2.1 to 3.0 used to get one tick, or none)."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg

from profiler.figures.metrics import significant

TICK_SPACING_PX = 45
"""About one labelled tick per this many pixels of axis."""


def nice_step(raw: float) -> float:
    """1, 2 or 5 times a power of ten, at least `raw`."""
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


class ChartAxis(pg.AxisItem):
    """pyqtgraph's axis, with readable ticks inside a decade on a log scale."""

    def logTickValues(self, minVal, maxVal, size, stdTicks):  # noqa: N802, N803 - pyqtgraph's
        if maxVal - minVal >= 1.0 or not (math.isfinite(minVal) and math.isfinite(maxVal)):
            return super().logTickValues(minVal, maxVal, size, stdTicks)
        low, high = 10.0 ** minVal, 10.0 ** maxVal
        count = max(2, int(size / TICK_SPACING_PX))
        step = nice_step((high - low) / count)
        values = np.arange(math.ceil(low / step) * step, high + step * 1e-9, step)
        values = values[values > 0]
        return [(None, np.log10(values).tolist())]

    def logTickStrings(self, values, scale, spacing):  # noqa: N802 - pyqtgraph's name
        return [significant(10.0 ** v) for v in values]
