"""A run's answer: four headline figures above the tabs, and every figure in the Summary tab.

Both read the run's summary.json (a live run: its latest readings). Percentile figures
(step_time_p50_s / _p90_s / _p99_s) share one row with p50, p90 and p99 in columns; a timed
figure's spread has its own column; how each figure was measured is its tooltip. A compress run
opens with its Original | Compressed | Ratio table (app/compress_table.py), the quality cost in
one sentence above it. The words and units are the metric catalogue's (profiler.figures.metrics).
"""

from __future__ import annotations

import re
from html import escape

from PySide6.QtCore import QEvent, Qt
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QLabel,
    QScrollArea,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.compress_table import CompressTable
from app.controls import figure_table
from profiler.figures import busy
from profiler.figures.metrics import ORDER, format_summary_figure, format_value, metric, spread_text
from profiler.report.sections import headline_keys
from profiler.store import RunStore, StoreError

PERCENTILE = re.compile(r"^(.+)_p(50|90|99)_s$")
COLUMNS = ("Figure", "Value · p50", "p90", "p99", "Spread")
VARIANT = re.compile(r"^baseline_|_ratio$")
"""A compress run's original-model and ratio figures: in the comparison table, not here."""


def figure_rows(figures: dict, compress: bool = False) -> list[dict]:
    """The summary's figures as table rows: {key, label, value, p90, p99, spread, how}; the
    three percentiles of one figure in one row (its p50 as the value)."""
    rows: dict[str, dict] = {}
    for key, fig in figures.items():
        if not isinstance(fig, dict) or (compress and VARIANT.search(key)):
            continue
        found = PERCENTILE.match(key)
        if found:
            stem, q = found[1], found[2]
            base = f"{stem}_s"
            row = rows.setdefault(base, {"key": base, "label": metric(base).label, "value": "",
                                         "p90": "", "p99": "", "spread": "", "how": ""})
            text = format_summary_figure(key, {**fig, "distribution": None})
            row["value" if q == "50" else f"p{q}"] = text
            if q == "50":
                row["spread"] = spread_text(fig)
                row["how"] = str(fig.get("how") or "")
            continue
        rows[key] = {"key": key, "label": metric(key).label,
                     "value": format_summary_figure(key, {**fig, "distribution": None}),
                     "p90": "", "p99": "", "spread": spread_text(fig),
                     "how": str(fig.get("how") or "")}
    return sorted(rows.values(), key=lambda r: ORDER.get(r["key"], len(ORDER)))


def _cell(text: str, tip: str = "", right: bool = False) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
    if tip:
        item.setToolTip(tip)
    if right:
        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return item


CARD_MIN_PX = 132
"""A card's narrowest: a value like "1,470 tokens/s" whole, its label on two lines at most."""


class HeadlineStrip(QFrame):
    """The answer first: the shown run's four headline figures, each readable in full: one
    row, or two rows of two in a narrow column. The rows follow the width alone and the height
    is fixed for them, so figures arriving never move the tabs under the mouse."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("headlineStrip")
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(0, 0, 0, 4)
        self.grid.setHorizontalSpacing(6)
        self.grid.setVerticalSpacing(4)
        self.title = ""
        """The run the cards are of (their tooltip; the history's selection shows it)."""
        self.placeholder = QLabel("The headline figures of the run you pick in the history, or "
                                  "of the one that runs, appear here.")
        self.placeholder.setObjectName("hint")
        self.placeholder.setWordWrap(True)
        self.cards: list[tuple[QLabel, QLabel, QLabel]] = []
        for _ in range(4):
            card = QFrame(self)
            card.setObjectName("headlineCard")
            card.setMinimumWidth(CARD_MIN_PX)
            box = QVBoxLayout(card)  # the label, the value, its spread: narrow enough for 4
            box.setContentsMargins(8, 2, 8, 2)
            box.setSpacing(0)
            label, value, spread = QLabel(), QLabel(), QLabel()
            label.setObjectName("cardLabel")
            label.setWordWrap(True)
            label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
            value.setObjectName("cardValue")
            spread.setObjectName("cardSpread")
            for widget in (label, value, spread):
                box.addWidget(widget)
            box.addStretch(1)
            self.cards.append((label, value, spread))
        self._columns = 0
        self._arrange(4)
        self.show_empty()

    def show_empty(self) -> None:
        """No run picked yet: say where its figures will be."""
        self.title = ""
        self.placeholder.show()
        for label, _value, _spread in self.cards:
            label.parentWidget().hide()

    def _filled(self, title: str) -> None:
        self.placeholder.hide()
        self.title = title

    def _arrange(self, columns: int) -> None:
        """The cards in one row, or two rows of two."""
        if columns == self._columns:
            return
        self._columns = columns
        for index in reversed(range(self.grid.count())):
            self.grid.takeAt(index)
        self.grid.addWidget(self.placeholder, 0, 0, 1, 4)
        for index, (label, _value, _spread) in enumerate(self.cards):
            row, column = (0, index) if columns == 4 else (index // 2, index % 2)
            self.grid.addWidget(label.parentWidget(), row, column)
        for column in range(4):
            self.grid.setColumnStretch(column, 1 if column < columns else 0)
        self._reserve_height()

    def _reserve_height(self) -> None:
        """A fixed height for the rows, whatever the cards hold (or before they hold
        anything): a card's label on two lines, its value, its spread."""
        label, value, spread = self.cards[0]
        lines = (2 * label.fontMetrics().lineSpacing() + value.fontMetrics().lineSpacing()
                 + spread.fontMetrics().lineSpacing())
        margins = label.parentWidget().layout().contentsMargins()
        card = lines + margins.top() + margins.bottom() + 4
        rows = 1 if self._columns == 4 else 2
        self.setFixedHeight(rows * card + (rows - 1) * self.grid.verticalSpacing()
                            + self.grid.contentsMargins().bottom())

    def event(self, event) -> bool:  # noqa: D102 - Qt override: a new font or style sheet
        if event.type() in (QEvent.Type.StyleChange, QEvent.Type.FontChange,
                            QEvent.Type.Polish) and getattr(self, "_columns", 0):
            self._reserve_height()
        return super().event(event)

    def _rearrange(self) -> None:
        width = self.width() if self.isVisible() else self.parentWidget().width() \
            if self.parentWidget() is not None else self.width()
        one_row = 4 * CARD_MIN_PX + 3 * self.grid.horizontalSpacing()
        self._arrange(4 if width >= one_row else 2)

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        self._rearrange()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        self._rearrange()

    def show_figures(self, title: str, figures: dict, compressed: bool = False) -> None:
        """A finished run's headline; a compress run's figures are the compressed model's."""
        keys = headline_keys(figures)
        if not keys:
            self.show_empty()
            return
        self._fill(title, [
            (metric(key).label + (" (compressed)" if compressed and f"baseline_{key}" in figures
                                  else ""),
             format_summary_figure(key, {**figures[key], "distribution": None}),
             spread_text(figures[key]) or " ",
             f"{title}: {figures[key].get('how') or metric(key).description}") for key in keys])

    def show_readings(self, title: str, metrics: dict) -> None:
        """A live run: its latest readings in the same four places."""
        keys = [k for k in ("tokens_per_s", "decode_tokens_per_s", "step_time_s", "ttft_s",
                            "loss_val", "loss_train", "rss_bytes")
                if isinstance(metrics.get(k), (int, float))][:4]
        if not keys:
            return
        self._fill(title, [
            (metric(key).label, format_value(metrics[key], metric(key).unit), "now",
             f"{title}: the latest reading. {metric(key).description}") for key in keys])

    def _fill(self, title: str, cards: list[tuple[str, str, str, str]]) -> None:
        """The cards in order, each (label, value, spread, tooltip); the others hidden."""
        self._filled(title)
        for index, (label, value, spread) in enumerate(self.cards):
            card = label.parentWidget()
            card.setVisible(index < len(cards))
            if index < len(cards):
                label.setText(cards[index][0])
                value.setText(cards[index][1])
                spread.setText(cards[index][2])
                card.setToolTip(cards[index][3])
        self._rearrange()

    def texts(self) -> list[str]:
        """The visible cards as "Label: value (spread)" (tests and screenshots read them)."""
        return [f"{label.text()}: {value.text()}" + (f" ({spread.text()})"
                                                     if spread.text().strip() else "")
                for label, value, spread in self.cards if label.parentWidget().isVisible()]


class SummaryView(QScrollArea):
    """The Summary tab: how the run ended, the compress comparison, every figure."""

    def __init__(self, store: RunStore, parent: QWidget | None = None):
        super().__init__(parent)
        self.store = store
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        host = QWidget()
        layout = QVBoxLayout(host)
        layout.setContentsMargins(0, 4, 0, 0)
        self.note = QLabel("Select a run in the history to see its figures.")
        self.note.setObjectName("summaryNote")
        self.note.setWordWrap(True)
        self.note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.note)
        self.compress = CompressTable()
        layout.addWidget(self.compress)
        self.table = figure_table(COLUMNS, "summaryTable", wrap=False)
        self.table.horizontalHeaderItem(1).setToolTip(
            "The figure; for a timing, its median (p50) with p90 and p99 beside it")
        self.table.horizontalHeaderItem(4).setToolTip(
            "Half the width of the median's 95 % interval, and how many measurements it has")
        layout.addWidget(self.table)
        self.techniques_title = QLabel("What each technique did")
        self.techniques_title.setObjectName("sectionTitle")
        layout.addWidget(self.techniques_title)
        self.techniques = QLabel()
        self.techniques.setWordWrap(True)
        self.techniques.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.techniques)
        for widget in (self.techniques_title, self.techniques):
            widget.hide()
        layout.addStretch(1)
        self.setWidget(host)
        self.run_id: str | None = None
        self.rows: list[dict] = []

    # --- what it shows ----------------------------------------------------------------------------
    def clear(self, note: str = "Select a run in the history to see its figures.") -> None:
        self.run_id = None
        self.note.setText(note)
        self.techniques_title.hide()
        self.techniques.hide()
        self.compress.show_rows({}, "")
        self._fill([])

    def show_run(self, run_id: str | None) -> dict | None:
        """A stored run's summary (None: nothing selected); returns the summary shown."""
        if run_id is None:
            self.clear()
            return None
        self.run_id = run_id
        try:
            run = self.store.open_run(run_id)
        except StoreError as exc:
            self.clear(str(exc))
            return None
        summary = run.summary()
        if summary is None:
            status = run.meta().get("status", "unknown")
            self.clear(f"{run_id}: {status}; no summary yet.")
            self.run_id = run_id
            return None
        note = f"<b>{escape(str(summary.get('status', '?')))}</b>: {escape(str(summary.get('end', '')))}"
        error = summary.get("error")
        if isinstance(error, dict) and error.get("message"):
            note += f"<br><span style='color:#b91c1c'>{escape(str(error.get('message')))}</span>"
        if busy.sentence(summary):  # beside the figures below: measured alone or not
            note += f"<br><span style='color:#b45309'>{escape(busy.sentence(summary))}</span>"
        if busy.load_text(summary):
            note += f"<br>Machine load: {escape(busy.load_text(summary))}"
        self.note.setText(note)
        compress = summary.get("workload") == "compress"
        self.compress.show_rows(summary.get("comparison") if compress else None,
                                str(summary.get("quality_loss") or ""), summary)
        figures = summary.get("figures") if isinstance(summary.get("figures"), dict) else {}
        rows = figure_rows(figures, compress=bool(self.compress.rows))
        reports = [f"<b>{escape(str(item.get('label', item.get('name'))))}</b>: "
                   f"{escape(str(item['report']))}" for item in summary.get("techniques") or []
                   if isinstance(item, dict) and item.get("report")]
        self.techniques.setText("<br>".join(reports))
        self.techniques_title.setVisible(bool(reports))
        self.techniques.setVisible(bool(reports))
        if not figures:  # a run that ended without figures (killed, crashed): its last readings
            rows = [{"key": "", "label": "Samples received",
                     "value": str(summary.get("samples_received", 0)), "p90": "", "p99": "",
                     "spread": "", "how": ""}] + self._last_readings(run)
        self._fill(rows)
        return summary

    def show_live(self, run_id: str, sample: dict) -> None:
        """While the live run is the one shown, its latest readings stand in for a summary."""
        if self.run_id != run_id:
            return
        phase = sample.get("phase", "")
        self.note.setText(f"<b>running</b>: step {sample.get('step')}"
                          + (f" ({phase})" if phase else "") + ", latest readings")
        self.compress.show_rows(None, "")
        rows = []
        for key, value in sample.get("metrics", {}).items():
            if value is None:
                continue  # readings that have no meaning here (GPU figures on a CPU run)
            m = metric(key)
            rows.append({"key": key, "label": m.label, "value": format_value(value, m.unit),
                         "p90": "", "p99": "", "spread": "", "how": m.description})
        self._fill(rows)

    def _last_readings(self, run) -> list[dict]:
        """The last reading of every metric in the stream, and the last step reached."""
        latest: dict[str, object] = {}
        last_step = None
        try:
            for message in run.messages([]):
                if message.get("type") == "sample":
                    last_step = message.get("step")
                    for key, value in (message.get("metrics") or {}).items():
                        if value is not None:
                            latest[key] = value
        except (StoreError, OSError):
            return []
        rows = [{"key": "", "label": "Last step reached", "value": str(last_step), "p90": "",
                 "p99": "", "spread": "", "how": "the last sample's step"}] \
            if last_step is not None else []
        for key, value in latest.items():
            m = metric(key)
            rows.append({"key": key, "label": f"{m.label} (last)",
                         "value": format_value(value, m.unit), "p90": "", "p99": "",
                         "spread": "", "how": "the last reading before the run ended, not a "
                                              "summary figure"})
        return rows

    def _fill(self, rows: list[dict]) -> None:
        self.rows = rows
        self.table.setRowCount(len(rows))
        for index, row in enumerate(rows):
            how = row["how"]
            cells = (_cell(row["label"], f"{row['label']}: {how}" if how else row["label"]),
                     _cell(row["value"], how, right=True), _cell(row["p90"], how, right=True),
                     _cell(row["p99"], how, right=True), _cell(row["spread"], how))
            for column, cell in enumerate(cells):
                self.table.setItem(index, column, cell)
        percentiles = any(r["p90"] or r["p99"] for r in rows)
        self.table.setColumnHidden(2, not percentiles)
        self.table.setColumnHidden(3, not percentiles)
        self.table.setColumnHidden(4, not any(r["spread"] for r in rows))
        self.table.resizeColumnsToContents()
        # The whole table in the tab's own scroll area: every row in view, none cut.
        height = (self.table.horizontalHeader().height() + 2 * self.table.frameWidth()
                  + sum(self.table.rowHeight(r) for r in range(len(rows))))
        self.table.setFixedHeight(height)

    def row_text(self, label: str) -> dict:
        """The shown texts of the row with this label (tests read it)."""
        return next(r for r in self.rows if r["label"] == label)

    def labels(self) -> list[str]:
        return [r["label"] for r in self.rows]
