"""Live charts of a run, and of past runs laid over it, drawn from buffers on a timer.

Samples are appended to SeriesBuffers (every reading kept, min/max pyramids beside them); a
QTimer at 25 Hz redraws only the curves whose buffer or view changed, each from an O(pixels)
slice, so 200,000 points per curve cost what 1,000 would. A burst of samples is one redraw.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
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

from app.chart_specs import CHARTS, RUN_COLORS, CurveSpec, percentile_lines, route
from app.series import SeriesBuffer, Smoother, smoothed

REDRAW_INTERVAL_MS = 40
PAINT_BUDGET_S = 0.012
"""Painting time one event-loop turn may spend on charts; the rest waits for the next tick."""
MIN_CHART_HEIGHT = 170
THEMES = {"light": {"background": "w", "foreground": "#334155", "legend": (255, 255, 255, 210)},
          "dark": {"background": "#0f172a", "foreground": "#cbd5e1", "legend": (15, 23, 42, 210)}}


def _number(value: object) -> float:
    """A reading as a float; None and anything not a finite number becomes NaN (a gap)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


@dataclass
class _Curve:
    spec: CurveSpec
    item: pg.PlotDataItem
    buffer: SeriesBuffer = field(default_factory=SeriesBuffer)
    drawn: tuple = ()
    """What the item shows now (buffer version, axis, range, width): redraw when it differs."""


@dataclass
class _Overlay:
    label: str
    color: str
    curves: dict[str, _Curve] = field(default_factory=dict)
    raw_loss: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    """The unsmoothed train loss, to smooth again when the slider moves."""


class LiveCharts(QWidget):
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
        self._series: dict[str, _Curve] = {}
        self.curves: dict[str, pg.PlotDataItem] = {}
        """The live run's curve per metric key (tests and screenshots read them)."""
        self._smooth = _Curve(CurveSpec("loss_train", "loss", "#1d4ed8"), self._item("#1d4ed8"))
        self._smoother = Smoother(0.0)
        self.plots["loss"].addItem(self._smooth.item)
        self._overlays: dict[str, _Overlay] = {}
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
        self._charts_per_tick = len(CHARTS)
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
        bar.addWidget(QLabel("Loss smoothing"))
        self.smoothing_slider = QSlider(Qt.Orientation.Horizontal)
        self.smoothing_slider.setRange(0, 99)
        self.smoothing_slider.setFixedWidth(120)
        self.smoothing_slider.setToolTip("Exponential moving average of the train loss (the raw "
                                         "curve stays, faint); 0 = off")
        self.smoothing_slider.valueChanged.connect(lambda v: self.set_smoothing(v / 100))
        bar.addWidget(self.smoothing_slider)
        self.smoothing_label = QLabel("off")
        self.smoothing_label.setMinimumWidth(30)
        bar.addWidget(self.smoothing_label)
        bar.addStretch(1)
        self.overlay_label = QLabel("")
        self.overlay_label.setObjectName("hint")
        bar.addWidget(self.overlay_label)
        self.clear_overlays_button = QPushButton("Clear comparison")
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
        item.setTitle(title, size="10pt")
        item.setLabel("left", y_label)
        item.setLabel("bottom", "step")
        for side in ("left", "bottom"):
            item.getAxis(side).enableAutoSIPrefix(False)
            # Repaint unchanged axes from a pixmap instead of replaying their text drawing.
            item.getAxis(side).setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        item.showGrid(x=True, y=True, alpha=0.15)
        legend = item.addLegend(offset=(-8, 8), labelTextSize="8pt",
                                brush=pg.mkBrush(*THEMES[self.theme]["legend"]))
        legend.setVisible(False)
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

    def _curve(self, key: str) -> _Curve | None:
        curve = self._series.get(key)
        if curve is None:
            spec = route(key, len(self._series))
            if spec is None:
                return None
            curve = _Curve(spec, self._item(spec.color, spec.symbol, name=spec.label))
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
        """A labelled vertical line at `step` on every chart (e.g. a technique toggled mid-run)."""
        index = len(self.marker_steps)
        self.marker_steps.append((step, label))
        for plot in self.plots.values():
            line = pg.InfiniteLine(
                pos=self._x_of_step(step), angle=90, movable=False, label=label,
                pen=pg.mkPen(color, width=1.5, style=Qt.PenStyle.DashLine),
                labelOpts={"position": 0.93 - 0.12 * (index % 4), "color": color,
                           "fill": (255, 255, 255, 215), "movable": False, "anchors":
                           [(0, 0.5), (0, 0.5)]},
            )
            line.step = step
            plot.addItem(line, ignoreBounds=True)
            self.markers.append((plot, line))

    def show_percentiles(self, summary: dict) -> None:
        """Horizontal lines for the latency percentiles of a finished infer run's summary."""
        plot = self.plots["latency"]
        for label, value, color in percentile_lines(summary):
            line = pg.InfiniteLine(pos=value, angle=0, movable=False, label=label,
                                   pen=pg.mkPen(color, width=1, style=Qt.PenStyle.DotLine),
                                   labelOpts={"position": 0.97, "color": color})
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
        overlay = _Overlay(label, color)
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
            curve = _Curve(spec, item)
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
        curve = self._overlays.get(run_id, _Overlay("", "")).curves.get(key)
        return curve.item if curve else None

    def _overlays_changed(self) -> None:
        count = len(self._overlays)
        self.overlay_label.setText(f"comparing {count} run{'s' if count != 1 else ''}"
                                   if count else "")
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
            item.titleLabel.setText(item.titleLabel.text, color=colors["foreground"])
            item.legend.setBrush(pg.mkBrush(*colors["legend"]))
            item.legend.setLabelTextColor(colors["foreground"])

    # --- drawing --------------------------------------------------------------------------------
    def _x_of_step(self, step: float) -> float:
        return self._clock.x_at_step(step) if self.by_time else step

    def _follow_all(self) -> None:
        for plot in self.plots.values():
            plot.getPlotItem().enableAutoRange()

    def _all_curves(self) -> list[tuple[_Curve, bool]]:
        """(curve, is_live) for every curve that may be drawn."""
        out = [(c, True) for c in self._series.values()]
        out.append((self._smooth, True))
        out += [(c, False) for o in self._overlays.values() for c in o.curves.values()]
        return out

    def _redraw(self, everything: bool = False) -> None:
        """Update charts whose data or view changed, a few per event-loop turn.

        Painting a chart costs far more than preparing it, and Qt paints every updated chart in
        the same turn: so each turn takes only as many charts as fit PAINT_BUDGET_S (learnt from
        the time the last paints took), round robin, and the rest wait for the next tick.
        """
        if not self._dirty:
            return
        smoothing = self.smoothing > 0
        with_data = {c.spec.chart for c, _ in self._all_curves() if c.buffer.has_values()}
        self._relayout(with_data)
        by_chart: dict[str, list[tuple[_Curve, bool]]] = {name: [] for name in self._shown}
        for curve, live in self._all_curves():
            if curve.spec.chart in by_chart:
                by_chart[curve.spec.chart].append((curve, live))
        names = list(self._shown)
        start = self._next_chart % len(names)
        order = names[start:] + names[:start]
        limit = len(order) if everything else self._charts_per_tick
        updated = 0
        self._dirty = False
        for position, name in enumerate(order):
            if updated >= limit:
                self._dirty = True  # the rest on the next tick
                self._next_chart = (start + position) % len(names)
                break
            if self._draw_chart(name, by_chart[name], smoothing):
                updated += 1
        else:
            self._next_chart = 0
        if updated:
            self.redraws += 1
            self.chart_updates += updated
            if not everything:
                self._paint_started = (time.perf_counter(), updated)
                QTimer.singleShot(0, self._painted)
        self._draw_warmup()

    def _painted(self) -> None:
        """The paints of the last update are done: learn what one chart costs to paint."""
        if self._paint_started is None:
            return
        started, charts = self._paint_started
        self._paint_started = None
        per_chart = (time.perf_counter() - started) / charts
        self._paint_cost_s = 0.7 * self._paint_cost_s + 0.3 * per_chart
        self._charts_per_tick = max(1, min(len(CHARTS),
                                           int(PAINT_BUDGET_S / max(self._paint_cost_s, 1e-4))))

    def _draw_chart(self, name: str, curves: list[tuple[_Curve, bool]], smoothing: bool) -> bool:
        changed = False
        for curve, live in curves:
            show = curve.buffer.has_values() and (curve is not self._smooth or smoothing)
            if show != curve.item.isVisible():
                curve.item.setVisible(show)
                changed = True
            if not show:
                continue
            if live and curve.spec.key == "loss_train" and curve is not self._smooth:
                alpha = 60 if smoothing else 255
                if curve.item.opts["pen"].color().alpha() != alpha:
                    color = pg.mkColor(curve.spec.color)
                    color.setAlpha(alpha)
                    curve.item.setPen(pg.mkPen(color, width=1 if smoothing else 2))
                    changed = True
            changed = self._draw_curve(curve) or changed
        if changed:
            self._refresh_legend(name)
        return changed

    def _draw_curve(self, curve: _Curve) -> bool:
        plot = self.plots[curve.spec.chart].getPlotItem()
        view = plot.getViewBox()
        following = view.autoRangeEnabled()[0]
        x_range = None if following else tuple(view.viewRange()[0])
        width = max(100, int(view.width()))
        key = (curve.buffer.version, self.by_time, x_range, width // 50)
        if key == curve.drawn:
            return False
        curve.drawn = key
        x, y = curve.buffer.view(self.by_time, x_range, width)
        curve.item.setData(x, y, connect="finite")
        return True

    def _refresh_legend(self, name: str) -> None:
        item = self.plots[name].getPlotItem()
        legend = item.legend
        wanted = [i for i in item.listDataItems()
                  if i.isVisible() and i.name() and i.xData is not None and len(i.xData)]
        if [s.item for s, _ in legend.items] != wanted:
            legend.clear()
            for data_item in wanted:
                legend.addItem(data_item, data_item.name())
        legend.setVisible(len(wanted) > 1)

    def _relayout(self, with_data: set[str] | None = None) -> None:
        """Show the charts that have data (the core four while nothing has), two per row."""
        with_data = with_data or set()
        shown = tuple(spec.name for spec in CHARTS
                      if spec.name in with_data or (not with_data and spec.name in self._core)
                      or (spec.name == "loss"))
        if shown == self._shown:
            return
        self._shown = shown
        for plot in self.plots.values():
            self._grid.removeWidget(plot)
            plot.hide()
        row, column = 1, 0
        rest = [name for name in shown if name != "loss"]
        for name in shown:
            plot = self.plots[name]
            if name == "loss":
                self._grid.addWidget(plot, 0, 0, 1, 2)
            elif name == rest[-1] and column == 0:  # an odd one out takes the whole row
                self._grid.addWidget(plot, row, 0, 1, 2)
            else:
                self._grid.addWidget(plot, row, column)
                row, column = (row, 1) if column == 0 else (row + 1, 0)
            plot.show()
        for r in range(self._grid.rowCount()):
            self._grid.setRowStretch(r, 1 if r <= row else 0)

    def _draw_warmup(self) -> None:
        if self._warmup_steps is None:
            return
        low, high = (self._x_of_step(s) for s in self._warmup_steps)
        if not (math.isfinite(low) and math.isfinite(high)):
            return
        for name in self._shown:
            region = self._warmup.get(name)
            if region is None:
                region = pg.LinearRegionItem(values=(low, high), movable=False,
                                             brush=pg.mkBrush(148, 163, 184, 45),
                                             pen=pg.mkPen(None))
                region.setZValue(-10)
                region.setToolTip("warmup steps: excluded from speed summaries")
                self.plots[name].addItem(region, ignoreBounds=True)
                self._warmup[name] = region
            elif region.getRegion() != (low, high):
                region.setRegion((low, high))

    def redraw_now(self) -> None:
        """Draw pending data at once (tests, screenshots) instead of waiting for the timer."""
        self._dirty = True
        self._redraw(everything=True)

    def shown_charts(self) -> tuple[str, ...]:
        return self._shown
