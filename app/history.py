"""The run history: every stored run in a table, and the chosen run's summary figures.

It reads the run store only (index rows, summary.json, stream.jsonl), so a run from the CLI or
from an earlier session shows the same way as the one just finished.
"""

from __future__ import annotations

from datetime import datetime, timezone

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from profiler.metrics import CATALOGUE, format_value, metric
from profiler.store import RunStore, StoreError

# Units sit in the headers so the cells stay narrow enough for a side panel.
COLUMNS = ("Run", "Status", "Model", "Speed\ntokens/s", "Val loss\nnats/token")
STATUS_COLORS = {"completed": "#15803d", "stopped": "#a16207", "running": "#2563eb",
                 "failed": "#b91c1c", "killed": "#b91c1c", "crashed": "#b91c1c"}
RUN_ID_ROLE = Qt.ItemDataRole.UserRole


def figure_label(key: str) -> str:
    """A summary figure's key as words: "step_time_p50_s" -> "Step time p50"."""
    for suffix in ("_bytes", "_s"):
        if key.endswith(suffix):
            key = key[: -len(suffix)]
            break
    words = ["RSS" if word == "rss" else "FLOPs" if word == "flops" else word
             for word in key.split("_")]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


def _when(created: str) -> str:
    """The store's UTC stamp as local time: "14:05" today, "11-28 14:05" before."""
    try:
        stamp = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return ""
    local = stamp.astimezone()
    if local.date() == datetime.now().astimezone().date():
        return local.strftime("%H:%M")
    return local.strftime("%m-%d %H:%M")


def _bare(value: object, unit: str) -> str:
    """A figure without its unit, for a column whose header carries the unit."""
    return format_value(value, unit).removesuffix(f" {unit}")


def _cell(text: str, tooltip: str = "", align_right: bool = False) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setFlags(Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled)
    if tooltip:
        item.setToolTip(tooltip)
    if align_right:
        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return item


class HistoryPanel(QWidget):
    """Past runs, newest first; `show_on_charts` asks the window to draw a stored run."""

    show_on_charts = Signal(str)

    def __init__(self, store: RunStore, parent: QWidget | None = None):
        super().__init__(parent)
        self.store = store
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        title = QLabel("Run history")
        title.setObjectName("sectionTitle")
        layout.addWidget(title)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("historyTable")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.table.itemDoubleClicked.connect(lambda _item: self._ask_show())
        layout.addWidget(self.table, 3)

        buttons = QHBoxLayout()
        self.show_button = QPushButton("Show on charts")
        self.show_button.setToolTip("Draw the selected run's stored samples on the charts")
        self.show_button.setEnabled(False)
        self.show_button.clicked.connect(self._ask_show)
        buttons.addStretch(1)
        buttons.addWidget(self.show_button)
        layout.addLayout(buttons)

        summary_title = QLabel("Summary")
        summary_title.setObjectName("sectionTitle")
        layout.addWidget(summary_title)
        self.summary_note = QLabel("Select a run to see its figures.")
        self.summary_note.setWordWrap(True)
        self.summary_note.setObjectName("summaryNote")
        layout.addWidget(self.summary_note)
        self.summary = QTableWidget(0, 2)
        self.summary.setObjectName("summaryTable")
        self.summary.setHorizontalHeaderLabels(("Figure", "Value"))
        self.summary.verticalHeader().setVisible(False)
        self.summary.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.summary.setWordWrap(False)
        summary_header = self.summary.horizontalHeader()
        summary_header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        summary_header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        layout.addWidget(self.summary, 4)

    # --- list -----------------------------------------------------------------------------------
    def refresh(self, select_id: str | None = None) -> None:
        """Reload the rows from the store, keeping (or moving to) a selected run."""
        keep = select_id or self.selected_run_id()
        try:
            rows = self.store.list_runs()
        except (StoreError, OSError) as exc:
            self.summary_note.setText(f"The run history cannot be read: {exc}")
            rows = []
        self.table.blockSignals(True)
        self.table.setRowCount(len(rows))
        selected_row = -1
        for index, row in enumerate(rows):
            status = str(row.get("status") or "unknown")
            name = _cell(f"{row.get('name') or row['id']}  {_when(row.get('created', ''))}",
                         f"{row['id']}\ncreated {row.get('created', '')}")
            name.setData(RUN_ID_ROLE, row["id"])
            status_item = _cell(status)
            status_item.setForeground(QColor(STATUS_COLORS.get(status, "#334155")))
            steps = row.get("steps")
            model_tip = f"{steps} steps" if steps is not None else ""
            cells = (
                name,
                status_item,
                _cell(str(row.get("model") or "?"), model_tip),
                _cell(_bare(row.get("tokens_per_s"), "tokens/s"), align_right=True),
                _cell(_bare(row.get("loss_val_final"), "nats/token"), align_right=True),
            )
            for column, cell in enumerate(cells):
                self.table.setItem(index, column, cell)
            if row["id"] == keep:
                selected_row = index
        self.table.blockSignals(False)
        if selected_row >= 0:
            self.table.selectRow(selected_row)
        else:
            self.table.clearSelection()
        self._selection_changed()

    def run_ids(self) -> list[str]:
        return [self.table.item(r, 0).data(RUN_ID_ROLE) for r in range(self.table.rowCount())]

    def row_status(self, run_id: str) -> str | None:
        for r in range(self.table.rowCount()):
            if self.table.item(r, 0).data(RUN_ID_ROLE) == run_id:
                return self.table.item(r, 1).text()
        return None

    def selected_run_id(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return self.table.item(rows[0].row(), 0).data(RUN_ID_ROLE)

    def _ask_show(self) -> None:
        run_id = self.selected_run_id()
        if run_id:
            self.show_on_charts.emit(run_id)

    # --- summary --------------------------------------------------------------------------------
    def _selection_changed(self) -> None:
        run_id = self.selected_run_id()
        self.show_button.setEnabled(run_id is not None)
        self.summary.setRowCount(0)
        if run_id is None:
            self.summary_note.setText("Select a run to see its figures.")
            return
        try:
            run = self.store.open_run(run_id)
        except StoreError as exc:
            self.summary_note.setText(str(exc))
            return
        summary = run.summary()
        if summary is None:
            status = run.meta().get("status", "unknown")
            self.summary_note.setText(f"{run_id}: {status}; no summary yet.")
            return
        note = f"<b>{summary.get('status', '?')}</b>: {summary.get('end', '')}"
        error = summary.get("error")
        if isinstance(error, dict) and error.get("message"):
            note += f"<br><span style='color:#b91c1c'>{error.get('message')}</span>"
        self.summary_note.setText(note)
        figures = summary.get("figures") or {}
        rows = []
        for key, figure in figures.items():
            if not isinstance(figure, dict):
                continue
            unit = figure.get("unit") or metric(key).unit
            label = metric(key).label if key in CATALOGUE else figure_label(key)
            rows.append((label, format_value(figure.get("value"), unit), figure.get("how", "")))
        if not rows:
            rows.append(("samples received", str(summary.get("samples_received", 0)), ""))
        self._fill_summary(rows)

    def _fill_summary(self, rows: list[tuple[str, str, str]]) -> None:
        self.summary.setRowCount(len(rows))
        for index, (label, value, how) in enumerate(rows):
            self.summary.setItem(index, 0, _cell(label, how))
            self.summary.setItem(index, 1, _cell(value, how, align_right=True))

    def show_live(self, run_id: str, sample: dict) -> None:
        """While the selected run is the live one, its latest readings stand in for a summary."""
        if self.selected_run_id() != run_id:
            return
        phase = sample.get("phase", "")
        self.summary_note.setText(f"<b>running</b>: step {sample.get('step')}"
                                  + (f" ({phase})" if phase else "") + ", latest readings")
        rows = []
        for key, value in sample.get("metrics", {}).items():
            if value is None:
                continue  # readings that have no meaning here (GPU figures on a CPU run)
            m = metric(key)
            rows.append((m.label, format_value(value, m.unit), m.description))
        self._fill_summary(rows)

