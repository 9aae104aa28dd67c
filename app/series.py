"""One curve's data: every reading kept, plus min/max pyramids so that drawing costs O(pixels).

A run of 200,000 steps keeps 200,000 readings; a chart is a few hundred pixels wide. Each buffer
keeps, next to the raw readings, the min and max of every bin of 16, 256 and 4096 readings,
updated as readings arrive. Drawing picks the coarsest level that still gives two points per
pixel in the visible range and hands pyqtgraph only that slice (peak decimation: a spike is
never lost). Readings that are missing are NaN: a gap, never a zero.
"""

from __future__ import annotations

import math

import numpy as np

LEVEL_FACTORS = (16, 256, 4096)
EMPTY = np.empty(0, dtype=np.float64)


class _Growable:
    """Columns of float64 that grow by doubling; appends are amortised O(1)."""

    def __init__(self, columns: int, capacity: int = 256):
        self.data = np.empty((columns, capacity), dtype=np.float64)
        self.size = 0

    def reserve(self, total: int) -> None:
        if total > self.data.shape[1]:
            capacity = max(total, 2 * self.data.shape[1])
            grown = np.empty((self.data.shape[0], capacity), dtype=np.float64)
            grown[:, : self.size] = self.data[:, : self.size]
            self.data = grown

    def column(self, index: int) -> np.ndarray:
        return self.data[index, : self.size]


class _Level:
    """Bins of `factor` readings: the first reading's step and time, the bin's min and max."""

    def __init__(self, factor: int):
        self.factor = factor
        self.bins = _Growable(4)

    def rebuild(self, steps: np.ndarray, times: np.ndarray, values: np.ndarray) -> None:
        n = len(values)
        count = -(-n // self.factor)
        padded = np.full(count * self.factor, np.nan)
        padded[:n] = values
        shaped = padded.reshape(count, self.factor)
        self.bins = _Growable(4, max(256, count))
        self.bins.size = count
        data = self.bins.data
        data[0, :count] = steps[:: self.factor]
        data[1, :count] = times[:: self.factor]
        data[2, :count] = np.fmin.reduce(shaped, axis=1)  # NaN only where the bin has no reading
        data[3, :count] = np.fmax.reduce(shaped, axis=1)

    def add(self, index: int, step: float, time_s: float, value: float) -> None:
        b = index // self.factor
        bins = self.bins
        if b == bins.size:
            bins.reserve(b + 1)
            bins.data[:, b] = (step, time_s, value, value)
            bins.size += 1
        elif value == value:  # not NaN
            data = bins.data
            if not data[2, b] <= value:
                data[2, b] = value
            if not data[3, b] >= value:
                data[3, b] = value


class SeriesBuffer:
    """Readings of one metric: (step, time, value), appended in stream order."""

    def __init__(self, capacity: int = 256):
        self._raw = _Growable(3, capacity)
        self._levels = [_Level(f) for f in LEVEL_FACTORS]
        self.low = math.inf
        self.high = -math.inf
        """Smallest and largest finite reading (inf / -inf while there is none)."""
        self.version = 0
        """Bumped on every change, so a chart redraws only curves that changed."""
        self.tokens_per_step = math.nan
        """Tokens one step reads (from the run's `started` message): the x axis by tokens seen
        is step x this; NaN (nothing drawn on that axis) when the run did not say."""
        self.token_changes: list[tuple[float, float]] = []
        """(step, tokens per step from that step on): a mid-run change (gradient accumulation,
        batch) that the toggle event announced; tokens seen add up segment by segment."""
        self.wall_offset = math.nan
        """Seconds since the epoch at the run's time 0: the wall-clock axis is time + this; NaN
        (nothing drawn on that axis) while it is not known."""

    @property
    def size(self) -> int:
        return self._raw.size

    @property
    def steps(self) -> np.ndarray:
        return self._raw.column(0)

    @property
    def times(self) -> np.ndarray:
        return self._raw.column(1)

    @property
    def values(self) -> np.ndarray:
        return self._raw.column(2)

    def has_values(self) -> bool:
        return self.high >= self.low

    def clear(self) -> None:
        self._raw.size = 0
        for level in self._levels:
            level.bins.size = 0
        self.low, self.high = math.inf, -math.inf
        self.version += 1

    def append(self, step: float, time_s: float, value: float) -> None:
        index = self._raw.size
        self._raw.reserve(index + 1)
        self._raw.data[:, index] = (step, time_s, value)
        self._raw.size += 1
        for level in self._levels:
            level.add(index, step, time_s, value)
        if value == value:
            if value < self.low:
                self.low = value
            if value > self.high:
                self.high = value
        self.version += 1

    def extend(self, steps: np.ndarray, times: np.ndarray, values: np.ndarray) -> None:
        """Many readings at once (a stored run, a benchmark): vectorised, levels rebuilt."""
        steps, times, values = (np.asarray(a, dtype=np.float64) for a in (steps, times, values))
        start = self._raw.size
        self._raw.reserve(start + len(values))
        self._raw.data[:, start : start + len(values)] = (steps, times, values)
        self._raw.size += len(values)
        for level in self._levels:
            level.rebuild(self.steps, self.times, self.values)
        finite = values[np.isfinite(values)]
        if finite.size:
            self.low = min(self.low, float(finite.min()))
            self.high = max(self.high, float(finite.max()))
        self.version += 1

    def x_values(self, mode: str | bool) -> np.ndarray:
        """The x of every reading: "step", "time" (seconds), "wall" (seconds since the epoch)
        or "tokens" (tokens seen)."""
        mode = axis_mode(mode)
        if mode == "time":
            return self.times
        if mode == "wall":
            return self.times + self.wall_offset
        if mode == "tokens":
            return self.tokens_seen(self.steps)
        return self.steps

    def tokens_seen(self, steps: np.ndarray) -> np.ndarray:
        """Tokens read up to and including each step: tokens per step x step, and after a
        change at step c (it holds from c on) the tokens of steps 1..c-1 at the old rate plus
        the new rate for each step since."""
        steps = np.asarray(steps, dtype=np.float64)
        rate = self.tokens_per_step
        out = steps * rate
        base_step, base_tokens = 0.0, 0.0
        for change_step, tokens in sorted(self.token_changes):
            base_tokens += (change_step - 1 - base_step) * rate
            base_step, rate = change_step - 1, tokens
            out = np.where(steps >= change_step, base_tokens + (steps - base_step) * rate, out)
        return out

    def value_at(self, mode: str | bool, x: float) -> tuple[float, float] | None:
        """(x, value) of the last reading at or before x (the hover read-out); None before the
        first reading or where the axis has no meaning for this curve."""
        xs = self.x_values(mode)
        if not xs.size:
            return None
        index = int(np.searchsorted(xs, x, "right")) - 1
        if index < 0 or not math.isfinite(float(xs[index])):
            return None
        return float(xs[index]), float(self.values[index])

    def view(self, by_time: str | bool, x_range: tuple[float, float] | None, width_px: int
             ) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) to draw: the raw readings in range, or min/max pairs of a level's bins.
        `by_time` is the axis mode ("step", "time", "tokens"; True / False mean time / step)."""
        n = self._raw.size
        if n == 0:
            return EMPTY, EMPTY
        mode = axis_mode(by_time)
        xs = self.x_values(mode)
        first, last = 0, n
        if x_range is not None:
            first = max(0, int(np.searchsorted(xs, x_range[0], "left")) - 1)
            last = min(n, int(np.searchsorted(xs, x_range[1], "right")) + 1)
        budget = max(100, width_px)  # one min-max pair per pixel: every spike, no more
        count = last - first
        if count <= 2 * budget:
            return xs[first:last], self.values[first:last]
        level = next((lv for lv in self._levels if count / lv.factor <= budget), self._levels[-1])
        b0 = first // level.factor
        b1 = min(level.bins.size, -(-last // level.factor))
        bx = level.bins.data[1 if mode in ("time", "wall") else 0, b0:b1]
        if mode == "tokens":
            bx = self.tokens_seen(bx)
        elif mode == "wall":
            bx = bx + self.wall_offset
        x = np.repeat(bx, 2)
        y = np.empty(2 * len(bx))
        y[0::2] = level.bins.data[2, b0:b1]
        y[1::2] = level.bins.data[3, b0:b1]
        return x, y

    def x_at_step(self, step: float) -> float:
        """The time of the reading at (or just before) `step`: where a step marker goes on a
        time axis. NaN when this buffer has no reading that early."""
        if self._raw.size == 0:
            return math.nan
        index = int(np.searchsorted(self.steps, step, "right")) - 1
        return float(self.times[max(index, 0)])


def axis_mode(mode: str | bool) -> str:
    if mode is True:
        return "time"
    if mode is False:
        return "step"
    return mode


def smoothed(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard-style exponential moving average with bias correction; NaN stays a gap."""
    smoother = Smoother(weight)
    return np.fromiter((smoother.next(v) for v in values.tolist()), np.float64, len(values))


class Smoother:
    """The running EMA of one buffer, extended reading by reading (no recompute per sample)."""

    def __init__(self, weight: float = 0.0):
        self.weight = weight
        self.average = 0.0
        self.count = 0

    def reset(self, weight: float) -> None:
        self.weight, self.average, self.count = weight, 0.0, 0

    def next(self, value: float) -> float:
        if value != value:
            return math.nan
        if self.weight <= 0:
            return value
        self.count += 1
        self.average = self.weight * self.average + (1 - self.weight) * value
        return self.average / (1 - self.weight**self.count)
