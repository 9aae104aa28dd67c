"""A compress run's answer as the HTML report gives it: the quality cost in one sentence, then
Original | Compressed | Ratio per measure, the ratio with its 95 % interval and a verdict.

The rows are the summary's `comparison` (the worker's, as the report reads them); the texts are
profiler.report.recommend's (compression_cells, compression_cost), so the app and the report
say the same thing.
"""

from __future__ import annotations

from types import SimpleNamespace

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QLabel,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.controls import figure_table
from profiler.figures.metrics import metric
from profiler.report.recommend import compression_cells, compression_cost

COLUMNS = ("Measure", "Original", "Compressed", "Ratio")
RATIO_TIP = ("Compressed / original, with the 95 % interval of the ratio where both models were "
             "timed often enough, and the verdict: better or worse when the interval clears 1, "
             "within noise when it does not")
BETTER, WORSE, NEUTRAL = "#15803d", "#b91c1c", "#64748b"


def verdict(row: dict) -> tuple[str, str, str]:
    """(word, colour, why) for one comparison row: better / worse when the ratio's interval
    clears 1 ("" when it does not: the ratio cell already says "within noise"); a count is
    exact; a quality figure is one evaluation, without an interval."""
    interval = row.get("vs_baseline")
    better = row.get("better") or metric(str(row.get("key"))).better
    ratio = row.get("ratio")
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool):
        return "", NEUTRAL, "no ratio: the original's figure is zero or missing"
    direction = None if ratio == 1 or better is None else (better == "lower") == (ratio < 1)
    if isinstance(interval, dict):
        if not interval.get("significant"):
            return "", NEUTRAL, "the ratio's 95 % interval contains 1: within noise"
        return ("better" if direction else "worse"), BETTER if direction else WORSE, \
            f"{interval.get('verdict', '')}: the 95 % interval of the ratio clears 1"
    if metric(str(row.get("key"))).unit in ("bytes", "parameters", "fraction"):
        color = NEUTRAL if direction is None else BETTER if direction else WORSE
        return "", color, "counted from the tensors: exact, no noise"
    return "", NEUTRAL, "one evaluation of each model: no interval"


COUNT_UNITS = (" parameters",)
"""Said once, by the measure's name ("Parameters 858,880")."""


def _bare(text: str) -> str:
    for unit in COUNT_UNITS:
        text = text.removesuffix(unit)
    return text


def cost_sentence(summary: dict) -> str:
    """The quality cost in one sentence ("Perplexity went from 227.593 to 227.575 (-0.0 %) for
    weights at 33% of the original bytes."), "" when the run measured no perplexity."""
    rec = compression_cost(SimpleNamespace(summary=summary))
    detail = rec["detail"] if rec is not None else str(summary.get("quality_loss") or "")
    end = min((i for i in (detail.find(". "), detail.find("; ")) if i >= 0), default=-1)
    return detail[:end] + "." if end >= 0 else detail


class CompressTable(QWidget):
    """Hidden unless the shown run is a compress run with a comparison."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 6)
        self.title = QLabel("Original against compressed")
        self.title.setObjectName("sectionTitle")
        layout.addWidget(self.title)
        self.cost = QLabel()
        self.cost.setObjectName("qualityCost")
        self.cost.setWordWrap(True)
        self.cost.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.cost)
        self.table = figure_table(COLUMNS, "compressTable", wrap=True)
        self.table.horizontalHeaderItem(3).setToolTip(RATIO_TIP)
        layout.addWidget(self.table)
        self.rows: list[tuple[str, ...]] = []
        self.hide()

    def show_rows(self, comparison: list | None, quality_loss: str, summary: dict | None = None
                  ) -> None:
        rows = [r for r in comparison or [] if isinstance(r, dict) and isinstance(r.get("key"),
                                                                                   str)]
        if not rows:
            self.rows = []
            self.table.setRowCount(0)
            self.hide()
            return
        sentence = cost_sentence(summary or {"comparison": rows})
        self.cost.setText(f"<b>Quality cost:</b> {sentence}" if sentence else "")
        self.cost.setToolTip(quality_loss)
        self.cost.setVisible(bool(sentence))
        self.rows = []
        self.table.setRowCount(len(rows))
        for index, row in enumerate(rows):
            label, original, compressed, ratio = compression_cells(row["key"], row)
            word, color, why = verdict(row)
            how = str(row.get("how") or "")
            ratio, _comma, noise = ratio.partition(", ")  # the verdict on a line of its own
            second = word or noise
            texts = (label, _bare(original), _bare(compressed),
                     f"{ratio}\n{second}" if second else ratio)
            self.rows.append(texts)
            for column, text in enumerate(texts):
                item = QTableWidgetItem(text)
                item.setFlags(Qt.ItemFlag.ItemIsEnabled)
                item.setToolTip(f"{how}\n{why}" if column == 3 else how)
                if column:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight
                                          | Qt.AlignmentFlag.AlignVCenter)
                if column == 3:
                    item.setForeground(QColor(color))
                self.table.setItem(index, column, item)
        self.table.resizeColumnsToContents()
        self.table.resizeRowsToContents()
        self.table.setFixedHeight(self.table.horizontalHeader().height()
                                  + 2 * self.table.frameWidth()
                                  + sum(self.table.rowHeight(r) for r in range(len(rows))))
        self.show()

    def row(self, label: str) -> tuple[str, ...]:
        """The shown texts of one measure's row (tests read them)."""
        return next(r for r in self.rows if r[0] == label)
