"""Per-chart export, as buttons on every chart: CSV of every reading of every curve (the live run
and each compared run, never the decimated view) and a PNG of the chart: its plot under a title
line that names the run and the chart and a line with its legend, without the chart's buttons.
Each save says where it went (or why it could not) through the charts' `exported` signal.

A part of LiveCharts (app/charts.py), which owns one as `export`: it reads the charts (their
plots, curves and legends) and writes files; it holds no state of its own.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPixmap
from PySide6.QtWidgets import QFileDialog

from profiler import files

THEME_BACKGROUND = {"light": "#ffffff", "dark": "#0f172a"}
THEME_FOREGROUND = {"light": "#334155", "dark": "#cbd5e1"}

CSV_COLUMNS = ("run", "metric", "label", "step", "time_s", "value", "unit")


class ChartExport:
    """CSV / PNG of one chart of `charts` (a LiveCharts)."""

    def __init__(self, charts) -> None:
        self.charts = charts

    def ask(self, name: str, fmt: str) -> str | None:
        """The CSV / PNG button: ask where, then write; returns the path written (None if not).
        The charts' `exported` says where it went, or why it could not be written."""
        charts = self.charts
        title = charts.plots[name].chart_title.lower().replace(" ", "-")
        run = re.sub(r"[^\w.-]+", "-", charts.live_run_label).strip("-") or "run"
        filters = {"csv": "CSV (*.csv)", "png": "PNG image (*.png)"}
        path, _ = QFileDialog.getSaveFileName(charts, f"Save the {title} chart",
                                              str(Path.home() / f"{run}-{title}.{fmt}"),
                                              filters[fmt])
        if not path:
            return None
        what = "readings" if fmt == "csv" else "image"
        try:
            out = self.csv(name, path) if fmt == "csv" else self.png(name, path)
        except OSError as exc:
            charts.exported.emit(f"Cannot write {path} ({exc.strerror or exc}).", False)
            return None
        charts.exported.emit(f"Saved the {charts.plots[name].chart_title.lower()} chart's "
                             f"{what} to {out}", True)
        return out

    def csv(self, name: str, path: str | Path) -> str:
        """Every reading of every curve on the chart, one row each, in the chart's unit."""
        unit = self.charts.plots[name].y_label
        with files.replacing(path) as fh:  # whole or not at all; never onto a FIFO or device
            writer = csv.writer(fh)
            writer.writerow(CSV_COLUMNS)
            for run, curves in self.charts.curves_by_run():
                for curve in curves:
                    if curve.spec.chart != name or not curve.buffer.size:
                        continue
                    b = curve.buffer
                    for step, time_s, value in zip(b.steps.tolist(), b.times.tolist(),
                                                   b.values.tolist(), strict=True):
                        writer.writerow((run, curve.spec.key, curve.spec.label, f"{step:g}",
                                         "" if math.isnan(time_s) else f"{time_s:.6g}",
                                         "" if math.isnan(value) else f"{value:.8g}", unit))
        return str(path)

    def png_title(self, name: str) -> str:
        """The image's title line: the run and the chart ("nano #3: Throughput, tokens/s")."""
        plot = self.charts.plots[name]
        return f"{self.charts.live_run_label}: {plot.chart_title}, {plot.y_label}"

    def png(self, name: str, path: str | Path) -> str:
        """The plot as on screen under its title (the run's name) and legend; no buttons."""
        charts = self.charts
        charts.redraw_now()
        plot = charts.plots[name].grab()
        legend = charts.legend_text(name).removeprefix(charts.boxes[name].title).strip()
        font = QFont(charts.font())
        metrics = QFontMetrics(font)
        line = metrics.lineSpacing()
        lines = [self.png_title(name)] + ([legend] if legend else [])
        image = QPixmap(plot.width(), plot.height() + line * len(lines) + 8)
        image.fill(QColor(THEME_BACKGROUND.get(charts.theme, "#ffffff")))
        painter = QPainter(image)
        painter.setFont(font)
        painter.setPen(QColor(THEME_FOREGROUND.get(charts.theme, "#334155")))
        for index, text in enumerate(lines):
            painter.drawText(6, 4 + line * index + metrics.ascent(),
                             metrics.elidedText(text, Qt.TextElideMode.ElideRight,
                                                plot.width() - 12))
        painter.drawPixmap(0, line * len(lines) + 8, plot)
        painter.end()
        from PySide6.QtCore import QBuffer, QByteArray, QIODevice

        data = QByteArray()
        buffer = QBuffer(data)
        buffer.open(QIODevice.OpenModeFlag.WriteOnly)
        if not image.save(buffer, "PNG"):
            raise OSError(5, "the image could not be encoded", str(path))
        files.write_bytes(path, bytes(data))  # onto a regular file or a new path only
        return str(path)
