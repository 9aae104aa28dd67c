"""The run history: every stored run, searchable, renamable, taggable, deletable, comparable.

It reads the run store only (index rows, summary.json, stream.jsonl), so a run from the CLI or
from an earlier session shows the same way as the one just finished. Ticking runs lays them over
the charts and fills the comparison; selecting one shows its summary figures.
"""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMenu,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from profiler.figures import busy
from profiler.figures.metrics import format_summary_figure, format_value, metric
from profiler.store import RunStore, StoreError

# Units sit in the headers so the cells stay narrow enough for a side panel.
COLUMNS = ("Run", "Status", "Speed\ntokens/s", "Val loss\nnats/token")
STATUS_COLORS = {"completed": "#15803d", "stopped": "#a16207", "running": "#2563eb",
                 "failed": "#b91c1c", "killed": "#b91c1c", "crashed": "#b91c1c"}
RUN_ID_ROLE = Qt.ItemDataRole.UserRole


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


def matches(row: dict, query: str) -> bool:
    """Every word of the query appears in the run's id, name, model, status, workload or tags."""
    haystack = " ".join(str(row.get(k) or "") for k in ("id", "name", "model", "status",
                                                         "workload", "device"))
    haystack = (haystack + " " + " ".join(row.get("tags") or [])).lower()
    return all(word in haystack for word in query.lower().split())


class HistoryPanel(QWidget):
    """Past runs, newest first. Signals: show a run, the ticked runs changed, a run deleted."""

    show_on_charts = Signal(str)
    compare_changed = Signal(list)
    run_deleted = Signal(str)
    run_renamed = Signal(str, str)

    def __init__(self, store: RunStore, parent: QWidget | None = None):
        super().__init__(parent)
        self.store = store
        self.live_run_id: str | None = None
        """The run in progress: it cannot be deleted."""
        self._rows: list[dict] = []
        self._checked: list[str] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        title = QLabel("Run history")
        title.setObjectName("sectionTitle")
        layout.addWidget(title)
        self.search = QLineEdit()
        self.search.setObjectName("historySearch")
        self.search.setPlaceholderText("Search name, id, model, tag…")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(lambda _t: self._fill())
        layout.addWidget(self.search)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("historyTable")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._context_menu)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column, width in ((1, 72), (2, 66), (3, 78)):  # the name gets the rest
            header.resizeSection(column, width)
        policy = self.table.sizePolicy()
        policy.setHorizontalPolicy(QSizePolicy.Policy.Ignored)
        self.table.setSizePolicy(policy)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.table.itemChanged.connect(self._item_changed)
        self.table.itemDoubleClicked.connect(lambda _item: self._ask_show())
        self.table.setToolTip("Tick runs to lay them over the charts and compare them; "
                              "double-click one to draw it")
        layout.addWidget(self.table, 3)

        buttons = QHBoxLayout()
        buttons.setSpacing(4)
        self.show_button = self._button("Show", "Draw the selected run's stored samples",
                                        self._ask_show)
        self.rename_button = self._button("Rename…", "Give the selected run a new name",
                                          self._ask_rename)
        self.tags_button = self._button("Tags…", "Set the selected run's tags (comma-separated)",
                                        self._ask_tags)
        self.delete_button = self._button("Delete…", "Delete the selected run and its files",
                                          self._ask_delete)
        for button in (self.show_button, self.rename_button, self.tags_button, self.delete_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout.addLayout(buttons)

        summary_title = QLabel("Summary")
        summary_title.setObjectName("sectionTitle")
        layout.addWidget(summary_title)
        self.summary_note = QLabel("Select a run to see its figures.")
        self.summary_note.setWordWrap(True)
        self.summary_note.setObjectName("summaryNote")
        self.summary_note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.summary_note)
        self.summary = QTableWidget(0, 2)
        self.summary.setObjectName("summaryTable")
        self.summary.setHorizontalHeaderLabels(("Figure", "Value"))
        self.summary.verticalHeader().setVisible(False)
        self.summary.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.summary.setWordWrap(False)
        self.summary.setTextElideMode(Qt.TextElideMode.ElideRight)
        summary_header = self.summary.horizontalHeader()
        summary_header.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        summary_header.resizeSection(0, 150)
        summary_header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        layout.addWidget(self.summary, 4)

    def _button(self, text: str, tip: str, slot) -> QPushButton:
        button = QPushButton(text)
        button.setObjectName("smallButton")
        button.setToolTip(tip)
        button.setEnabled(False)
        button.clicked.connect(slot)
        return button

    # --- list -----------------------------------------------------------------------------------
    def refresh(self, select_id: str | None = None) -> None:
        """Reload the rows from the store, keeping (or moving to) a selected run."""
        keep = select_id or self.selected_run_id()
        try:
            self._rows = self.store.list_runs()
        except (StoreError, OSError) as exc:
            self.summary_note.setText(f"The run history cannot be read: {exc}")
            self._rows = []
        known = {row["id"] for row in self._rows}
        gone = [run_id for run_id in self._checked if run_id not in known]
        self._checked = [run_id for run_id in self._checked if run_id in known]
        self._fill(keep)
        if gone:
            self.compare_changed.emit(list(self._checked))

    def _fill(self, keep: str | None = None) -> None:
        keep = keep or self.selected_run_id()
        query = self.search.text().strip()
        rows = [row for row in self._rows if not query or matches(row, query)]
        self.table.blockSignals(True)
        self.table.setRowCount(len(rows))
        selected_row = -1
        for index, row in enumerate(rows):
            status = str(row.get("status") or "unknown")
            tags = row.get("tags") or []
            label = f"{row.get('name') or row['id']}  {_when(row.get('created', ''))}"
            if tags:
                label += "  [" + ", ".join(tags) + "]"
            steps = row.get("steps")
            name = _cell(label, f"{row['id']}\n{row.get('workload') or 'train'} of "
                         f"{row.get('model') or '?'} on {row.get('device') or '?'}"
                         + (f", {steps} steps" if steps else "")
                         + f"\ncreated {row.get('created', '')}"
                         + (f"\ntags: {', '.join(tags)}" if tags else ""))
            name.setData(RUN_ID_ROLE, row["id"])
            name.setFlags(name.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            name.setCheckState(Qt.CheckState.Checked if row["id"] in self._checked
                               else Qt.CheckState.Unchecked)
            status_item = _cell(status)
            status_item.setForeground(QColor(STATUS_COLORS.get(status, "#64748b")))
            cells = (name, status_item,
                     _cell(_bare(row.get("tokens_per_s"), "tokens/s"), align_right=True),
                     _cell(_bare(row.get("loss_val_final"), "nats/token"), align_right=True))
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

    def row_of(self, run_id: str) -> int:
        return next((r for r in range(self.table.rowCount())
                     if self.table.item(r, 0).data(RUN_ID_ROLE) == run_id), -1)

    def row_status(self, run_id: str) -> str | None:
        row = self.row_of(run_id)
        return self.table.item(row, 1).text() if row >= 0 else None

    def run_name(self, run_id: str) -> str:
        return next((str(r.get("name") or run_id) for r in self._rows if r["id"] == run_id), run_id)

    def selected_run_id(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return self.table.item(rows[0].row(), 0).data(RUN_ID_ROLE)

    def select(self, run_id: str) -> None:
        row = self.row_of(run_id)
        if row >= 0:
            self.table.selectRow(row)

    # --- compare ticks --------------------------------------------------------------------------
    def checked_run_ids(self) -> list[str]:
        return list(self._checked)

    def set_checked(self, run_id: str, checked: bool) -> None:
        row = self.row_of(run_id)
        if row >= 0:
            self.table.item(row, 0).setCheckState(Qt.CheckState.Checked if checked
                                                  else Qt.CheckState.Unchecked)

    def uncheck_all(self) -> None:
        """Untick every run (Clear comparison); one compare_changed for all of them."""
        self.table.blockSignals(True)
        for row in range(self.table.rowCount()):
            self.table.item(row, 0).setCheckState(Qt.CheckState.Unchecked)
        self.table.blockSignals(False)
        if self._checked:
            self._checked = []
            self.compare_changed.emit([])

    def _item_changed(self, item: QTableWidgetItem) -> None:
        if item.column() != 0:
            return
        run_id = item.data(RUN_ID_ROLE)
        checked = item.checkState() == Qt.CheckState.Checked
        if checked and run_id not in self._checked:
            self._checked.append(run_id)
        elif not checked and run_id in self._checked:
            self._checked.remove(run_id)
        else:
            return
        self.compare_changed.emit(list(self._checked))

    # --- actions --------------------------------------------------------------------------------
    def _ask_show(self) -> None:
        run_id = self.selected_run_id()
        if run_id:
            self.show_on_charts.emit(run_id)

    def _ask_rename(self) -> None:
        run_id = self.selected_run_id()
        if not run_id:
            return
        name, ok = QInputDialog.getText(self, "Rename run", f"New name for {run_id}:",
                                        text=self.run_name(run_id))
        if ok and name.strip():
            self.rename_run(run_id, name.strip())

    def rename_run(self, run_id: str, name: str) -> None:
        if self._store_action(lambda: self.store.rename(run_id, name), run_id):
            self.run_renamed.emit(run_id, name)

    def _ask_tags(self) -> None:
        run_id = self.selected_run_id()
        if not run_id:
            return
        current = next((r.get("tags") or [] for r in self._rows if r["id"] == run_id), [])
        text, ok = QInputDialog.getText(self, "Tags", f"Tags for {run_id}, separated by commas:",
                                        text=", ".join(current))
        if ok:
            self.set_tags(run_id, [t.strip() for t in text.split(",") if t.strip()])

    def set_tags(self, run_id: str, tags: list[str]) -> None:
        self._store_action(lambda: self.store.set_tags(run_id, tags), run_id)

    def _ask_delete(self) -> None:
        run_id = self.selected_run_id()
        if not run_id:
            return
        answer = QMessageBox.question(
            self, "Delete run", f"Delete run “{self.run_name(run_id)}” ({run_id}) and all its "
            "files (stream, summary, log, trace)? This cannot be undone.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Cancel)
        if answer == QMessageBox.StandardButton.Yes:
            self.delete_run(run_id)

    def delete_run(self, run_id: str) -> bool:
        if run_id == self.live_run_id:
            self.summary_note.setText("This run is in progress: stop it before deleting it.")
            return False
        if not self._store_action(lambda: self.store.delete_run(run_id), None):
            return False
        self.run_deleted.emit(run_id)
        return True

    def _store_action(self, action, select_id: str | None) -> bool:
        try:
            action()
        except (StoreError, OSError) as exc:
            self.summary_note.setText(f"Could not change the run: {exc}")
            return False
        self.refresh(select_id=select_id)
        return True

    def _context_menu(self, position) -> None:
        if self.selected_run_id() is None:
            return
        menu = QMenu(self)
        for text, slot in (("Show on charts", self._ask_show), ("Rename…", self._ask_rename),
                           ("Tags…", self._ask_tags), ("Delete…", self._ask_delete)):
            menu.addAction(text, slot)
        menu.exec(self.table.viewport().mapToGlobal(position))

    # --- summary --------------------------------------------------------------------------------
    def _selection_changed(self) -> None:
        run_id = self.selected_run_id()
        for button in (self.show_button, self.rename_button, self.tags_button):
            button.setEnabled(run_id is not None)
        self.delete_button.setEnabled(run_id is not None and run_id != self.live_run_id)
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
        if busy.sentence(summary):  # beside the figures below: measured alone or not
            note += f"<br><span style='color:#b45309'>{escape(busy.sentence(summary))}</span>"
        if busy.load_text(summary):
            note += f"<br>Machine load: {escape(busy.load_text(summary))}"
        self.summary_note.setText(note)
        rows = []
        for key, figure in (summary.get("figures") or {}).items():
            if not isinstance(figure, dict):
                continue
            rows.append((metric(key).label, format_summary_figure(key, figure),
                         figure.get("how", "")))
        for item in summary.get("techniques") or []:
            if isinstance(item, dict) and item.get("report"):
                rows.append((str(item.get("label", item.get("name"))), str(item["report"]), ""))
        if not rows:  # a run that ended without figures (killed, crashed): its last readings
            rows = self._last_readings(run)
            rows.insert(0, ("Samples received", str(summary.get("samples_received", 0)), ""))
        self._fill_summary(rows)

    def _last_readings(self, run) -> list[tuple[str, str, str]]:
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
        rows = [("Last step reached", str(last_step), "the last sample's step")] \
            if last_step is not None else []
        for key, value in latest.items():
            m = metric(key)
            rows.append((f"{m.label} (last)", format_value(value, m.unit),
                         "the last reading before the run ended, not a summary figure"))
        return rows

    def _fill_summary(self, rows: list[tuple[str, str, str]]) -> None:
        self.summary.setRowCount(len(rows))
        for index, (label, value, how) in enumerate(rows):
            self.summary.setItem(index, 0, _cell(label, how))
            self.summary.setItem(index, 1, _cell(value, how or value, align_right=True))

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
