"""The charts and the progress line of Run ▸ Find the fastest (app/tune_dialog.py): the figure
of each trial by trial number, the trials as speed against peak memory with their Pareto front
(no other trial is both faster and smaller), and how far the search is from its first second.
They follow the app's theme."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QApplication, QHBoxLayout, QWidget

from app.run_controls import clock
from profiler.figures import metrics

MIB = 2.0**20
THEME = {"light": ("w", "#334155", "#2563eb", "#ea580c"),
         "dark": ("#0f172a", "#cbd5e1", "#60a5fa", "#fb923c")}
"""background, text, trials, Pareto front."""


def pareto_front(points: list[tuple[float, float]], higher: bool) -> list[tuple[float, float]]:
    """The (memory, figure) points no other point beats on both (less memory and a better
    figure), by memory ascending: the trade-offs worth a look."""
    front: list[tuple[float, float]] = []
    best = -math.inf if higher else math.inf
    for memory, value in sorted(points, key=lambda p: (p[0], -p[1] if higher else p[1])):
        if (value > best) if higher else (value < best):
            front.append((memory, value))
            best = value
    return front


def progress_text(rows: list[dict], size: int, pruned: int, elapsed_s: float, budget_s: float,
                  unit: str, higher: bool, left_s: float | None = None) -> str:
    """"3 trials, 2 of 48 candidates measured; best so far 1,230 tokens/s (bf16); about 2:10 of
    trials left; 0:12 of the 15:00 budget spent, it ends within 14:48" — from the first second
    on. left_s: the search's own estimate from its runs so far (None until it has one)."""
    measured = {r["label"] for r in rows if not r["error"] and r["value"] is not None}
    candidates = {r["label"] for r in rows}
    text = (f"{len(rows)} trial{'s' if len(rows) != 1 else ''}, {len(candidates)} of {size} "
            f"candidates tried" + (f" ({pruned} predicted not to fit)" if pruned else ""))
    good = [r for r in rows if not r["error"] and r["value"] is not None]
    if good:
        best = (max if higher else min)(good, key=lambda r: r["value"])
        text += (f"; best so far {metrics.format_value(best['value'], unit)} "
                 f"({best['label']}, of {len(measured)} measured)")
    else:
        text += "; no trial has finished yet (the first one starts a worker)"
    if left_s is not None:
        text += (f"; about {clock(max(0.0, left_s))} of trials left (estimated from the runs so "
                 "far; the final re-measure follows)")
    left = max(0.0, budget_s - elapsed_s)
    return text + f"; {clock(elapsed_s)} of the {clock(budget_s)} budget spent, it ends within " \
                  f"{clock(left)}"


class TrialCharts(QWidget):
    """The figure by trial, and the figure against peak memory with the Pareto front."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.by_trial = pg.PlotWidget()
        self.by_trial.setObjectName("tuneByTrial")
        self.by_trial.setLabel("bottom", "trial")
        self.by_memory = pg.PlotWidget()
        self.by_memory.setObjectName("tuneByMemory")
        self.by_memory.setLabel("bottom", "peak memory", units="MiB")
        for plot in (self.by_trial, self.by_memory):
            plot.setMinimumHeight(180)
            for side in ("left", "bottom"):
                plot.getPlotItem().getAxis(side).enableAutoSIPrefix(False)
            layout.addWidget(plot, 1)
        self.scatter = pg.ScatterPlotItem(size=8)
        self.errors = pg.ErrorBarItem(beam=0.2)
        self.by_trial.addItem(self.errors)
        self.by_trial.addItem(self.scatter)
        self.memory_points = pg.ScatterPlotItem(size=8)
        self.front = pg.PlotDataItem(stepMode=None)
        self.by_memory.addItem(self.memory_points)
        self.by_memory.addItem(self.front)
        self.points: list[tuple[float, float, float, float]] = []
        """(trial, figure, interval low, interval high) of each measured trial."""
        self.memory: list[tuple[float, float]] = []
        """(peak MiB, figure) of each measured trial with a peak."""
        self.front_points: list[tuple[float, float]] = []
        self.higher = True
        self.set_theme(str(QApplication.instance().property("effiscope_theme") or "light")
                       if QApplication.instance() else "light")

    def set_objective(self, name: str, unit: str, higher: bool) -> None:
        self.higher = higher
        for plot in (self.by_trial, self.by_memory):
            plot.setLabel("left", name, units=unit)
        self.clear()

    def set_theme(self, theme: str) -> None:
        self.theme = theme if theme in THEME else "light"
        background, text, points, front = THEME[self.theme]
        for plot in (self.by_trial, self.by_memory):
            plot.setBackground(background)
            for side in ("left", "bottom"):
                axis = plot.getPlotItem().getAxis(side)
                axis.setPen(text)
                axis.setTextPen(text)
        for item in (self.scatter, self.memory_points):
            item.setBrush(pg.mkBrush(points))
            item.setPen(pg.mkPen(points))
        self.errors.setData(pen=pg.mkPen(text))
        self.front.setPen(pg.mkPen(front, width=2))

    def clear(self) -> None:
        self.points.clear()
        self.memory.clear()
        self.front_points = []
        self.scatter.setData([], [])
        self.memory_points.setData([], [])
        self.front.setData([], [])

    def add(self, row: dict) -> None:
        """A finished trial (profiler.tune.report.trial_row)."""
        if row["error"] or row["value"] is None:
            return
        dist = row["distribution"] or {}
        low = dist.get("ci_low") if dist.get("ci_low") is not None else row["value"]
        high = dist.get("ci_high") if dist.get("ci_high") is not None else row["value"]
        self.points.append((float(row["number"]), float(row["value"]), float(low), float(high)))
        xs = np.array([p[0] for p in self.points])
        ys = np.array([p[1] for p in self.points])
        self.scatter.setData(xs, ys)
        self.errors.setData(x=xs, y=ys, top=np.array([p[3] - p[1] for p in self.points]),
                            bottom=np.array([p[1] - p[2] for p in self.points]))
        if isinstance(row.get("peak_bytes"), (int, float)):
            self.memory.append((row["peak_bytes"] / MIB, float(row["value"])))
            self.memory_points.setData([m for m, _ in self.memory], [v for _, v in self.memory])
            self.front_points = pareto_front(self.memory, self.higher)
            self.front.setData([m for m, _ in self.front_points],
                               [v for _, v in self.front_points])
