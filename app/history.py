"""The run history: every stored run, searchable, renamable, taggable, deletable, comparable.

It reads the run store only (index rows, summary.json, stream.jsonl), so a run from the CLI or
from an earlier session shows the same way as the one just finished. Ticking runs lays them over
the charts and fills the comparison; selecting one shows its summary figures.
"""

from __future__ import annotations

from html import escape

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
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
    QToolButton,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.run_table import COLUMNS, RUN_ID_ROLE, RunTable
from profiler import contention
from profiler.metrics import format_summary_figure, format_value, metric
from profiler.store import RunStore, StoreError


def _cell(text: str, tooltip: str = "", align_right: bool = False) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setFlags(Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled)
    if tooltip:
        item.setToolTip(tooltip)
    if align_right:
        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return item


class HistoryPanel(QWidget):
    """Past runs in a table the user arranges. Signals: show a run (a click on its row), the
    ticked runs changed, a run deleted or renamed, load a run's settings into the form."""

    show_on_charts = Signal(str)
    compare_changed = Signal(list)
    run_deleted = Signal(str)
    run_renamed = Signal(str, str)
    load_settings = Signal(str)

    def __init__(self, store: RunStore, parent: QWidget | None = None):
        super().__init__(parent)
        self.store = store
        self.live_run_id: str | None = None
        """The run in progress: it cannot be deleted."""
        self._rows: list[dict] = []
        self._checked: list[str] = []
        self._filling = False
        self._ticked: str | None = None
        """The run whose tick the last click changed (that click does not draw it)."""
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        title_row = QHBoxLayout()
        title = QLabel("Run history")
        title.setObjectName("sectionTitle")
        title_row.addWidget(title, 1)
        self.columns_button = QToolButton()
        self.columns_button.setObjectName("columnsButton")
        self.columns_button.setText("Columns")
        self.columns_button.setToolTip("Choose the columns of the run table (or right-click its "
                                       "header); drag a header to move a column, its edge to "
                                       "size it, click it to sort")
        self.columns_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.columns_menu = QMenu(self)
        self.columns_button.setMenu(self.columns_menu)
        self.columns_menu.aboutToShow.connect(self._fill_columns_menu)
        title_row.addWidget(self.columns_button)
        layout.addLayout(title_row)
        self.search = QLineEdit()
        self.search.setObjectName("historySearch")
        self.search.setPlaceholderText("Search name, id, model, technique, tag…")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(lambda _t: self._fill())
        layout.addWidget(self.search)

        self.table = RunTable(store)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._context_menu)
        self.table.header().customContextMenuRequested.connect(self._header_menu)
        policy = self.table.sizePolicy()
        policy.setHorizontalPolicy(QSizePolicy.Policy.Ignored)
        self.table.setSizePolicy(policy)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.table.itemChanged.connect(self._item_changed)
        self.table.itemClicked.connect(self._item_clicked)
        self.table.setToolTip("Click a run to draw it; tick runs to lay them over the charts and "
                              "compare them; Ctrl- or Shift-click to select several")
        layout.addWidget(self.table, 3)

        buttons = QHBoxLayout()
        buttons.setSpacing(4)
        self.load_button = self._button("Load settings", "Put the selected run's settings into "
                                        "the form, to run it again or change it",
                                        self._ask_load)
        self.rename_button = self._button("Rename…", "Give the selected run a new name",
                                          self._ask_rename)
        self.tags_button = self._button("Tags…", "Set the selected run's tags (comma-separated)",
                                        self._ask_tags)
        self.delete_button = self._button("Delete…", "Delete the selected runs and their files "
                                          "(Delete key)", self._ask_delete)
        for button in (self.load_button, self.rename_button, self.tags_button,
                       self.delete_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        from PySide6.QtGui import QKeySequence, QShortcut

        delete_key = QShortcut(QKeySequence(QKeySequence.StandardKey.Delete), self.table)
        delete_key.setContext(Qt.ShortcutContext.WidgetShortcut)
        delete_key.activated.connect(self._ask_delete)

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

    # --- columns --------------------------------------------------------------------------------
    def _fill_columns_menu(self, menu: QMenu | None = None) -> QMenu:
        menu = menu or self.columns_menu
        menu.clear()
        for column in COLUMNS[1:]:
            action = menu.addAction(column.title.split(",")[0])
            action.setCheckable(True)
            action.setChecked(self.table.column_shown(column.key))
            action.setToolTip(column.tip)
            action.toggled.connect(lambda on, k=column.key: self.table.show_column(k, on))
        return menu

    def _header_menu(self, position) -> None:
        menu = self._fill_columns_menu(QMenu(self))
        menu.exec(self.table.header().mapToGlobal(position))

    # --- list -----------------------------------------------------------------------------------
    def refresh(self, select_id: str | None = None) -> None:
        """Reload the rows from the store, keeping (or moving to) the selected runs."""
        keep = [select_id] if select_id else self.table.selected_ids()
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

    def _fill(self, keep: list[str] | None = None) -> None:
        keep = self.table.selected_ids() if keep is None else keep
        self._filling = True
        self.table.blockSignals(True)
        try:
            self.table.fill(self._rows, self._checked, self.search.text().strip())
            self.table.clearSelection()
            current = None
            for run_id in keep:
                item = self.table.reveal(run_id)
                if item is not None:
                    item.setSelected(True)
                    current = current or item
            if current is not None:
                self.table.setCurrentItem(current, 0,
                                          self.table.selectionModel().SelectionFlag.NoUpdate)
        finally:
            self.table.blockSignals(False)
            self._filling = False
        self._selection_changed(user=False)

    def run_ids(self) -> list[str]:
        return self.table.run_ids()

    def row_of(self, run_id: str) -> QTreeWidgetItem | None:
        return self.table.item_of(run_id)

    def row_status(self, run_id: str) -> str | None:
        return self.table.cell(run_id, "status") or None

    def run_name(self, run_id: str) -> str:
        return next((str(r.get("name") or run_id) for r in self._rows if r["id"] == run_id), run_id)

    def selected_run_id(self) -> str | None:
        """The one selected run (None when none or several are)."""
        ids = self.table.selected_ids()
        return ids[0] if len(ids) == 1 else None

    def select(self, run_id: str) -> None:
        """Select one run, as a click on its row does (it is drawn on the charts)."""
        item = self.table.reveal(run_id)
        if item is not None:
            self.table.setCurrentItem(item)

    # --- compare ticks --------------------------------------------------------------------------
    def checked_run_ids(self) -> list[str]:
        return list(self._checked)

    def set_checked(self, run_id: str, checked: bool) -> None:
        item = self.table.item_of(run_id)
        if item is not None:
            item.setCheckState(0, Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)

    def uncheck_all(self) -> None:
        """Untick every run (Clear comparison); one compare_changed for all of them."""
        self.table.blockSignals(True)
        for item in self.table.items():
            if item.data(0, RUN_ID_ROLE):
                item.setCheckState(0, Qt.CheckState.Unchecked)
        self.table.blockSignals(False)
        if self._checked:
            self._checked = []
            self.compare_changed.emit([])

    def _item_changed(self, item: QTreeWidgetItem, column: int) -> None:
        run_id = item.data(0, RUN_ID_ROLE)
        if column != 0 or not run_id:
            return
        checked = item.checkState(0) == Qt.CheckState.Checked
        self._ticked = run_id
        if checked and run_id not in self._checked:
            self._checked.append(run_id)
        elif not checked and run_id in self._checked:
            self._checked.remove(run_id)
        else:
            return
        self.compare_changed.emit(list(self._checked))

    def _item_clicked(self, item: QTreeWidgetItem, column: int) -> None:
        run_id = item.data(0, RUN_ID_ROLE)
        ticked, self._ticked = self._ticked, None
        if ticked == run_id:
            return  # a click on the tick box compares the run; it does not draw it alone
        modifiers = QApplication.keyboardModifiers()
        if run_id and self.selected_run_id() == run_id and not modifiers & (
                Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier):
            self.show_on_charts.emit(run_id)

    # --- actions --------------------------------------------------------------------------------
    def _ask_load(self) -> None:
        run_id = self.selected_run_id()
        if run_id:
            self.load_settings.emit(run_id)

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
        run_ids = [r for r in self.table.selected_ids() if r != self.live_run_id]
        if not run_ids:
            return
        what = (f"run “{self.run_name(run_ids[0])}” ({run_ids[0]})" if len(run_ids) == 1
                else f"{len(run_ids)} runs")
        answer = QMessageBox.question(
            self, "Delete runs" if len(run_ids) > 1 else "Delete run",
            f"Delete {what} and all their files (stream, summary, log, trace)? This cannot be "
            "undone.", QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Cancel)
        if answer == QMessageBox.StandardButton.Yes:
            self.delete_runs(run_ids)

    def delete_run(self, run_id: str) -> bool:
        return self.delete_runs([run_id]) == [run_id]

    def delete_runs(self, run_ids: list[str]) -> list[str]:
        """Delete runs and their folders (never the live one); the ids deleted."""
        deleted, problems = [], []
        for run_id in run_ids:
            if run_id == self.live_run_id:
                problems.append("the run in progress is kept: stop it before deleting it")
                continue
            try:
                self.store.delete_run(run_id)
            except (StoreError, OSError) as exc:
                problems.append(f"{run_id} could not be deleted: {exc}")
                continue
            self.table.details.forget(run_id)
            deleted.append(run_id)
        if deleted:
            self.refresh()
            for run_id in deleted:
                self.run_deleted.emit(run_id)
        if problems:
            self.summary_note.setText("; ".join(problems).capitalize() + ".")
        return deleted

    def _store_action(self, action, select_id: str | None) -> bool:
        try:
            action()
        except (StoreError, OSError) as exc:
            self.summary_note.setText(f"Could not change the run: {exc}")
            return False
        self.refresh(select_id=select_id)
        return True

    def _context_menu(self, position) -> None:
        ids = self.table.selected_ids()
        if not ids:
            return
        menu = QMenu(self)
        single = len(ids) == 1
        for text, slot, enabled in (("Load settings", self._ask_load, single),
                                    ("Rename…", self._ask_rename, single),
                                    ("Tags…", self._ask_tags, single),
                                    ("Delete…", self._ask_delete, True)):
            menu.addAction(text, slot).setEnabled(enabled)
        menu.exec(self.table.viewport().mapToGlobal(position))

    # --- summary --------------------------------------------------------------------------------
    def _selection_changed(self, user: bool = True) -> None:
        """Buttons and summary for the selection; a run the user clicked is drawn."""
        run_id = self.selected_run_id()
        for button in (self.load_button, self.rename_button, self.tags_button):
            button.setEnabled(run_id is not None)
        self.delete_button.setEnabled(any(r != self.live_run_id
                                          for r in self.table.selected_ids()))
        # A click shows its run on release (itemClicked, also for the row already selected);
        # the keyboard (arrows) and select() show it here.
        if user and not self._filling and run_id is not None \
                and QApplication.mouseButtons() == Qt.MouseButton.NoButton:
            self.show_on_charts.emit(run_id)
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
        if contention.sentence(summary):  # beside the figures below: measured alone or not
            note += f"<br><span style='color:#b45309'>{escape(contention.sentence(summary))}</span>"
        if contention.load_text(summary):
            note += f"<br>Machine load: {escape(contention.load_text(summary))}"
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
