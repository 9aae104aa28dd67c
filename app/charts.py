"""Live charts of a run, and of past runs laid over it, drawn from buffers on a timer.

Samples are appended to SeriesBuffers (every reading kept, min/max pyramids beside them); a
QTimer at 25 Hz redraws only the curves whose buffer or view changed, each from an O(pixels)
slice, so 200,000 points per curve cost what 1,000 would. A burst of samples is one redraw.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QComboBox,
    QGraphicsItem,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from app.chart_drawing import ChartDrawing, Overlay, TracedCurve
from app.chart_specs import CHARTS, RUN_COLORS, CurveSpec, percentile_lines, route
from app.series import SeriesBuffer, Smoother, smoothed

REDRAW_INTERVAL_MS = 40
MIN_CHART_HEIGHT = 170
MARKER_POINT_SIZE = 7.5
THEMES = {"light": {"background": "w", "foreground": "#334155", "label_fill": (255, 255, 255)},
          "dark": {"background": "#0f172a", "foreground": "#cbd5e1", "label_fill": (15, 23, 42)}}


def _number(value: object) -> float:
    """A reading as a float; None and anything not a finite number becomes NaN (a gap)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


class LiveCharts(ChartDrawing, QWidget):
    """Eight charts (loss across the top); GPU and latency charts appear once they have data."""

    axis_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        pg.setConfigOptions(antialias=False)
        self.theme = "light"
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addLayout(self._build_toolbar())
        self._grid_host = QWidget()
        self._grid = QGridLayout(self._grid_host)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setSpacing(6)
        scroll = QScrollArea()
        scroll.setWidget(self._grid_host)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        outer.addWidget(scroll, 1)

        self.plots: dict[str, pg.PlotWidget] = {}
        for spec in CHARTS:
            self.plots[spec.name] = self._make_plot(spec.name, spec.title, spec.y_label,
                                                    spec.zero_based)
        self._core = {spec.name for spec in CHARTS if spec.core}
        self._shown: tuple[str, ...] = ()
        self._series: dict[str, TracedCurve] = {}
        self.curves: dict[str, pg.PlotDataItem] = {}
        """The live run's curve per metric key (tests and screenshots read them)."""
        self._smooth = TracedCurve(CurveSpec("loss_train", "loss", "#1d4ed8"),
                              self._item("#1d4ed8", name="Train loss (smoothed)"))
        self._smoother = Smoother(0.0)
        self.plots["loss"].addItem(self._smooth.item)
        self._overlays: dict[str, Overlay] = {}
        self._clock = SeriesBuffer()
        self.markers: list[tuple[pg.PlotWidget, pg.InfiniteLine]] = []
        self.marker_steps: list[tuple[float, str]] = []
        self._warmup_steps: tuple[float, float] | None = None
        self._warmup: dict[str, pg.LinearRegionItem] = {}
        self._hlines: list[tuple[pg.PlotWidget, pg.InfiniteLine]] = []
        self.by_time = False
        self.smoothing = 0.0
        self._dirty = True
        self.redraws = 0
        """Event-loop turns that updated at least one chart."""
        self.chart_updates = 0
        """Charts updated, all turns together (a chart's redraw rate = this / time / charts)."""
        self._next_chart = 0
        self._charts_per_tick = 2  # until the first paints say how many fit the budget
        self._paint_cost_s = 0.0
        self._paint_started: tuple[float, int] | None = None
        self._relayout()
        self._timer = QTimer(self)
        self._timer.setInterval(REDRAW_INTERVAL_MS)
        self._timer.timeout.connect(self._redraw)
        self._timer.start()

    # --- building -------------------------------------------------------------------------------
    def _build_toolbar(self) -> QHBoxLayout:
        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 4)
        bar.addWidget(QLabel("X axis"))
        self.axis_combo = QComboBox()
        self.axis_combo.addItems(["step", "time"])
        self.axis_combo.setToolTip("Draw every chart against the step number or the seconds "
                                   "since the first step")
        self.axis_combo.currentTextChanged.connect(self.set_x_axis)
        bar.addWidget(self.axis_combo)
        bar.addSpacing(12)
        bar.addWidget(QLabel("Smoothing"))
        self.smoothing_slider = QSlider(Qt.Orientation.Horizontal)
        self.smoothing_slider.setRange(0, 99)
        self.smoothing_slider.setFixedWidth(100)
        self.smoothing_slider.setToolTip("Exponential moving average of the train loss (the raw "
                                         "curve stays, faint); 0 = off")
        self.smoothing_slider.valueChanged.connect(lambda v: self.set_smoothing(v / 100))
        bar.addWidget(self.smoothing_slider)
        self.smoothing_label = QLabel("off")
        self.smoothing_label.setMinimumWidth(30)
        bar.addWidget(self.smoothing_label)
        bar.addStretch(1)
        self.clear_overlays_button = QPushButton("Clear comparison")
        self.clear_overlays_button.setObjectName("smallButton")
        self.clear_overlays_button.setToolTip("Remove the compared runs from the charts")
        self.clear_overlays_button.clicked.connect(self.clear_overlays)
        self.clear_overlays_button.hide()
        bar.addWidget(self.clear_overlays_button)
        return bar

    def _make_plot(self, name: str, title: str, y_label: str, zero_based: bool) -> pg.PlotWidget:
        plot = pg.PlotWidget(background=THEMES[self.theme]["background"])
        plot.setObjectName(f"chart_{name}")
        plot.setMinimumHeight(MIN_CHART_HEIGHT)
        item = plot.getPlotItem()
        plot.chart_title = title
        plot.title_html = ""
        item.setTitle(title, size="10pt")
        item.setLabel("left", y_label)
        item.setLabel("bottom", "step")
        for side in ("left", "bottom"):
            item.getAxis(side).enableAutoSIPrefix(False)
            # Repaint unchanged axes from a pixmap instead of replaying their text drawing.
            item.getAxis(side).setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        item.showGrid(x=True, y=True, alpha=0.15)
        if zero_based:
            item.addItem(pg.PlotDataItem([0.0], [0.0], pen=None, symbol="o", symbolSize=0,
                                         symbolPen=None, symbolBrush=None))
        # The user's zoom (mouse wheel, drag) turns following off; redraw the new range in detail.
        item.getViewBox().sigXRangeChanged.connect(self._view_moved)
        plot.hide()
        return plot

    def _item(self, color: str, symbol: str | None = None, width: float = 2.0,
              name: str | None = None) -> pg.PlotDataItem:
        pen = pg.mkPen(color, width=width if symbol is None else 1.5)
        kwargs = {"symbol": symbol, "symbolSize": 6, "symbolBrush": color,
                  "symbolPen": color} if symbol else {}
        return pg.PlotDataItem(name=name, pen=pen, connect="finite", **kwargs)

    def _curve(self, key: str) -> TracedCurve | None:
        curve = self._series.get(key)
        if curve is None:
            spec = route(key, len(self._series))
            if spec is None:
                return None
            curve = TracedCurve(spec, self._item(spec.color, spec.symbol, name=spec.label))
            curve.item.setVisible(False)
            self.plots[spec.chart].addItem(curve.item)
            self._series[key] = curve
            self.curves[key] = curve.item
        return curve

    def _view_moved(self) -> None:
        self._dirty = True

    # --- data -----------------------------------------------------------------------------------
    def clear(self) -> None:
        """Forget the shown run: empty buffers, no markers, no warmup band (overlays stay)."""
        for curve in self._series.values():
            curve.buffer.clear()
        self._smooth.buffer.clear()
        self._smoother.reset(self.smoothing)
        self._clock.clear()
        for plot, line in self.markers + self._hlines:
            plot.removeItem(line)
        self.markers.clear()
        self.marker_steps.clear()
        self._hlines.clear()
        for name, region in self._warmup.items():
            self.plots[name].removeItem(region)
        self._warmup.clear()
        self._warmup_steps = None
        self._follow_all()
        self._dirty = True

    def add_samples(self, messages: Iterable[dict]) -> int:
        """Take the sample messages among `messages`; returns how many there were."""
        count = 0
        for message in messages:
            if message.get("type") != "sample":
                continue
            count += 1
            step = float(message["step"])
            time_s = _number(message.get("time"))
            self._clock.append(step, time_s, math.nan)
            for key, raw in message.get("metrics", {}).items():
                curve = self._curve(key)
                if curve is None:
                    continue
                value = _number(raw) / curve.spec.scale
                curve.buffer.append(step, time_s, value)
                if key == "loss_train":
                    self._smooth.buffer.append(step, time_s, self._smoother.next(value))
            if message.get("phase") in ("warmup", "compile"):
                low, high = self._warmup_steps or (step, step)
                self._warmup_steps = (min(low, step - 1), max(high, step))
        if count:
            self._dirty = True
        return count

    def add_marker(self, step: float, label: str, color: str = "#b45309") -> None:
        """A labelled vertical line at `step` on every chart (e.g. a technique toggled mid-run).

        The label runs up along the line, so it hides no data beside it."""
        self.marker_steps.append((step, label))
        fill = THEMES[self.theme]["label_fill"] + (120,)
        for plot in self.plots.values():
            line = pg.InfiniteLine(
                pos=self._x_of_step(step), angle=90, movable=False, label=label,
                pen=pg.mkPen(color, width=1.5, style=Qt.PenStyle.DashLine),
                labelOpts={"position": 0.97, "color": color, "fill": fill, "movable": False,
                           "rotateAxis": (1, 0), "anchors": [(1, 0), (1, 0)]},
            )
            line.step = step
            font = QFont(line.label.textItem.font())
            font.setPointSizeF(MARKER_POINT_SIZE)
            line.label.setFont(font)
            line.setToolTip(label)
            plot.addItem(line, ignoreBounds=True)
            self.markers.append((plot, line))

    def show_percentiles(self, summary: dict) -> None:
        """Horizontal lines for the latency percentiles of a finished infer run's summary."""
        plot = self.plots["latency"]
        for label, value, color in percentile_lines(summary):
            line = pg.InfiniteLine(pos=value, angle=0, movable=False, label=label,
                                   pen=pg.mkPen(color, width=1, style=Qt.PenStyle.DotLine),
                                   labelOpts={"position": 0.98, "color": color,
                                              "anchors": [(1, 1), (1, 1)]})
            plot.addItem(line, ignoreBounds=True)
            self._hlines.append((plot, line))

    def point_count(self, key: str) -> int:
        """Points held for a curve (all of them, not the decimated view)."""
        curve = self._series.get(key)
        return curve.buffer.size if curve else 0

    def drawn_count(self, key: str) -> int:
        x = self.curves[key].xData if key in self.curves else None
        return 0 if x is None else len(x)

    def fill(self, key: str, steps: np.ndarray, times: np.ndarray, values: np.ndarray) -> None:
        """Many raw readings at once (benchmarks): vectorised, no per-sample work."""
        curve = self._curve(key)
        if curve is not None:
            curve.buffer.extend(steps, times, np.asarray(values, float) / curve.spec.scale)
            if self._clock.size == 0:
                self._clock.extend(steps, times, np.full(len(steps), np.nan))
            self._dirty = True

    # --- compared runs --------------------------------------------------------------------------
    def set_overlay(self, run_id: str, label: str, messages: Iterable[dict]) -> None:
        """Draw a stored run's primary curves over the charts, in one colour of its own."""
        self.remove_overlay(run_id)
        color = RUN_COLORS[len(self._overlays) % len(RUN_COLORS)]
        overlay = Overlay(label, color)
        columns: dict[str, tuple[list, list, list]] = {}
        for message in messages:
            if message.get("type") != "sample":
                continue
            for key, raw in message.get("metrics", {}).items():
                spec = route(key)
                if spec is None or not spec.primary:
                    continue
                steps, times, values = columns.setdefault(key, ([], [], []))
                steps.append(float(message["step"]))
                times.append(_number(message.get("time")))
                values.append(_number(raw) / spec.scale)
        for key, (steps, times, values) in columns.items():
            spec = route(key)
            steps, times, values = np.asarray(steps), np.asarray(times), np.asarray(values)
            if key == "loss_train":
                overlay.raw_loss = (steps, times, values)
                values = smoothed(values, self.smoothing)
            item = self._item(color, "t" if spec.symbol else None, width=1.5,
                              name=f"{label}" if not spec.symbol else None)
            self.plots[spec.chart].addItem(item)
            curve = TracedCurve(spec, item)
            curve.buffer.extend(steps, times, values)
            overlay.curves[key] = curve
        self._overlays[run_id] = overlay
        self._overlays_changed()

    def remove_overlay(self, run_id: str) -> None:
        overlay = self._overlays.pop(run_id, None)
        if overlay is None:
            return
        for curve in overlay.curves.values():
            self.plots[curve.spec.chart].removeItem(curve.item)
        self._overlays_changed()

    def clear_overlays(self) -> None:
        for run_id in list(self._overlays):
            self.remove_overlay(run_id)

    def overlay_ids(self) -> list[str]:
        return list(self._overlays)

    def overlay_curve(self, run_id: str, key: str) -> pg.PlotDataItem | None:
        curve = self._overlays.get(run_id, Overlay("", "")).curves.get(key)
        return curve.item if curve else None

    def _overlays_changed(self) -> None:
        count = len(self._overlays)
        self.clear_overlays_button.setText(f"Clear comparison ({count})")
        self.clear_overlays_button.setVisible(bool(count))
        self._follow_all()
        self._dirty = True

    # --- view options ---------------------------------------------------------------------------
    def set_x_axis(self, mode: str) -> None:
        """"step" or "time": every curve, marker and band moves to the new axis."""
        by_time = mode == "time"
        if self.axis_combo.currentText() != mode:
            self.axis_combo.setCurrentText(mode)
        if by_time == self.by_time:
            return
        self.by_time = by_time
        for plot in self.plots.values():
            plot.getPlotItem().setLabel("bottom", "time (s)" if by_time else "step")
        for _, line in self.markers:
            line.setValue(self._x_of_step(line.step))
        for name in list(self._warmup):
            self.plots[name].removeItem(self._warmup.pop(name))
        self._follow_all()
        self._dirty = True
        self.axis_changed.emit(mode)

    def set_smoothing(self, weight: float) -> None:
        """EMA weight for the train loss, 0 (off) to 0.99; the raw curve stays, faint."""
        weight = min(max(weight, 0.0), 0.99)
        if self.smoothing_slider.value() != round(weight * 100):
            self.smoothing_slider.setValue(round(weight * 100))
        self.smoothing_label.setText(f"{weight:.2f}" if weight else "off")
        if weight == self.smoothing:
            return
        self.smoothing = weight
        self._smoother = Smoother(weight)
        self._smooth.buffer.clear()
        raw = self._series.get("loss_train")
        if raw is not None and raw.buffer.size:
            b = raw.buffer
            # The running average continues from where the recomputed one ends.
            values = np.fromiter((self._smoother.next(v) for v in b.values.tolist()),
                                 np.float64, b.size)
            self._smooth.buffer.extend(b.steps, b.times, values)
        for overlay in self._overlays.values():
            curve = overlay.curves.get("loss_train")
            if curve is not None and overlay.raw_loss is not None:
                steps, times, values = overlay.raw_loss
                curve.buffer = SeriesBuffer()
                curve.buffer.extend(steps, times, smoothed(values, weight))
                curve.drawn = ()
        self._dirty = True

    def set_theme(self, theme: str) -> None:
        self.theme = theme if theme in THEMES else "light"
        colors = THEMES[self.theme]
        for plot in self.plots.values():
            plot.setBackground(colors["background"])
            item = plot.getPlotItem()
            for side in ("left", "bottom"):
                axis = item.getAxis(side)
                axis.setPen(colors["foreground"])
                axis.setTextPen(colors["foreground"])
            plot.title_html = ""  # redrawn in the new colours
        for name in self.plots:
            self._refresh_legend(name)

    def redraw_now(self) -> None:
        """Draw pending data at once (tests, screenshots) instead of waiting for the timer."""
        self._dirty = True
        self._redraw(everything=True)

    def shown_charts(self) -> tuple[str, ...]:
        return self._shown
