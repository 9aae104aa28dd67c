"""How LiveCharts draws: which charts show, which curves changed, how many charts per turn.

A mixin of LiveCharts (app/charts.py). Each curve is redrawn only when its buffer or the view
changed, from an O(pixels) slice of its buffer; Qt paints every updated chart in one event-loop
turn, so a turn takes only as many charts as fit the paint budget, round robin.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer

from app.chart_specs import CHARTS, CurveSpec
from app.series import SeriesBuffer

THEME_FOREGROUND = {"light": "#334155", "dark": "#cbd5e1"}
PAINT_BUDGET_S = 0.012
"""Painting time one event-loop turn may spend on charts; the rest waits for the next tick."""


@dataclass
class TracedCurve:
    spec: CurveSpec
    item: pg.PlotDataItem
    buffer: SeriesBuffer = field(default_factory=SeriesBuffer)
    drawn: tuple = ()
    """What the item shows now (buffer version, axis, range, width): redraw when it differs."""


@dataclass
class Overlay:
    label: str
    color: str
    curves: dict[str, TracedCurve] = field(default_factory=dict)
    raw_loss: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    """The unsmoothed train loss, to smooth again when the slider moves."""


class ChartDrawing:
    """The drawing half of LiveCharts (mixed in; uses its plots, buffers and options)."""

    def _x_of_step(self, step: float) -> float:
        return self._clock.x_at_step(step) if self.by_time else step

    def _follow_all(self) -> None:
        for plot in self.plots.values():
            plot.getPlotItem().enableAutoRange()

    def _all_curves(self) -> list[tuple[TracedCurve, bool]]:
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

    def _draw_chart(self, name: str, curves: list[tuple[TracedCurve, bool]], smoothing: bool) -> bool:
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

    def _draw_curve(self, curve: TracedCurve) -> bool:
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
        """The legend is the chart's title line ("Loss  ━ Train loss  ━ Validation loss"): it
        never covers a curve or a marker's label."""
        plot = self.plots[name]
        item = plot.getPlotItem()
        wanted = [i for i in item.listDataItems()
                  if i.isVisible() and i.name() and i.xData is not None and len(i.xData)]
        foreground = THEME_FOREGROUND[self.theme]
        html = f"<span style='color:{foreground}; font-weight:600'>{plot.chart_title}</span>"
        if len(wanted) > 1:
            html += "&nbsp;&nbsp;&nbsp;" + "&nbsp;&nbsp;".join(
                f"<span style='color:{pg.mkPen(i.opts['pen']).color().name()}'>━</span>"
                f"&nbsp;<span style='color:{foreground}'>{i.name()}</span>" for i in wanted)
        if html != plot.title_html:
            plot.title_html = html
            item.setTitle(html, size="9pt")

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
        self._grid.setColumnStretch(0, 1)
        self._grid.setColumnStretch(1, 1)

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

