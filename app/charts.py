"""Live charts of a run, and of past runs laid over it, drawn from buffers on a timer.

Samples are appended to SeriesBuffers (every reading kept, min/max pyramids beside them); a
QTimer at 25 Hz redraws only the curves whose buffer or view changed, each from an O(pixels)
slice, so 200,000 points per curve cost what 1,000 would. A burst of samples is one redraw.

What a dashboard user expects is the app's own: one x axis for every chart (zoom one, all
follow), by step, time or tokens seen; a hover read-out of every curve at that x (compared runs
too); EMA smoothing of every curve with the raw curve faint behind; log scale, CSV and PNG per
chart. The charts draw only what the stream says (the predicted memory comes from `started`).
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Iterable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QApplication,
    QGraphicsItem,
    QGridLayout,
    QLabel,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from app.axes import ChartAxis
from app.chart_box import ChartBox
from app.chart_drawing import ChartDrawing, Overlay, TracedCurve
from app.chart_export import ChartExport
from app.chart_specs import (
    CHARTS,
    MIB,
    RUN_COLORS,
    CurveSpec,
    percentile_lines,
    route,
    run_color,
)
from app.chart_toolbar import ChartToolbar
from app.series import SeriesBuffer, Smoother, smoothed

REDRAW_INTERVAL_MS = 40
MIN_CHART_HEIGHT = 150
MARKER_POINT_SIZE = 7.5
ONE_COLUMN_BELOW_PX = 640
"""Narrower than this, the charts stack in one column (a half-screen window, a 150 % scale)."""
AXIS_MODES = {"step": "step", "time": "time (s)", "tokens": "tokens seen",
              "wall": "time of day"}
EMPTY_HINT = {"loss": "No run on the charts yet: press Run (Ctrl+R) to start one, or click a run "
                      "in the history to draw it."}
"""What an empty chart says instead of axes around nothing."""
THEMES = {"light": {"background": "w", "foreground": "#334155", "label_fill": (255, 255, 255)},
          "dark": {"background": "#0f172a", "foreground": "#cbd5e1", "label_fill": (15, 23, 42)}}


def _number(value: object) -> float:
    """A reading as a float; None and anything not a finite number becomes NaN (a gap)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def tokens_per_step(started: dict | None) -> float:
    """Tokens one step reads, from a `started` message's run (NaN when it does not say)."""
    value = ((started or {}).get("run") or {}).get("tokens_per_step")
    return float(value) if isinstance(value, (int, float)) and value > 0 else math.nan


class LiveCharts(ChartDrawing, QWidget):
    """Eight charts (loss across the top); GPU and latency charts appear once they have data."""

    axis_changed = Signal(str)
    exported = Signal(str, bool)
    """A chart was saved (where), or could not be (why): the window says it."""
    overlays_cleared = Signal()
    """The user pressed Clear comparison: the window unticks the runs in the history."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        pg.setConfigOptions(antialias=False)
        self.theme = "light"
        self.live_run_label = "live run"
        """How exports and the headline name the run drawn live (the window sets its name)."""
        self.export = ChartExport(self)
        """The per-chart CSV / PNG export (its buttons on every chart)."""
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self._build_toolbar())
        self._grid_host = QWidget()
        self._grid = QGridLayout(self._grid_host)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setSpacing(6)
        self.scroll = QScrollArea()
        self.scroll.setWidget(self._grid_host)
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        outer.addWidget(self.scroll, 1)

        self.x_mode = "step"
        """The axis every chart is drawn against now."""
        self.x_choice = "step"
        """The axis the user chose; x_mode falls back to step where it has no meaning."""
        self.smoothing = 0.0
        self._x_follow = True
        self._syncing = False
        self._columns = 2
        self.plots: dict[str, pg.PlotWidget] = {}
        self.boxes: dict[str, ChartBox] = {}
        self._zero_items: dict[str, pg.PlotDataItem] = {}
        self._crosshairs: dict[str, pg.InfiniteLine] = {}
        self._readout_items: dict[str, pg.TextItem] = {}
        self.readouts: dict[str, str] = {}
        """The hover read-out's text per chart (plain words; tests and screenshots read it)."""
        for spec in CHARTS:
            self._make_chart(spec.name, spec.title, spec.y_label, spec.zero_based)
        self._core = {spec.name for spec in CHARTS if spec.core}
        self._shown: tuple[str, ...] = ()
        self._series: dict[str, TracedCurve] = {}
        self.curves: dict[str, pg.PlotDataItem] = {}
        """The live run's curve per metric key (tests and screenshots read them)."""
        self._overlays: dict[str, Overlay] = {}
        self.hidden_series: set[tuple[str, str]] = set()
        """(owner, key) of curves the user hid with a click on their legend entry."""
        self._clock = SeriesBuffer()
        self.markers: list[tuple[pg.PlotWidget, pg.InfiniteLine]] = []
        self.marker_steps: list[tuple[float, str]] = []
        self._warmup_steps: tuple[float, float] | None = None
        self._warmup: dict[str, pg.LinearRegionItem] = {}
        self._hlines: list[tuple[pg.PlotWidget, pg.InfiniteLine]] = []
        self._prediction: list[pg.GraphicsObject] = []
        self.predicted_memory_bytes: float | None = None
        self._dirty = True
        self.redraws = 0
        """Event-loop turns that updated at least one chart."""
        self.chart_updates = 0
        """Charts updated, all turns together (a chart's redraw rate = this / time / charts)."""
        self.chart_update_counts: dict[str, int] = {}
        """Updates per chart (the slowest chart's rate is the bench's figure)."""
        self._next_chart = 0
        self._charts_per_tick = 2  # until the first paints say how many fit the budget
        self._paint_cost_s = 0.0
        self._paint_started: tuple[float, int] | None = None
        self._legend_dirty = set(self.plots)
        self._relayout()
        self._timer = QTimer(self)
        self._timer.setInterval(REDRAW_INTERVAL_MS)
        self._timer.timeout.connect(self._redraw)
        self._timer.start()

    @property
    def by_time(self) -> bool:
        return self.x_mode == "time"

    # --- building -------------------------------------------------------------------------------
    def _build_toolbar(self) -> QWidget:
        """The toolbar (app/chart_toolbar.py) owns its controls; the charts act on them."""
        self.toolbar = ChartToolbar(AXIS_MODES)
        bar = self.toolbar
        self.axis_combo, self.axis_note = bar.axis_combo, bar.axis_note
        self.smoothing_slider, self.smoothing_label = bar.smoothing_slider, bar.smoothing_label
        self.follow_button, self.clear_overlays_button = bar.follow_button, bar.clear_button
        bar.axis_chosen.connect(self.set_x_axis)
        bar.smoothing_chosen.connect(self.set_smoothing)
        bar.follow_button.clicked.connect(self.follow)
        bar.clear_button.clicked.connect(self._clear_pressed)
        return bar

    def _make_chart(self, name: str, title: str, y_label: str, zero_based: bool) -> None:
        # The wrappers are kept, not their id()s: a freed wrapper's id can come back on another.
        before = QApplication.topLevelWidgets()
        plot = pg.PlotWidget(background=THEMES[self.theme]["background"],
                             axisItems={"left": ChartAxis("left")})
        # pyqtgraph makes each plot's context menus and control panel without a parent: given
        # the plot as theirs (popups stay popups), they go when the window does.
        for orphan in QApplication.topLevelWidgets():
            if orphan.parent() is None and orphan is not plot \
                    and not any(orphan is widget for widget in before):
                orphan.setParent(plot, orphan.windowFlags())
        plot.setObjectName(f"chart_{name}")
        plot.setMinimumHeight(MIN_CHART_HEIGHT)
        plot.chart_title = title
        plot.y_label = y_label
        item = plot.getPlotItem()
        item.hideButtons()  # the toolbar's Follow replaces the per-chart "A"
        item.setLabel("left", y_label)
        item.setLabel("bottom", "step")
        for side in ("left", "bottom"):
            item.getAxis(side).enableAutoSIPrefix(False)
            # Repaint unchanged axes from a pixmap instead of replaying their text drawing.
            item.getAxis(side).setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        item.showGrid(x=True, y=True, alpha=0.15)
        if zero_based:
            zero = pg.PlotDataItem([0.0], [0.0], pen=None, symbol="o", symbolSize=0,
                                   symbolPen=None, symbolBrush=None)
            item.addItem(zero)
            self._zero_items[name] = zero
        view = item.getViewBox()
        view.enableAutoRange(x=False, y=True)
        view.setAutoVisible(y=True)  # y fits the steps in view, so a zoom shows detail
        # The wheel and a drag move x only (TensorBoard's and W&B's habit): y always fits what
        # is in view, so no zoom can leave a curve above or below the chart.
        view.setMouseEnabled(x=True, y=False)
        view.sigXRangeChanged.connect(self._view_moved)
        view.sigRangeChangedManually.connect(lambda _mask, n=name: self._zoomed_by_user(n))
        crosshair = pg.InfiniteLine(angle=90, movable=False,
                                    pen=pg.mkPen("#64748b", width=1, style=Qt.PenStyle.DotLine))
        crosshair.setZValue(50)
        crosshair.hide()
        item.addItem(crosshair, ignoreBounds=True)
        self._crosshairs[name] = crosshair
        readout = pg.TextItem("", anchor=(0, 0), fill=pg.mkBrush(255, 255, 255, 225),
                              border=pg.mkPen("#cbd5e1"))
        readout.setZValue(60)
        readout.hide()
        item.addItem(readout, ignoreBounds=True)
        self._readout_items[name] = readout
        plot.scene().sigMouseMoved.connect(lambda pos, n=name: self._mouse_moved(n, pos))
        plot.viewport().installEventFilter(self)  # the mouse leaving: the read-out goes
        hint = QLabel(EMPTY_HINT.get(name, f"{title} ({y_label}) appears here when a run "
                                           "streams"), plot.viewport())
        hint.setObjectName("chartHint")
        hint.setWordWrap(True)
        hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        hint.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        plot.hint = hint
        box = ChartBox(name, title, plot, self)  # parented: a chart never shown is deleted with us
        box.log_button.toggled.connect(lambda on, n=name: self.set_log_scale(n, on))
        box.legend.linkActivated.connect(self.toggle_series)
        box.csv_button.clicked.connect(lambda _c=False, n=name: self.export.ask(n, "csv"))
        box.png_button.clicked.connect(lambda _c=False, n=name: self.export.ask(n, "png"))
        box.hide()
        self.plots[name] = plot
        self.boxes[name] = box

    def _bottom_axis(self, plot: pg.PlotWidget, wall: bool) -> None:
        """The x axis: time-of-day ticks (pyqtgraph's DateAxisItem) or plain numbers."""
        axis = pg.DateAxisItem("bottom") if wall else pg.AxisItem("bottom")
        plot.getPlotItem().setAxisItems({"bottom": axis})
        axis.enableAutoSIPrefix(False)
        axis.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        colors = THEMES[self.theme]
        axis.setPen(colors["foreground"])
        axis.setTextPen(colors["foreground"])
        axis.setStyle(showValues=plot.getPlotItem().getAxis("left").style["showValues"])

    def _item(self, color: str, symbol: str | None = None, width: float = 2.0,
              name: str | None = None, dashed: bool = False) -> pg.PlotDataItem:
        pen = pg.mkPen(color, width=width if symbol is None else 1.5,
                       style=Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine)
        kwargs = {"symbol": symbol, "symbolSize": 6, "symbolBrush": color,
                  "symbolPen": color} if symbol else {}
        return pg.PlotDataItem(name=name, pen=pen, connect="finite", **kwargs)

    def _shadow(self, color: str) -> pg.PlotDataItem:
        """The raw curve, faint, behind its smoothed line."""
        faint = pg.mkColor(color)
        faint.setAlpha(60)
        item = pg.PlotDataItem(pen=pg.mkPen(faint, width=1), connect="finite")
        item.setZValue(-5)
        item.setVisible(False)
        return item

    def _traced(self, spec: CurveSpec, item: pg.PlotDataItem, color: str,
                tokens: float, changes: list[tuple[float, float]]) -> TracedCurve:
        curve = TracedCurve(spec, item, shadow=self._shadow(color))
        curve.buffer.tokens_per_step = curve.smooth.tokens_per_step = tokens
        curve.buffer.token_changes = curve.smooth.token_changes = changes  # one list per run
        curve.smoother = Smoother(self.smoothing)
        plot = self.plots[spec.chart]
        plot.addItem(curve.shadow)
        plot.addItem(item)
        return curve

    def _curve(self, key: str) -> TracedCurve | None:
        curve = self._series.get(key)
        if curve is None:
            spec = route(key, len(self._series))
            if spec is None:
                return None
            item = self._item(spec.color, spec.symbol, name=spec.label, dashed=spec.dashed)
            item.setVisible(False)
            curve = self._traced(spec, item, spec.color, self._clock.tokens_per_step,
                                 self._clock.token_changes)
            curve.buffer.wall_offset = curve.smooth.wall_offset = self._clock.wall_offset
            self._series[key] = curve
            self.curves[key] = item
        return curve

    def _view_moved(self) -> None:
        self._dirty = True

    # --- data -----------------------------------------------------------------------------------
    def clear(self) -> None:
        """Forget the shown run: empty buffers, no markers, no bands or lines (overlays stay)."""
        for curve in self._series.values():
            curve.buffer.clear()
            curve.smooth.clear()
            curve.smoother.reset(self.smoothing)
        self._clock.clear()
        self.set_wall_offset(math.nan)
        self.set_started(None)
        for plot, line in self.markers + self._hlines:
            plot.removeItem(line)
        self.markers.clear()
        self.marker_steps.clear()
        self._hlines.clear()
        for name, region in self._warmup.items():
            self.plots[name].removeItem(region)
        self._warmup.clear()
        self._warmup_steps = None
        self.follow()

    def set_started(self, started: dict | None) -> None:
        """The live run's `started` message: tokens per step (the tokens axis) and the predicted
        memory drawn on the memory chart. None forgets both."""
        tokens = tokens_per_step(started)
        self._clock.tokens_per_step = tokens
        self._clock.token_changes = []
        for curve in self._series.values():
            curve.buffer.tokens_per_step = curve.smooth.tokens_per_step = tokens
            curve.buffer.token_changes = curve.smooth.token_changes = self._clock.token_changes
            curve.drawn = ()
        theory = (((started or {}).get("run") or {}).get("theory") or {})
        predicted = theory.get("predicted_memory_bytes")
        total = predicted.get("total") if isinstance(predicted, dict) else predicted
        self.set_predicted_memory(total if isinstance(total, (int, float)) else None)
        self._dirty = True

    def set_predicted_memory(self, total_bytes: float | None) -> None:
        """A dashed line at the predicted tensor memory on the memory chart (None removes it)."""
        plot = self.plots["memory"]
        for item in self._prediction:
            plot.removeItem(item)
        self._prediction.clear()
        self.predicted_memory_bytes = total_bytes
        if total_bytes is None or total_bytes <= 0:
            return
        mib = total_bytes / MIB
        line = pg.InfiniteLine(pos=mib, angle=0, movable=False,
                               label=f"predicted {mib:.0f} MiB (tensors)",
                               pen=pg.mkPen("#475569", width=1.5, style=Qt.PenStyle.DashLine),
                               labelOpts={"position": 0.02, "color": "#475569",
                                          "anchors": [(0, 1), (0, 1)]})
        line.setToolTip("Predicted memory of weights, gradients, optimizer states and "
                        "activations (profiler.figures.theory), from the run's start message")
        # Not ignoreBounds: a horizontal line's y bound (its position, x unbounded) keeps it in the
        # auto range, also with autoVisible, where a data point off the visible steps would not.
        plot.addItem(line)
        self._prediction.append(line)
        self._dirty = True

    def set_wall_offset(self, offset: float) -> None:
        """The epoch seconds at the shown run's time 0 (the wall-clock axis); NaN: unknown."""
        self._clock.wall_offset = offset
        for curve in self._series.values():
            curve.buffer.wall_offset = curve.smooth.wall_offset = offset
            curve.drawn = ()
        self._dirty = True

    def add_samples(self, messages: Iterable[dict], live: bool = True) -> int:
        """Take the sample messages among `messages`; returns how many there were. A live run's
        first sample sets its wall clock: it arrived now, `time` seconds into the run (a stored
        run's comes from the window, set_wall_offset)."""
        count = 0
        smoothing = self.smoothing > 0
        for message in messages:
            if message.get("type") != "sample":
                continue
            count += 1
            step = float(message["step"])
            time_s = _number(message.get("time"))
            if live and not math.isfinite(self._clock.wall_offset) and math.isfinite(time_s):
                self.set_wall_offset(time.time() - time_s)
            self._clock.append(step, time_s, math.nan)
            for key, raw in message.get("metrics", {}).items():
                curve = self._curve(key)
                if curve is None:
                    continue
                value = _number(raw) / curve.spec.scale
                curve.buffer.append(step, time_s, value)
                if smoothing:
                    curve.smooth.append(step, time_s, curve.smoother.next(value))
            if message.get("phase") in ("warmup", "compile"):
                low, high = self._warmup_steps or (step, step)
                self._warmup_steps = (min(low, step - 1), max(high, step))
        if count:
            self._dirty = True
        return count

    def tokens_changed(self, step: float, tokens: float) -> None:
        """A mid-run change of the tokens one step reads (a toggle event's tokens_per_step,
        holding from `step` on): the tokens-seen axis adds up each segment at its own rate."""
        self._clock.token_changes.append((float(step), float(tokens)))
        for curve in self._series.values():
            curve.drawn = ()
        for _, line in self.markers:
            line.setValue(self._x_of_step(line.step))
        self._dirty = True

    def add_marker(self, step: float, label: str, color: str = "#b45309") -> None:
        """A labelled vertical line at `step` on every chart (e.g. a technique toggled mid-run).

        The label runs up along the line, so it hides no data beside it; markers close together
        get their labels at different heights (lanes), so none is drawn over another."""
        self.marker_steps.append((step, label))
        fill = THEMES[self.theme]["label_fill"] + (150,)
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
        for plot in self.plots.values():
            plot.lanes_for = None
        self._dirty = True

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
            values = np.asarray(values, float) / curve.spec.scale
            curve.buffer.extend(steps, times, values)
            if self.smoothing > 0:
                self._resmooth(curve)
            if self._clock.size == 0:
                self._clock.extend(steps, times, np.full(len(steps), np.nan))
            self._dirty = True

    # --- compared runs --------------------------------------------------------------------------
    def set_overlay(self, run_id: str, label: str, messages: Iterable[dict],
                    wall_offset: float = math.nan) -> None:
        """Draw a stored run's primary curves over the charts: one colour of its own (none of a
        live curve's), dashed."""
        self.remove_overlay(run_id)
        used = {o.color_index for o in self._overlays.values()}
        count = len(RUN_COLORS["light"])
        preferred = zlib.crc32(run_id.encode()) % count  # the same run, the same colour
        index = next((i % count for i in range(preferred, preferred + count)
                      if i % count not in used), preferred)
        color = run_color(index, self.theme)
        overlay = Overlay(label, color, index)
        columns: dict[str, tuple[list, list, list]] = {}
        tokens = math.nan
        changes: list[tuple[float, float]] = []
        for message in messages:
            kind = message.get("type")
            if kind == "started":
                tokens = tokens_per_step(message)
            elif kind == "event" and message.get("kind") == "toggle" \
                    and isinstance(message.get("step"), int) \
                    and isinstance(message.get("tokens_per_step"), int):
                changes.append((float(message["step"]), float(message["tokens_per_step"])))
            if kind != "sample":
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
            item = self._item(color, "t" if spec.symbol else None, width=1.5, name=label,
                              dashed=spec.symbol is None)
            curve = self._traced(spec, item, color, tokens, changes)
            curve.owner = run_id
            curve.buffer.wall_offset = curve.smooth.wall_offset = wall_offset
            curve.buffer.extend(np.asarray(steps), np.asarray(times), np.asarray(values))
            if self.smoothing > 0:
                self._resmooth(curve)
            overlay.curves[key] = curve
        overlay.tokens_per_step = tokens
        overlay.wall_offset = wall_offset
        self._overlays[run_id] = overlay
        self._overlays_changed()

    def rename_overlay(self, run_id: str, label: str) -> None:
        overlay = self._overlays.get(run_id)
        if overlay is None:
            return
        overlay.label = label
        for curve in overlay.curves.values():
            curve.item.opts["name"] = label
        self._overlays_changed()

    def remove_overlay(self, run_id: str) -> None:
        overlay = self._overlays.pop(run_id, None)
        if overlay is None:
            return
        for curve in overlay.curves.values():
            plot = self.plots[curve.spec.chart]
            plot.removeItem(curve.item)
            plot.removeItem(curve.shadow)
        self._overlays_changed()

    def clear_overlays(self) -> None:
        for run_id in list(self._overlays):
            self.remove_overlay(run_id)

    def _clear_pressed(self) -> None:
        self.clear_overlays()
        self.overlays_cleared.emit()

    def curves_by_run(self) -> list[tuple[str, Iterable[TracedCurve]]]:
        """(run label, its curves): the live run's first, then each compared run's."""
        return [(self.live_run_label, self._series.values())] + [
            (overlay.label, overlay.curves.values()) for overlay in self._overlays.values()]

    def overlay_ids(self) -> list[str]:
        return list(self._overlays)

    def overlay_curve(self, run_id: str, key: str) -> pg.PlotDataItem | None:
        curve = self._overlays.get(run_id, Overlay("", "")).curves.get(key)
        return curve.item if curve else None

    def overlay_color(self, run_id: str) -> str | None:
        overlay = self._overlays.get(run_id)
        return overlay.color if overlay else None

    def _overlays_changed(self) -> None:
        count = len(self._overlays)
        self.toolbar.show_compared(count)
        self._legend_dirty = set(self.plots)
        self.follow()

    # --- view options ---------------------------------------------------------------------------
    def follow(self) -> None:
        """Every chart shows the whole run (all compared runs too) and follows new steps; y fits
        again on every chart (also one the right-click menu had fixed)."""
        self._x_follow = True
        self._follow_window = self._last_extent = None
        self.follow_button.setEnabled(False)
        for plot in self.plots.values():
            plot.getPlotItem().getViewBox().enableAutoRange(y=True)
        self._dirty = True

    def set_x_axis(self, mode: str) -> None:
        """"step", "time" or "tokens": every curve, marker and band moves to the new axis (or to
        the step axis, said beside the choice, where the choice has no meaning for a run)."""
        if mode not in AXIS_MODES:
            return
        self.toolbar.show_axis(mode)
        if mode == self.x_choice:
            return
        self.x_choice = mode
        self._sync_axis()
        self.axis_changed.emit(mode)

    def _axis_missing(self, mode: str) -> str:
        """Why `mode` cannot draw a run shown now ("" when it can): tokens seen needs the
        tokens one step reads, which an inference run does not have; the time of day needs
        the run's wall clock."""
        if mode not in ("tokens", "wall"):
            return ""
        attribute = "tokens_per_step" if mode == "tokens" else "wall_offset"
        live = any(c.buffer.size for c in self._series.values())
        if live and not math.isfinite(getattr(self._clock, attribute)):
            return "the run shown"
        lacking = [o.label for o in self._overlays.values()
                   if o.curves and not math.isfinite(getattr(o, attribute))]
        return f"“{lacking[0]}”" if lacking else ""

    def _sync_axis(self) -> None:
        """Draw against the chosen axis, or by step where it has no meaning for a shown run."""
        missing = self._axis_missing(self.x_choice)
        mode = "step" if missing else self.x_choice
        why = ("an inference run reads no tokens per step" if self.x_choice == "tokens" else
               "its wall clock is not known (a run still going that this window did not start)")
        self.toolbar.say_axis("→ drawn by step" if missing else "",
                              f"{AXIS_MODES[self.x_choice].capitalize()} has no meaning for "
                              f"{missing}: {why}, so every chart is drawn by step (your choice "
                              "comes back for a run that has it)" if missing else "")
        if mode == self.x_mode:
            return
        wall_before = self.x_mode == "wall"
        self.x_mode = mode
        for plot in self.plots.values():
            if (mode == "wall") != wall_before:  # clock times on the axis, or plain numbers
                self._bottom_axis(plot, wall=mode == "wall")
            plot.getPlotItem().setLabel("bottom", AXIS_MODES[mode])
        for _, line in self.markers:
            line.setValue(self._x_of_step(line.step))
        for name in list(self._warmup):
            self.plots[name].removeItem(self._warmup.pop(name))
        self.hide_readout()
        self.follow()

    def set_smoothing(self, weight: float) -> None:
        """EMA weight for every curve, 0 (off) to 0.99; the raw curve stays, faint, behind."""
        weight = min(max(weight, 0.0), 0.99)
        self.toolbar.show_smoothing(weight)
        if weight == self.smoothing:
            return
        self.smoothing = weight
        for curve, _live in self._all_curves():
            self._resmooth(curve)
        self._dirty = True

    def _resmooth(self, curve: TracedCurve) -> None:
        """Recompute a curve's EMA from its raw readings; the running average continues on."""
        curve.smoother = Smoother(self.smoothing)
        curve.smooth.clear()
        b = curve.buffer
        if self.smoothing > 0 and b.size:
            values = np.fromiter((curve.smoother.next(v) for v in b.values.tolist()),
                                 np.float64, b.size)
            curve.smooth.extend(b.steps, b.times, values)
        curve.drawn = ()

    def set_log_scale(self, name: str, on: bool) -> None:
        """Logarithmic y axis for one chart (its zero-keeping point is dropped meanwhile)."""
        plot = self.plots[name]
        box = self.boxes[name]
        if box.log_button.isChecked() != on:
            box.log_button.setChecked(on)
            return
        zero = self._zero_items.get(name)
        if zero is not None:
            zero.setVisible(not on)
        plot.getPlotItem().setLogMode(x=False, y=on)
        for curve, _live in self._all_curves():
            if curve.spec.chart == name:
                curve.drawn = ()
        self._dirty = True

    def log_scale(self, name: str) -> bool:
        return self.boxes[name].log_button.isChecked()

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
        for overlay in self._overlays.values():  # each compared run keeps its hue, readable
            overlay.color = run_color(overlay.color_index, self.theme)
            for curve in overlay.curves.values():
                self._recolor(curve, overlay.color)
        fill = colors["label_fill"] + (150,)
        for _plot, line in self.markers:  # marker labels on the new background
            line.label.fill = pg.mkBrush(fill)
            line.label.update()
        for item in self._readout_items.values():
            item.fill = pg.mkBrush(*colors["label_fill"], 225)
        self._legend_dirty = set(self.plots)
        for name in self.plots:
            self._refresh_legend(name)

    @staticmethod
    def _recolor(curve: TracedCurve, color: str) -> None:
        pen = pg.mkPen(curve.item.opts["pen"])
        pen.setColor(pg.mkColor(color))
        curve.item.setPen(pen)
        if curve.item.opts.get("symbol"):
            curve.item.setSymbolBrush(color)
            curve.item.setSymbolPen(color)
        faint = pg.mkColor(color)
        faint.setAlpha(60)
        curve.shadow.setPen(pg.mkPen(faint, width=1))

    def redraw_now(self) -> None:
        """Draw pending data at once (tests, screenshots) instead of waiting for the timer."""
        self._dirty = True
        self._redraw(everything=True)

    def shown_charts(self) -> tuple[str, ...]:
        return self._shown

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt override
        """A chart the mouse left has no read-out (it would show a stale step); a double click
        on a chart undoes the zoom (TensorBoard's habit), like Follow."""
        kind = event.type()
        if kind == QEvent.Type.Resize and hasattr(watched.parent(), "hint"):
            hint = watched.parent().hint
            hint.setGeometry(watched.rect().adjusted(12, 0, -12, 0))
        elif kind == QEvent.Type.Leave and self.readouts:
            self.hide_readout()
        elif kind == QEvent.Type.MouseButtonDblClick and \
                event.button() == Qt.MouseButton.LeftButton:
            self.follow()
            return True
        return False

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        self.toolbar.fit(event.size().width())
        self.hide_readout()  # its place was worked out for the old size
        columns = 1 if event.size().width() < ONE_COLUMN_BELOW_PX else 2
        if columns != self._columns:
            self._columns = columns
            self._shown = ()  # lay the charts out again
            self._dirty = True


__all__ = ["LiveCharts", "smoothed"]
