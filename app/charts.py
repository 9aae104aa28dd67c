"""Live charts of a run: loss, throughput, memory, drawn from buffers on a timer.

Samples are appended to growable numpy buffers (all data kept); a QTimer at ~25 Hz pushes them to
one PlotDataItem per curve with peak downsampling and clip-to-view, and only when something
changed, so a burst of samples costs one redraw, not one per message.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QGridLayout, QWidget

from profiler.metrics import metric

REDRAW_INTERVAL_MS = 40
MIB = 2.0**20


class SeriesBuffer:
    """x/y values that grow by doubling: appends are amortised O(1), views are free."""

    def __init__(self, capacity: int = 256):
        self._x = np.empty(capacity, dtype=np.float64)
        self._y = np.empty(capacity, dtype=np.float64)
        self.size = 0

    def append(self, x: float, y: float) -> None:
        if self.size == len(self._x):
            self._x = np.resize(self._x, 2 * len(self._x))
            self._y = np.resize(self._y, 2 * len(self._y))
        self._x[self.size] = x
        self._y[self.size] = y
        self.size += 1

    def clear(self) -> None:
        self.size = 0

    @property
    def x(self) -> np.ndarray:
        return self._x[: self.size]

    @property
    def y(self) -> np.ndarray:
        return self._y[: self.size]

    def has_values(self) -> bool:
        return bool(self.size) and bool(np.isfinite(self.y).any())


@dataclass(frozen=True)
class CurveSpec:
    key: str
    """Metric key in a sample's metrics."""
    chart: str
    """Which chart draws it."""
    color: str
    scale: float = 1.0
    """Divide readings by this before drawing (bytes -> MiB)."""
    symbol: str | None = None
    """A marker on each point, for sparse series such as the validation loss."""
    optional: bool = False
    """Hidden until a real (non-None) reading arrives: CUDA-only figures stay off a CPU chart."""


CHARTS = {  # name: (title, y axis label, y axis includes zero)
    "loss": ("Loss", "loss (nats/token)", False),
    "speed": ("Throughput", "tokens/s", True),
    "memory": ("Memory", "memory (MiB)", True),
}
CURVES = (
    CurveSpec("loss_train", "loss", "#2563eb"),
    CurveSpec("loss_val", "loss", "#ea580c", symbol="o"),
    CurveSpec("tokens_per_s", "speed", "#059669"),
    CurveSpec("rss_bytes", "memory", "#7c3aed", scale=MIB),
    CurveSpec("torch_allocated_bytes", "memory", "#db2777", scale=MIB, optional=True),
    CurveSpec("torch_reserved_bytes", "memory", "#0891b2", scale=MIB, optional=True),
)


def _number(value: object) -> float:
    """A reading as a float; None and anything not a finite number becomes NaN (a gap)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


class LiveCharts(QWidget):
    """Three charts in a grid: loss across the top, throughput and memory below."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        pg.setConfigOptions(antialias=True, background="w", foreground="#334155")
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        self.plots: dict[str, pg.PlotWidget] = {}
        for name, (title, y_label, zero_based) in CHARTS.items():
            plot = pg.PlotWidget()
            plot.setObjectName(f"chart_{name}")
            item = plot.getPlotItem()
            item.setTitle(title, size="10pt")
            item.setLabel("left", y_label)
            item.setLabel("bottom", "step")
            for side in ("left", "bottom"):
                item.getAxis(side).enableAutoSIPrefix(False)
            item.showGrid(x=True, y=True, alpha=0.15)
            legend = item.addLegend(offset=(-8, 8), labelTextSize="8pt",
                                    brush=pg.mkBrush(255, 255, 255, 210))
            legend.setVisible(False)
            item.setMenuEnabled(True)
            if zero_based:
                # An invisible point at y = 0 keeps zero in the auto range: a 10 MiB wobble on a
                # 400 MiB process should look like one, not fill the chart.
                item.addItem(pg.PlotDataItem([0.0], [0.0], pen=None, symbol="o", symbolSize=0,
                                             symbolPen=None, symbolBrush=None))
            self.plots[name] = plot
        layout.addWidget(self.plots["loss"], 0, 0, 1, 2)
        layout.addWidget(self.plots["speed"], 1, 0)
        layout.addWidget(self.plots["memory"], 1, 1)

        self.buffers: dict[str, SeriesBuffer] = {}
        self.curves: dict[str, pg.PlotDataItem] = {}
        self._specs = {spec.key: spec for spec in CURVES}
        for spec in CURVES:
            self.buffers[spec.key] = SeriesBuffer()
            self.curves[spec.key] = self._make_curve(spec)
        self._warmup: dict[str, pg.LinearRegionItem] = {}
        self._warmup_range: tuple[float, float] | None = None
        self.markers: list[tuple[pg.PlotWidget, pg.InfiniteLine]] = []
        self._dirty = False
        self.redraws = 0
        self._timer = QTimer(self)
        self._timer.setInterval(REDRAW_INTERVAL_MS)
        self._timer.timeout.connect(self._redraw)
        self._timer.start()

    def _make_curve(self, spec: CurveSpec) -> pg.PlotDataItem:
        m = metric(spec.key)
        pen = pg.mkPen(spec.color, width=2 if spec.symbol is None else 1.5)
        kwargs = {}
        if spec.symbol:
            kwargs = {"symbol": spec.symbol, "symbolSize": 6, "symbolBrush": spec.color,
                      "symbolPen": spec.color}
        curve = pg.PlotDataItem(name=m.label, pen=pen, connect="finite", **kwargs)
        curve.setDownsampling(auto=True, method="peak")
        curve.setClipToView(True)
        if spec.optional:
            curve.setVisible(False)
        self.plots[spec.chart].addItem(curve)
        if spec.optional:  # the legend shows it only once it has a reading
            self.plots[spec.chart].getPlotItem().legend.removeItem(curve)
        return curve

    # --- data -----------------------------------------------------------------------------------
    def clear(self) -> None:
        """Forget the shown run: empty buffers, no markers, no warmup band."""
        for key, buffer in self.buffers.items():
            buffer.clear()
            spec = self._specs[key]
            if spec.optional and self.curves[key].isVisible():
                self.curves[key].setVisible(False)
                self.plots[spec.chart].getPlotItem().legend.removeItem(self.curves[key])
        for plot, line in self.markers:
            plot.removeItem(line)
        self.markers.clear()
        for name, region in self._warmup.items():
            self.plots[name].removeItem(region)
        self._warmup.clear()
        self._warmup_range = None
        self._dirty = True

    def add_samples(self, messages: Iterable[dict]) -> int:
        """Take the sample messages among `messages`; returns how many there were."""
        count = 0
        for message in messages:
            if message.get("type") != "sample":
                continue
            count += 1
            step = float(message["step"])
            metrics = message.get("metrics", {})
            for key, spec in self._specs.items():
                if key not in metrics:  # a key the sample does not carry draws nothing
                    continue
                value = _number(metrics[key]) / spec.scale
                self.buffers[key].append(step, value)
            if message.get("phase") == "warmup":
                low, high = self._warmup_range or (step, step)
                self._warmup_range = (min(low, step - 1), max(high, step))
        if count:
            self._dirty = True
        return count

    def add_marker(self, step: float, label: str, color: str = "#b45309") -> None:
        """A labelled vertical line at `step` on every chart (e.g. a technique toggled mid-run)."""
        for plot in self.plots.values():
            line = pg.InfiniteLine(
                pos=step, angle=90, movable=False, label=label,
                pen=pg.mkPen(color, width=1, style=pg.QtCore.Qt.PenStyle.DashLine),
                labelOpts={"position": 0.92, "color": color, "fill": (255, 255, 255, 200),
                           "movable": False},
            )
            plot.addItem(line)
            self.markers.append((plot, line))

    def point_count(self, key: str) -> int:
        """Points held for a curve (all of them, not the decimated view)."""
        return self.buffers[key].size

    # --- drawing --------------------------------------------------------------------------------
    def _redraw(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        self.redraws += 1
        for key, curve in self.curves.items():
            buffer = self.buffers[key]
            spec = self._specs[key]
            if spec.optional:
                show = buffer.has_values()
                if show != curve.isVisible():
                    curve.setVisible(show)
                    legend = self.plots[spec.chart].getPlotItem().legend
                    if show:
                        legend.addItem(curve, curve.name())
                    else:
                        legend.removeItem(curve)
            curve.setData(buffer.x, buffer.y, connect="finite")
        for name, plot in self.plots.items():  # a one-curve chart's title says it all
            shown = sum(1 for key, curve in self.curves.items()
                        if self._specs[key].chart == name and curve.isVisible())
            plot.getPlotItem().legend.setVisible(shown > 1)
        self._draw_warmup()

    def _draw_warmup(self) -> None:
        if self._warmup_range is None:
            return
        low, high = self._warmup_range
        for name, plot in self.plots.items():
            region = self._warmup.get(name)
            if region is None:
                region = pg.LinearRegionItem(values=(low, high), movable=False,
                                             brush=pg.mkBrush(148, 163, 184, 45),
                                             pen=pg.mkPen(None))
                region.setZValue(-10)
                region.setToolTip("warmup steps: excluded from speed summaries")
                plot.addItem(region, ignoreBounds=True)
                self._warmup[name] = region
            elif region.getRegion() != (low, high):
                region.setRegion((low, high))

    def redraw_now(self) -> None:
        """Draw pending data at once (tests, screenshots) instead of waiting for the timer."""
        self._redraw()
