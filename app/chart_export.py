"""Per-chart export, as buttons on every chart: CSV of every reading of every curve (the live run
and each compared run, never the decimated view) and a PNG of the chart as shown.

A mixin of LiveCharts (app/charts.py).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from PySide6.QtWidgets import QFileDialog

from profiler import files

CSV_COLUMNS = ("run", "metric", "label", "step", "time_s", "value", "unit")


class ChartExport:
    """CSV / PNG of one chart (mixed into LiveCharts)."""

    live_run_label = "live run"
    """How the CSV names the run drawn live (the window sets the run's name)."""

    def ask_export(self, name: str, fmt: str) -> str | None:
        """The CSV / PNG button: ask where, then write; returns the path written (None if not)."""
        title = self.plots[name].chart_title.lower().replace(" ", "-")
        filters = {"csv": "CSV (*.csv)", "png": "PNG image (*.png)"}
        path, _ = QFileDialog.getSaveFileName(self, f"Save the {title} chart",
                                              str(Path.home() / f"effiscope-{title}.{fmt}"),
                                              filters[fmt])
        if not path:
            return None
        try:
            return self.export_csv(name, path) if fmt == "csv" else self.export_png(name, path)
        except OSError as exc:
            self.export_error = f"Cannot write {path} ({exc.strerror})."
            return None

    def export_csv(self, name: str, path: str | Path) -> str:
        """Every reading of every curve on the chart, one row each, in the chart's unit."""
        unit = self.plots[name].y_label
        with files.replacing(path) as fh:  # whole or not at all; never onto a FIFO or device
            writer = csv.writer(fh)
            writer.writerow(CSV_COLUMNS)
            groups = [(self.live_run_label, self._series.values(), True)]
            groups += [(o.label, o.curves.values(), False) for o in self._overlays.values()]
            for run, curves, _live in groups:
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

    def export_png(self, name: str, path: str | Path) -> str:
        """The chart with its header (title, legend) as it is on screen."""
        from PySide6.QtCore import QBuffer, QByteArray, QIODevice

        self.redraw_now()
        data = QByteArray()
        buffer = QBuffer(data)
        buffer.open(QIODevice.OpenModeFlag.WriteOnly)
        if not self.boxes[name].grab().save(buffer, "PNG"):
            raise OSError(5, "the image could not be written", str(path))
        files.write_bytes(path, bytes(data))
        return str(path)
