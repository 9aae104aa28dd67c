"""The run table of the history: every stored run as a row, in columns the user chooses, sorted by
any column, repeats and tune trials folded under their parent.

Rows come from the store's index (profiler.store.list_runs); the few figures the index lacks
(techniques, duration, the workload's headline speed) are read once per run from its folder and
kept while the run does not change. A series of repeats ("nano #3 repeat 1/3", tagged
"repeats:GROUP") folds under one group row; the trials of a tune (tagged "tune:TUNE_RUN") fold
under the tune's own run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from PySide6.QtCore import QPoint, QSize, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QStyle,
    QStyleOptionViewItem,
    QTreeWidget,
    QTreeWidgetItem,
)

from profiler.figures.metrics import format_value
from profiler.store import RunStore, StoreError

RUN_ID_ROLE = Qt.ItemDataRole.UserRole
"""A run row's id (None on a group row)."""
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
GROUP_ROLE = Qt.ItemDataRole.UserRole + 2
"""A group row's key ("repeats:GROUP")."""
STATUS_COLORS = {"completed": "#15803d", "stopped": "#a16207", "running": "#2563eb",
                 "failed": "#b91c1c", "killed": "#b91c1c", "crashed": "#b91c1c"}
HEADLINE_SPEED = ("tokens_per_s", "decode_tokens_per_s", "encode_tokens_per_s")
"""The workload's headline speed: the first of these a summary holds (train and distill read
tokens/s, infer and compress decode tokens/s, an encoder encode tokens/s), as the report's cards."""
NAME_MIN_WIDTH = 120


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    tip: str
    shown: bool = False
    """Shown until the user chooses otherwise."""
    numeric: bool = False
    width: int = 80


COLUMNS = (
    Column("name", "Run", "The run's name; tick runs to lay them over the charts and compare "
           "them", shown=True, width=160),
    Column("status", "Status", "How the run ended (or that it runs now); the dot before the "
           "name says it too", width=80),
    Column("workload", "Workload", "train, infer, compress or distill"),
    Column("model", "Model", "The model preset, checkpoint or past run it started from", width=90),
    Column("techniques", "Techniques", "The techniques switched on in its config", width=140),
    Column("duration", "Duration", "Wall time from its creation to the last message received "
           "(start-up included)", numeric=True, width=70),
    Column("speed", "Speed", "The workload's headline speed in tokens/s, median after warmup: "
           "train and distill tokens/s, infer and compress decode tokens/s", shown=True,
           numeric=True, width=62),
    Column("loss", "Val loss", "Final validation loss, nats/token", numeric=True, width=70),
    Column("tags", "Tags", "Its tags (the Tags… button sets them)", width=90),
    Column("started", "Started", "When it was created (local time)", shown=True, width=76),
)
COLUMN_KEYS = tuple(c.key for c in COLUMNS)
REPEAT_NAME = re.compile(r"\s+repeat \d+/\d+$")


def when(created: str) -> str:
    """The store's UTC stamp as local time: "14:05" today, "11-28 14:05" before."""
    try:
        stamp = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return ""
    local = stamp.astimezone()
    if local.date() == datetime.now().astimezone().date():
        return local.strftime("%H:%M")
    return local.strftime("%m-%d %H:%M")


def _epoch(created: str) -> float | None:
    try:
        return datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def matches(row: dict, query: str) -> bool:
    """Every word of the query appears in the run's id, name, model, status, workload,
    techniques or tags."""
    words = [str(row.get(k) or "") for k in ("id", "name", "model", "status", "workload",
                                              "device")]
    words += list(row.get("tags") or []) + list(row.get("techniques") or [])
    haystack = " ".join(words).lower()
    return all(word in haystack for word in query.lower().split())


def technique_label(name: str) -> str:
    try:
        from techniques import registry

        return registry.get(name).label
    except Exception:  # noqa: BLE001 - an unknown technique keeps its name
        return name


class RunDetails:
    """What the index lacks, read once per run from its folder (techniques, duration, speed),
    read again only when the run's status changed."""

    def __init__(self, store: RunStore):
        self.store = store
        self._cache: dict[str, tuple[str, dict]] = {}

    def of(self, row: dict) -> dict:
        run_id, status = row["id"], str(row.get("status") or "")
        cached = self._cache.get(run_id)
        if cached is not None and cached[0] == status and status != "running":
            return cached[1]
        details = self._read(row)
        self._cache[run_id] = (status, details)
        return details

    def forget(self, run_id: str) -> None:
        self._cache.pop(run_id, None)

    def _read(self, row: dict) -> dict:
        out: dict = {"techniques": [], "duration_s": None, "speed": None, "speed_key": None}
        try:
            run = self.store.open_run(row["id"])
        except StoreError:
            return out
        try:
            names = run.config_dict().get("techniques")
            out["techniques"] = sorted(names) if isinstance(names, dict) else []
        except StoreError:
            pass
        summary = run.summary() or {}
        figures = summary.get("figures") if isinstance(summary.get("figures"), dict) else {}
        for key in HEADLINE_SPEED:
            value = (figures.get(key) or {}).get("value") if isinstance(figures.get(key),
                                                                        dict) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out["speed"], out["speed_key"] = float(value), key
                break
        start = _epoch(str(row.get("created") or ""))
        try:
            end = run.stream_path.stat().st_mtime
        except OSError:
            end = None
        if start is not None and end is not None and row.get("status") != "running":
            out["duration_s"] = max(0.0, end - start)
        return out


_DOTS: dict[str, QIcon] = {}


def status_dot(status: str) -> QIcon:
    """A small dot in the status's colour, before the run's name (the Status column in words)."""
    color = STATUS_COLORS.get(status, "#94a3b8")
    icon = _DOTS.get(color)
    if icon is None:
        pixmap = QPixmap(10, 10)
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(color))
        painter.drawEllipse(1, 1, 8, 8)
        painter.end()
        icon = _DOTS[color] = QIcon(pixmap)
    return icon


class _Item(QTreeWidgetItem):
    """A row that sorts by the value behind its text (numbers as numbers, missing last)."""

    def __lt__(self, other: QTreeWidgetItem) -> bool:
        column = self.treeWidget().sortColumn() if self.treeWidget() else 0
        mine, theirs = self.data(column, SORT_ROLE), other.data(column, SORT_ROLE)
        if mine is None or theirs is None:
            return (mine is None) < (theirs is None)
        if isinstance(mine, str) != isinstance(theirs, str):
            return isinstance(mine, str) < isinstance(theirs, str)
        return mine < theirs


class RunTable(QTreeWidget):
    """The run rows; the HistoryPanel wires it to the store and the window."""

    def __init__(self, store: RunStore, parent=None):
        super().__init__(parent)
        self.setObjectName("historyTable")
        self.details = RunDetails(store)
        self.setColumnCount(len(COLUMNS))
        self.setHeaderLabels([c.title for c in COLUMNS])
        for index, column in enumerate(COLUMNS):
            self.headerItem().setToolTip(index, column.tip)
            if column.numeric:
                self.headerItem().setTextAlignment(
                    index, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.setRootIsDecorated(True)
        self.setIndentation(14)
        self.setIconSize(QSize(10, 10))
        self.setUniformRowHeights(True)
        self.setAlternatingRowColors(True)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setTabKeyNavigation(False)  # Tab leaves the table; it never moves the selection
        self.setSortingEnabled(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        header = self.header()
        header.setSectionsMovable(True)
        header.setStretchLastSection(False)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        for index, column in enumerate(COLUMNS):
            header.resizeSection(index, column.width)
            header.setSectionHidden(index, not column.shown)
        header.sectionResized.connect(self._section_resized)
        self._name_width_chosen = False
        self._fitting = False
        self.sortByColumn(COLUMN_KEYS.index("started"), Qt.SortOrder.DescendingOrder)
        self._expanded: set[str] = set()
        self.itemExpanded.connect(lambda item: self._expanded.add(self._key(item)))
        self.itemCollapsed.connect(lambda item: self._expanded.discard(self._key(item)))

    # --- columns --------------------------------------------------------------------------------
    def column_shown(self, key: str) -> bool:
        return not self.header().isSectionHidden(COLUMN_KEYS.index(key))

    def show_column(self, key: str, shown: bool) -> None:
        """Show or hide a column (the name stays: it carries the compare tick)."""
        if key == "name":
            return
        self.header().setSectionHidden(COLUMN_KEYS.index(key), not shown)
        self.fit_name_column()

    def _section_resized(self, index: int, _old: int, _new: int) -> None:
        if index == 0 and not self._fitting:
            self._name_width_chosen = True  # the user dragged it: keep their width
        elif index != 0:
            self.fit_name_column()

    def fit_name_column(self) -> None:
        """The name takes the width the other columns leave (until the user sizes it)."""
        if self._name_width_chosen:
            return
        header = self.header()
        others = sum(header.sectionSize(i) for i in range(1, len(COLUMNS))
                     if not header.isSectionHidden(i))
        width = max(NAME_MIN_WIDTH, self.viewport().width() - others)
        self._fitting = True
        try:
            header.resizeSection(0, width)
        finally:
            self._fitting = False

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        self.fit_name_column()

    def restore_header(self, state) -> None:
        """Columns, widths and sort order as the user left them (window settings)."""
        if state is not None and self.header().restoreState(state):
            self._name_width_chosen = True
            self.header().setSectionHidden(0, False)

    # --- rows -----------------------------------------------------------------------------------
    @staticmethod
    def _key(item: QTreeWidgetItem) -> str:
        return item.data(0, GROUP_ROLE) or item.data(0, RUN_ID_ROLE) or ""

    def fill(self, rows: list[dict], checked: Iterable[str], query: str = "") -> None:
        """Rebuild the rows: every run (those matching `query`), groups folded under their
        parent; ticks and folded/unfolded groups kept."""
        checked = set(checked)
        for row in rows:
            details = self.details.of(row)
            row["techniques"] = [technique_label(n) for n in details["techniques"]]
            row["_details"] = details
        by_id = {row["id"]: row for row in rows}
        children: dict[str, list[dict]] = {}
        top: list[dict] = []
        for row in rows:
            parent = self._parent_key(row, by_id)
            if parent is None:
                top.append(row)
            else:
                children.setdefault(parent, []).append(row)
        self.setSortingEnabled(False)
        self.clear()
        for row in top:
            kids = [k for k in children.pop(row["id"], []) if not query or matches(k, query)]
            if query and not kids and not matches(row, query):
                continue
            item = self._run_item(row, checked)
            self.addTopLevelItem(item)
            for kid in kids:
                item.addChild(self._run_item(kid, checked))
        for key, kids in children.items():  # repeat groups (no run of their own)
            kids = [k for k in kids if not query or matches(k, query)]
            if not kids:
                continue
            if key.startswith("tune:"):  # trials whose tune run is gone: listed on their own
                for kid in kids:
                    self.addTopLevelItem(self._run_item(kid, checked))
                continue
            group = self._group_item(key, kids)
            self.addTopLevelItem(group)
            for kid in kids:
                group.addChild(self._run_item(kid, checked))
        self.setSortingEnabled(True)
        for index in range(self.topLevelItemCount()):
            item = self.topLevelItem(index)
            if item.childCount() and self._key(item) in self._expanded:
                item.setExpanded(True)

    @staticmethod
    def _parent_key(row: dict, by_id: dict) -> str | None:
        for tag in row.get("tags") or []:
            if tag.startswith("tune:") and tag[5:] != row["id"]:
                return tag[5:] if tag[5:] in by_id else tag
            if tag.startswith("repeats:"):
                return tag
        return None

    def _run_item(self, row: dict, checked: set[str]) -> _Item:
        details = row["_details"]
        status = str(row.get("status") or "unknown")
        tags = [t for t in row.get("tags") or [] if not t.startswith(("repeats:", "tune:"))]
        steps = row.get("steps")
        name = str(row.get("name") or row["id"])
        techniques = ", ".join(row.get("techniques") or []) or "none"
        texts = {
            "name": name, "status": status, "workload": str(row.get("workload") or ""),
            "model": str(row.get("model") or ""), "techniques": techniques,
            "duration": duration_text(details["duration_s"]) or ("…" if status == "running"
                                                                 else "n/a"),
            "speed": format_value(details["speed"], "tokens/s", with_unit=False),
            "loss": format_value(row.get("loss_val_final"), "nats/token", with_unit=False),
            "tags": ", ".join(tags), "started": when(str(row.get("created") or "")),
        }
        sort = {"name": name.lower(), "status": status, "workload": texts["workload"],
                "model": texts["model"], "techniques": techniques.lower(),
                "duration": details["duration_s"], "speed": details["speed"],
                "loss": row.get("loss_val_final"), "tags": texts["tags"].lower(),
                "started": str(row.get("created") or "")}
        item = _Item([texts[k] for k in COLUMN_KEYS])
        for index, column in enumerate(COLUMNS):
            item.setData(index, SORT_ROLE, sort[column.key])
            if column.numeric:
                item.setTextAlignment(index, Qt.AlignmentFlag.AlignRight
                                      | Qt.AlignmentFlag.AlignVCenter)
        item.setToolTip(0, f"{name} ({status})\n{row['id']}\n{row.get('workload') or 'train'} of "
                        f"{row.get('model') or '?'} on {row.get('device') or '?'}"
                        + (f", {steps} steps" if steps else "")
                        + f"\ncreated {row.get('created', '')}\ntechniques: {techniques}"
                        + (f"\ntags: {', '.join(tags)}" if tags else ""))
        item.setToolTip(COLUMN_KEYS.index("techniques"), techniques)
        if details["speed_key"]:
            item.setToolTip(COLUMN_KEYS.index("speed"), details["speed_key"])
        item.setData(0, RUN_ID_ROLE, row["id"])
        item.setIcon(0, status_dot(status))
        item.setFlags(Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled
                      | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(0, Qt.CheckState.Checked if row["id"] in checked
                           else Qt.CheckState.Unchecked)
        item.setForeground(COLUMN_KEYS.index("status"),
                           QColor(STATUS_COLORS.get(status, "#64748b")))
        return item

    def _group_item(self, key: str, kids: list[dict]) -> _Item:
        """A series of repeats: its base name, how many ran, the newest start."""
        of = len(kids)
        base = REPEAT_NAME.sub("", str(kids[0].get("name") or "repeats"))
        completed = sum(1 for k in kids if k.get("status") == "completed")
        newest = max(str(k.get("created") or "") for k in kids)
        texts = {k: "" for k in COLUMN_KEYS}
        texts.update(name=f"{base} ({of} repeats)", status=f"{completed}/{of} completed",
                     workload=str(kids[0].get("workload") or ""),
                     model=str(kids[0].get("model") or ""), started=when(newest))
        item = _Item([texts[k] for k in COLUMN_KEYS])
        sort = {k: None for k in COLUMN_KEYS}
        sort.update(name=base.lower(), status=texts["status"], started=newest,
                    workload=texts["workload"], model=texts["model"])
        for index, column in enumerate(COLUMNS):
            item.setData(index, SORT_ROLE, sort[column.key])
        item.setData(0, GROUP_ROLE, key)
        item.setData(0, RUN_ID_ROLE, None)
        item.setFlags(Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled)
        item.setToolTip(0, f"{of} repeats of one config ({key}); unfold to see each run")
        return item

    # --- lookups ----------------------------------------------------------------------------------
    def items(self) -> list[QTreeWidgetItem]:
        """Every row, parents before their children."""
        out = []
        for index in range(self.topLevelItemCount()):
            item = self.topLevelItem(index)
            out.append(item)
            out.extend(item.child(c) for c in range(item.childCount()))
        return out

    def item_of(self, run_id: str) -> QTreeWidgetItem | None:
        return next((i for i in self.items() if i.data(0, RUN_ID_ROLE) == run_id), None)

    def run_ids(self) -> list[str]:
        return [i.data(0, RUN_ID_ROLE) for i in self.items() if i.data(0, RUN_ID_ROLE)]

    def selected_ids(self) -> list[str]:
        """The selected runs; a selected group counts as all its runs."""
        out: list[str] = []
        for item in self.selectedItems():
            targets = [item] if item.data(0, RUN_ID_ROLE) else \
                [item.child(c) for c in range(item.childCount())]
            for target in targets:
                run_id = target.data(0, RUN_ID_ROLE)
                if run_id and run_id not in out:
                    out.append(run_id)
        return out

    def reveal(self, run_id: str) -> QTreeWidgetItem | None:
        """Unfold the run's group (if any) and scroll to it."""
        item = self.item_of(run_id)
        if item is not None:
            if item.parent() is not None:
                item.parent().setExpanded(True)
            self.scrollToItem(item)
        return item

    def cell(self, run_id: str, key: str) -> str:
        item = self.item_of(run_id)
        return item.text(COLUMN_KEYS.index(key)) if item is not None else ""

    def point_of(self, run_id: str, key: str = "name") -> QPoint:
        """Where a user clicks on the run's row (viewport coordinates): the text of a column."""
        item = self.reveal(run_id)
        index = self.indexFromItem(item, COLUMN_KEYS.index(key))
        rect = self.visualRect(index)
        return QPoint(rect.right() - min(30, rect.width() // 3), rect.center().y())

    def check_point(self, run_id: str) -> QPoint:
        """The middle of the run's tick box as the style draws it (viewport coordinates)."""
        item = self.reveal(run_id)
        index = self.indexFromItem(item, 0)
        option = QStyleOptionViewItem()
        self.initViewItemOption(option)
        option.rect = self.visualRect(index)
        option.features |= QStyleOptionViewItem.ViewItemFeature.HasCheckIndicator
        rect = self.style().subElementRect(QStyle.SubElement.SE_ItemViewItemCheckIndicator,
                                           option, self)
        return rect.center()
