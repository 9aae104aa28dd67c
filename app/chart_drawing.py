"""How LiveCharts draws: which charts show, which curves changed, one x range for all charts,
marker label lanes, the hover read-out.

A mixin of LiveCharts (app/charts.py). Each curve is redrawn only when its buffer or the view
changed, from an O(pixels) slice of its buffer; Qt paints every updated chart in one event-loop
turn, so a turn takes only as many charts as fit the paint budget, round robin.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QTimer

from app.chart_specs import CHARTS, CurveSpec, route
from app.series import SeriesBuffer, Smoother

THEME_FOREGROUND = {"light": "#334155", "dark": "#cbd5e1"}
MUTED = "#94a3b8"
PAINT_BUDGET_S = 0.012
"""Painting time one event-loop turn may spend on charts; the rest waits for the next tick."""
FOLLOW_HEADROOM = 0.08
"""While a run grows, the shared x range reaches this share of its span past the newest step."""
LANE_TOP = 0.03
"""A marker's label starts this share of the chart's height below its top."""


@dataclass
class TracedCurve:
    spec: CurveSpec
    item: pg.PlotDataItem
    buffer: SeriesBuffer = field(default_factory=SeriesBuffer)
    smooth: SeriesBuffer = field(default_factory=SeriesBuffer)
    """The EMA of the buffer (empty while smoothing is off)."""
    smoother: Smoother = field(default_factory=Smoother)
    shadow: pg.PlotDataItem | None = None
    """The raw curve drawn faint behind the smoothed one."""
    drawn: tuple = ()
    """What the item shows now (buffer version, axis, range, width): redraw when it differs."""
    owner: str = "live"
    """Whose curve: "live" (the run shown) or a compared run's id (the legend's click)."""


@dataclass
class Overlay:
    label: str
    color: str
    color_index: int = 0
    """Its place in RUN_COLORS: the same hue on every chart and in both themes."""
    curves: dict[str, TracedCurve] = field(default_factory=dict)
    tokens_per_step: float = math.nan
    """What the tokens-seen axis needs; NaN for a run that reads none (inference)."""
    wall_offset: float = math.nan
    """Epoch seconds at its time 0 (the time-of-day axis); NaN when not known."""


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"


def _x_text(x: float | None, mode: str) -> str:
    """An x position as words: a clock time on the time-of-day axis, else a number."""
    if mode == "wall" and x is not None and math.isfinite(x):
        return datetime.fromtimestamp(x).strftime("%H:%M:%S")
    return _fmt(x) if x is not None else "n/a"


class ChartDrawing:
    """The drawing half of LiveCharts (mixed in; uses its plots, buffers and options)."""

    _empty: set[str] | None = None
    _follow_window: tuple[float, float] | None = None
    _last_extent: tuple[float, float] | None = None

    def _x_of_step(self, step: float) -> float:
        if self.x_mode == "time":
            return self._clock.x_at_step(step)
        if self.x_mode == "wall":
            return self._clock.x_at_step(step) + self._clock.wall_offset
        if self.x_mode == "tokens":
            return float(self._clock.tokens_seen(np.array([step]))[0])
        return step

    def _all_curves(self) -> list[tuple[TracedCurve, bool]]:
        """(curve, is_live) for every curve that may be drawn."""
        out = [(c, True) for c in self._series.values()]
        out += [(c, False) for o in self._overlays.values() for c in o.curves.values()]
        return out

    def _curve_label(self, curve: TracedCurve, live: bool) -> str:
        if live:
            return curve.spec.label
        overlay = next(o for o in self._overlays.values() if curve in o.curves.values())
        on_chart = [c for c in overlay.curves.values() if c.spec.chart == curve.spec.chart]
        return overlay.label if len(on_chart) == 1 else f"{overlay.label} {curve.spec.label}"

    # --- one x range -----------------------------------------------------------------------------
    def _x_extent(self) -> tuple[float, float] | None:
        low, high = math.inf, -math.inf
        for curve, _ in self._all_curves():
            if curve.spec.chart not in self._shown or not curve.buffer.has_values():
                continue
            xs = curve.buffer.x_values(self.x_mode)
            first, last = float(xs[0]), float(xs[-1])
            if not (math.isfinite(first) and math.isfinite(last)):  # a gap at an end: look
                finite = xs[np.isfinite(xs)]
                if not finite.size:
                    continue
                first, last = float(finite[0]), float(finite[-1])
            low, high = min(low, first), max(high, last)
        return (low, high) if high >= low else None

    def _apply_x_range(self, low: float, high: float, skip: str | None = None) -> None:
        self._syncing = True
        try:
            for name, plot in self.plots.items():
                if name == skip:
                    continue
                view = plot.getPlotItem().getViewBox()
                current = view.viewRange()[0]
                if abs(current[0] - low) > 1e-9 * max(1, abs(low)) or \
                        abs(current[1] - high) > 1e-9 * max(1, abs(high)):
                    view.setXRange(low, high, padding=0)
        finally:
            self._syncing = False

    def _follow_range(self) -> None:
        """Every chart shows the whole run. While it grows, the range leaves room ahead
        (FOLLOW_HEADROOM of it) and moves only when the run reaches its end: the axes are then
        redrawn a few times per run instead of on every step (an axis costs more to paint than
        its curve). When it no longer grows, the range closes on it."""
        extent = self._x_extent()
        if extent is None:
            return
        low, high = extent
        span = max(high - low, 1.0 if self.x_mode == "step" else 1e-9)
        pad = max(span * 0.02, 0.5 if self.x_mode == "step" else 1e-9)
        window = self._follow_window
        growing = self._last_extent is not None and extent != self._last_extent \
            and extent[0] == self._last_extent[0]
        self._last_extent = extent
        if growing and window is not None and window[0] <= low and high <= window[1] \
                and window[1] - window[0] <= span * (1 + 2 * FOLLOW_HEADROOM):
            return  # the run still fits with room to spare: leave the axes as they are
        ahead = span * FOLLOW_HEADROOM if growing else pad
        self._follow_window = (low - pad, high + max(pad, ahead))
        self._apply_x_range(*self._follow_window)

    def _zoomed_by_user(self, name: str) -> None:
        """The user zoomed or panned one chart: every chart shows the same x range."""
        if self._syncing:
            return
        self._x_follow = False
        self.follow_button.setEnabled(True)
        low, high = self.plots[name].getPlotItem().getViewBox().viewRange()[0]
        self._apply_x_range(low, high, skip=name)
        self._dirty = True

    # --- redraw ------------------------------------------------------------------------------------
    def _redraw(self, everything: bool = False) -> None:
        """Update charts whose data or view changed, a few per event-loop turn.

        Painting a chart costs far more than preparing it, and Qt paints every updated chart in
        the same turn: so each turn takes only as many charts as fit PAINT_BUDGET_S (learnt from
        the time the last paints took), round robin, and the rest wait for the next tick.
        """
        if not self._dirty:
            return
        self._sync_axis()
        with_data = {c.spec.chart for c, _ in self._all_curves() if c.buffer.has_values()}
        self._relayout(with_data)
        self._mark_empty(with_data)
        if self._x_follow:
            self._follow_range()
        by_chart: dict[str, list[tuple[TracedCurve, bool]]] = {name: [] for name in self._shown}
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
            if self._draw_chart(name, by_chart[name]):
                updated += 1
                self.chart_update_counts[name] = self.chart_update_counts.get(name, 0) + 1
        else:
            self._next_chart = 0
        if updated:
            self.redraws += 1
            self.chart_updates += updated
            if not everything:
                self._paint_started = (time.perf_counter(), updated)
                QTimer.singleShot(0, self._painted)
        self._draw_warmup()
        self._place_marker_labels()

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

    def _draw_chart(self, name: str, curves: list[tuple[TracedCurve, bool]]) -> bool:
        changed = name in self._legend_dirty
        smoothing = self.smoothing > 0
        for curve, _live in curves:
            show = curve.buffer.has_values() and \
                (curve.owner, curve.spec.key) not in self.hidden_series
            if show != curve.item.isVisible():
                curve.item.setVisible(show)
                changed = True
            faint = show and smoothing and curve.spec.symbol is None
            if curve.shadow is not None and faint != curve.shadow.isVisible():
                curve.shadow.setVisible(faint)
                changed = True
            if show:
                changed = self._draw_curve(curve, smoothing) or changed
        if changed:
            self._refresh_legend(name)
        return changed

    def _draw_curve(self, curve: TracedCurve, smoothing: bool) -> bool:
        # Dots (validation every N steps) stay at what was measured: never on a smoothed line.
        smoothing = smoothing and curve.spec.symbol is None
        plot = self.plots[curve.spec.chart].getPlotItem()
        view = plot.getViewBox()
        x_range = None if self._x_follow else tuple(view.viewRange()[0])
        width = max(100, int(view.width()))
        key = (curve.buffer.version, curve.smooth.version, smoothing, self.x_mode, x_range,
               width // 50)
        if key == curve.drawn:
            return False
        curve.drawn = key
        x, y = curve.buffer.view(self.x_mode, x_range, width)
        if smoothing and curve.smooth.size:
            curve.shadow.setData(x, y, connect="finite")
            x, y = curve.smooth.view(self.x_mode, x_range, width)
        curve.item.setData(x, y, connect="finite")
        return True

    def _refresh_legend(self, name: str) -> None:
        """The legend is the chart header's word-wrapping line ("Loss  ━ Train loss  ━ run 2"):
        it never covers a curve or a marker's label, and never widens the plot."""
        self._legend_dirty.discard(name)
        box = self.boxes[name]
        curves = [(c, live) for c, live in self._all_curves()
                  if c.spec.chart == name and c.buffer.has_values()]
        foreground = THEME_FOREGROUND[self.theme]
        html = f"<span style='color:{foreground}; font-weight:600'>{box.title}</span>"
        entries, labels = [], []
        for curve, live in curves:
            color = pg.mkPen(curve.item.opts["pen"]).color().name()
            dashed = (not live or curve.spec.dashed) and curve.spec.symbol is None
            mark = "●" if curve.spec.symbol else "┅" if dashed else "━"
            label = self._curve_label(curve, live)
            labels.append(label)
            hidden = (curve.owner, curve.spec.key) in self.hidden_series
            words = (f"<s style='color:{MUTED}'>{label}</s>" if hidden else
                     f"<span style='color:{foreground}'>{label}</span>")
            # Each entry is a link: a click hides its curve, another shows it again.
            entries.append(f"<a href='{curve.owner}|{curve.spec.key}' style='text-decoration:"
                           f"none'><span style='color:{color}'>{mark}</span>&nbsp;{words}</a>")
        # One curve whose name is the chart's title needs no legend; any other case has one
        # (a memory chart with one curve still says which memory it is).
        if len(entries) > 1 or (entries and labels[0] != box.title):
            html += "&nbsp;&nbsp; " + " &nbsp; ".join(entries)
        if html != box.legend.text():
            box.legend.setText(html)

    def toggle_series(self, link: str) -> None:
        """A click on a legend entry ("owner|key"): hide that curve, or show it again."""
        owner, _sep, key = link.partition("|")
        self.hidden_series ^= {(owner, key)}
        spec = route(key)
        if spec is not None:
            self._legend_dirty.add(spec.chart)
        self._dirty = True
        self.redraw_now()

    def legend_text(self, name: str) -> str:
        """The chart's legend as plain words (tests read it)."""
        import re

        return re.sub(r"<[^>]+>", "", self.boxes[name].legend.text()).replace("&nbsp;", " ")

    def _relayout(self, with_data: set[str] | None = None) -> None:
        """Show the charts that have data (the core four while nothing has): two per row, or
        one per row when the charts area is narrow."""
        with_data = with_data or set()
        shown = tuple(spec.name for spec in CHARTS
                      if spec.name in with_data or (not with_data and spec.name in self._core)
                      or (spec.name == "loss"))
        if shown == self._shown:
            return
        self._shown = shown
        for box in self.boxes.values():
            self._grid.removeWidget(box)
            box.hide()
        row, column = 1, 0
        rest = [name for name in shown if name != "loss"]
        wide = self._columns == 2
        for name in shown:
            box = self.boxes[name]
            if name == "loss" or not wide:
                self._grid.addWidget(box, 0 if name == "loss" else row, 0, 1, 2)
                if name != "loss":
                    row += 1
            elif name == rest[-1] and column == 0:  # an odd one out takes the whole row
                self._grid.addWidget(box, row, 0, 1, 2)
                row += 1
            else:
                self._grid.addWidget(box, row, column)
                row, column = (row, 1) if column == 0 else (row + 1, 0)
            box.show()
        last = row if column == 0 else row + 1
        for r in range(self._grid.rowCount()):
            self._grid.setRowStretch(r, 1 if r < last else 0)
        self._grid.setColumnStretch(0, 1)
        self._grid.setColumnStretch(1, 1)
        self._legend_dirty = set(self.plots)

    def _mark_empty(self, with_data: set[str]) -> None:
        """A chart with nothing to draw shows a hint, and no tick values around nothing."""
        empty = {name for name in self._shown if name not in with_data}
        if empty == self._empty:
            return
        self._empty = empty
        for name, plot in self.plots.items():
            blank = name in empty
            plot.hint.setVisible(blank)
            item = plot.getPlotItem()
            for side in ("left", "bottom"):
                item.getAxis(side).setStyle(showValues=not blank)
            item.showGrid(x=not blank, y=not blank, alpha=0.15)

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

    # --- marker labels -----------------------------------------------------------------------------
    def _place_marker_labels(self) -> None:
        """Change markers' labels never overlap: on each chart, a label that would run into the
        one before it (horizontally closer than its width) takes the next free height (lane);
        when no height is free its label is hidden (its line and tooltip stay), never drawn
        over another one."""
        if not self.markers:
            return
        by_plot: dict[int, list] = {}
        for plot, line in self.markers:
            by_plot.setdefault(id(plot), [plot, []])[1].append(line)
        for plot, lines in by_plot.values():
            view = plot.getPlotItem().getViewBox()
            rect = view.sceneBoundingRect()
            state = (tuple(map(tuple, view.viewRange())), rect.width(), rect.height(),
                     len(lines), self.x_mode)
            if getattr(plot, "lanes_for", None) == state:
                continue
            plot.lanes_for = state
            self._lay_out_labels(view, rect, lines)

    @staticmethod
    def _lay_out_labels(view, rect, lines: list) -> None:
        height = rect.height()
        if height <= 0 or not lines:
            return
        length = max(line.label.textItem.boundingRect().width() for line in lines) + 6
        thick = max(line.label.textItem.boundingRect().height() for line in lines) + 2
        top = LANE_TOP * height
        lanes = max(1, int((height - top) // length))
        last_x: list[float] = [-math.inf] * lanes
        placed = []
        for line in lines:
            x = view.mapViewToScene(QPointF(line.value(), 0)).x()
            placed.append((x if math.isfinite(x) else math.inf, line))
        for x, line in sorted(placed, key=lambda item: item[0]):
            lane = next((k for k in range(lanes) if x - last_x[k] >= thick), None)
            if lane is None or not math.isfinite(x):
                line.label.setVisible(False)  # the line and its tooltip keep the words
                continue
            last_x[lane] = x
            line.label.setVisible(True)
            line.label.setPosition(1 - (top + lane * length) / height)

    # --- hover read-out ------------------------------------------------------------------------------
    def _mouse_moved(self, name: str, pos) -> None:
        view = self.plots[name].getPlotItem().getViewBox()
        if not view.sceneBoundingRect().contains(pos):
            self.hide_readout()
            return
        self.show_readout(name, view.mapSceneToView(pos).x())

    def hide_readout(self) -> None:
        for line in self._crosshairs.values():
            line.hide()
        for item in self._readout_items.values():
            item.hide()
        self.readouts.clear()

    def show_readout(self, name: str, x: float) -> str:
        """The value of every curve of a chart at x (the last reading at or before it), the
        compared runs' too; a crosshair at x on every chart. Returns the read-out as words."""
        lines: list[str] = []
        html: list[str] = []
        unit = {"step": "step", "time": "t =", "tokens": "tokens", "wall": "at"}[self.x_mode]
        readings = []
        for curve, live in self._all_curves():
            if curve.spec.chart != name or not curve.item.isVisible():
                continue
            found = curve.buffer.value_at(self.x_mode, x)
            if found is not None:
                readings.append((curve, live, found))
        # The header is the reading nearest the crosshair (the live run's, when it has one); a
        # sparser curve (validation every N steps) says where its own last reading is.
        pool = [f[0] for _c, live, f in readings if live] or [f[0] for _c, _l, f in readings]
        at = max(pool) if pool else None
        for curve, live, found in readings:
            value = found[1]
            text = f"{self._curve_label(curve, live)}: {_fmt(value)} {self.plots[name].y_label}"
            if found[0] != at:
                text += (f" (at {unit} {_x_text(found[0], self.x_mode)}"
                         + (" s)" if self.x_mode == "time" else ")"))
            if self.smoothing > 0 and curve.smooth.size:
                smooth = curve.smooth.value_at(self.x_mode, x)
                if smooth is not None:
                    text += f" (EMA {_fmt(smooth[1])})"
            color = pg.mkPen(curve.item.opts["pen"]).color().name()
            lines.append(text)
            html.append(f"<span style='color:{color}'>■</span> {text}")
        if not lines:
            self.hide_readout()
            return ""
        where = f"{unit} {_x_text(at, self.x_mode)}" + (" s" if self.x_mode == "time" else "")
        words = where + "\n" + "\n".join(lines)
        for chart, line in self._crosshairs.items():
            line.setValue(x)
            line.setVisible(chart in self._shown)
        for chart, item in self._readout_items.items():
            item.setVisible(chart == name)
        item = self._readout_items[name]
        item.setHtml(f"<div style='color:{THEME_FOREGROUND[self.theme]}; font-size:8pt'>"
                     f"<b>{where}</b><br>"
                     + "<br>".join(html) + "</div>")
        view = self.plots[name].getPlotItem().getViewBox()
        (x_low, x_high), (_y_low, y_high) = view.viewRange()
        # Beside the crosshair on the side with room; wider than either side (a narrow chart),
        # from the chart's left edge, so no line of it is cut off.
        per_px = view.viewPixelSize()[0] or 1.0
        width = item.boundingRect().width()
        left, right = (x - x_low) / per_px, (x_high - x) / per_px
        if right >= width or (right >= left and left < width):
            item.setAnchor((0, 0))
            item.setPos(x if right >= width else x_low, y_high)
        elif left >= width:
            item.setAnchor((1, 0))
            item.setPos(x, y_high)
        else:
            item.setAnchor((0, 0))
            item.setPos(x_low, y_high)
        self.readouts = {name: words}
        return words
