"""The run history: every stored run in a table (app/run_table.py), searchable, renamable,
taggable, deletable (several at once), comparable, and a run's settings loadable into the form.

It reads the run store only, so a run from the CLI or from an earlier session shows the same way
as the one just finished. A click on a run draws it; ticking runs lays them over the charts and
fills the comparison; the window shows the selected run's summary (app/summary_view.py).
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QApplication,
    QGridLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMenu,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QToolButton,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.run_table import COLUMNS, RUN_ID_ROLE, RunTable
from profiler.store import RunStore, StoreError


class HistoryPanel(QWidget):
    """Past runs in a table the user arranges. Signals: show a run (a click on its row), the
    ticked runs changed, a run deleted or renamed, load a run's settings into the form."""

    show_on_charts = Signal(str)
    compare_changed = Signal(list)
    run_deleted = Signal(str)
    run_renamed = Signal(str, str)
    load_settings = Signal(str)
    selection_changed = Signal(object)
    """The one selected run's id (None: none or several): the window shows its summary."""

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

        buttons = QGridLayout()  # one row, or two when the column is narrow (resizeEvent)
        buttons.setSpacing(4)
        self.buttons = buttons
        self.load_button = self._button("Load settings", "Put the selected run's settings into "
                                        "the form, to run it again or change it",
                                        self._ask_load)
        self.rename_button = self._button("Rename…", "Give the selected run a new name",
                                          self._ask_rename)
        self.tags_button = self._button("Tags…", "Set the selected run's tags (comma-separated)",
                                        self._ask_tags)
        self.delete_button = self._button("Delete…", "Delete the selected runs and their files "
                                          "(Delete key)", self._ask_delete)
        self._button_rows = 0
        self._place_buttons(1)
        layout.addLayout(buttons)
        from PySide6.QtGui import QKeySequence, QShortcut

        delete_key = QShortcut(QKeySequence(QKeySequence.StandardKey.Delete), self.table)
        delete_key.setContext(Qt.ShortcutContext.WidgetShortcut)
        delete_key.activated.connect(self._ask_delete)

        self.note = QLabel("")
        self.note.setObjectName("historyNote")
        self.note.setWordWrap(True)
        self.note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.note.hide()
        layout.addWidget(self.note)

    def _place_buttons(self, rows: int) -> None:
        if rows == self._button_rows:
            return
        self._button_rows = rows
        order = (self.load_button, self.rename_button, self.tags_button, self.delete_button)
        for button in order:
            self.buttons.removeWidget(button)
        per_row = 4 // rows
        for index, button in enumerate(order):
            self.buttons.addWidget(button, index // per_row, index % per_row)
        for column in range(4):
            self.buttons.setColumnStretch(column, 0)
        self.buttons.setColumnStretch(per_row, 1)

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        """The buttons in one row when their words fit, else two rows: never cut."""
        super().resizeEvent(event)
        needed = sum(b.sizeHint().width() + 4 for b in (self.load_button, self.rename_button,
                                                        self.tags_button, self.delete_button))
        self._place_buttons(1 if needed <= event.size().width() else 2)

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
            self.say(f"The run history cannot be read: {exc}")
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
            self.say("; ".join(problems).capitalize() + ".")
        return deleted

    def _store_action(self, action, select_id: str | None) -> bool:
        try:
            action()
        except (StoreError, OSError) as exc:
            self.say(f"Could not change the run: {exc}")
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
        """Buttons for the selection; a run the user picked with the keyboard is drawn (a
        click draws it on release, _item_clicked); the window shows its summary."""
        run_id = self.selected_run_id()
        for button in (self.load_button, self.rename_button, self.tags_button):
            button.setEnabled(run_id is not None)
        self.delete_button.setEnabled(any(r != self.live_run_id
                                          for r in self.table.selected_ids()))
        self.selection_changed.emit(run_id)
        if user and not self._filling and run_id is not None \
                and QApplication.mouseButtons() == Qt.MouseButton.NoButton:
            self.show_on_charts.emit(run_id)

    def say(self, text: str) -> None:
        """A sentence under the table (a run that could not be changed); "" hides it."""
        self.note.setText(text)
        self.note.setVisible(bool(text))
