"""The per-segment table under the charts: a run whose techniques changed mid-run is several
configurations, and each one's figures (speed with its spread, tokens per step, memory peaks,
loss slope) are listed apart, never averaged into one number.

The figures are profiler/figures/segments.py's: a finished run's from its summary, a live run's computed
from the stream as it comes (the same function on the same records). This module only lays them
out; the table is hidden while a run has a single segment (its figures are the headline).
"""

from __future__ import annotations

from collections.abc import Iterable

from PySide6.QtCore import QEvent, Qt, QTimer
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from profiler.figures import segments as segment_figures
from profiler.figures.metrics import format_summary_figure, spread_text

COLUMNS = segment_figures.TABLE_COLUMNS
"""The segment figures shown (profiler.figures.segments: the same columns as the CLI and the reports)."""

TOO_NOISY_PCT = 50.0
"""A segment's timed figure whose interval reaches this far either side of its median says
"too noisy to tell" instead of a number nobody can use (a ±340 % spread)."""

LIVE_REFRESH_MS = 1000
"""A live run's table is recomputed at most this often (and at once on a change or the end)."""

MAX_VISIBLE_ROWS = 4
CHARTS_ROOM_PX = 400
"""The table starts folded to its one-line header when, open, it would leave the charts less
than this (a 1024x700 window, a 150 % scale); the arrow opens it."""
MIN_CHARTS_ROOM_PX = 200
"""Opened by the user in a small window, the table scrolls inside this much less room: a chart
is never squeezed to its title bar."""


def half_width_pct(fig: object) -> float | None:
    """Half the width of a timed figure's 95 % interval, in % of its median (None: no
    interval)."""
    dist = fig.get("distribution") if isinstance(fig, dict) else None
    if not isinstance(dist, dict):
        return None
    median, low, high = dist.get("median"), dist.get("ci_low"), dist.get("ci_high")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool)
               for v in (median, low, high)) or not median:
        return None
    return max(median - low, high - median) / abs(median) * 100


def figure_text(key: str, fig: object) -> tuple[str, bool]:
    """(the cell's words, whether it is too noisy): "15,600 tokens/s (±2.1 %, n=195)", or "too
    noisy to tell (±340 %, n=5)"."""
    half = half_width_pct(fig)
    if half is not None and half >= TOO_NOISY_PCT:
        return f"too noisy to tell ({spread_text(fig)})", True
    return format_summary_figure(key, fig), False


class SegmentFeed:
    """A live run's step records and toggles, gathered batch by batch, so its segments can be
    computed at any moment without keeping the stream; a `done` with segments is final."""

    def __init__(self) -> None:
        self.records: dict[int, dict] = {}
        self.toggles: list[dict] = []
        self.warmup = 0
        self.final: list[dict] | None = None

    def add(self, batch: Iterable[dict]) -> bool:
        """Take a batch of messages; True when the segment boundaries may have moved (a toggle,
        the start, the end)."""
        batch = list(batch)
        records, toggles, warmup = segment_figures.records_from_messages(batch)
        for record in records:
            self.records[record["step"]] = record
        self.toggles.extend(toggles)
        moved = bool(toggles)
        for message in batch:
            kind = message.get("type")
            if kind == "started":
                self.warmup, moved = warmup, True
            elif kind == "done":
                stored = (message.get("summary") or {}).get("segments")
                if isinstance(stored, list):
                    self.final = stored
                moved = True
        return moved

    def segments(self) -> list[dict]:
        if self.final is not None:
            return self.final
        return segment_figures.split([self.records[s] for s in sorted(self.records)],
                                     self.toggles, self.warmup)


class SegmentTable(QWidget):
    """"Segments" and its table; collapsible, hidden for a run that never changed mid-run."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("segmentTable")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.setSpacing(2)
        self.toggle_button = QToolButton()
        self.toggle_button.setObjectName("segmentToggle")
        self.toggle_button.setCheckable(True)
        self.toggle_button.setChecked(True)
        self.toggle_button.setArrowType(Qt.ArrowType.DownArrow)
        self.toggle_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.toggle_button.setAutoRaise(True)
        self.toggle_button.clicked.connect(self._clicked)
        self.toggle_button.toggled.connect(self._expand)
        layout.addWidget(self.toggle_button)
        self._user_choice: bool | None = None
        self._toolbar: QWidget | None = None
        self._full_height = 0
        """Open / folded as the user last clicked it (None: follow the charts' height)."""
        self.table = QTableWidget(0, 2 + len(COLUMNS))
        self.table.setHorizontalHeaderLabels(["Steps", "Configuration"]
                                             + [title for _key, title in COLUMNS])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        layout.addWidget(self.table)
        self.segments: list[dict] = []
        """What the table shows (profiler.figures.segments' dicts; tests read them)."""
        self.feed: SegmentFeed | None = None
        self._stale = False
        self._timer = QTimer(self)
        self._timer.setInterval(LIVE_REFRESH_MS)
        self._timer.timeout.connect(self._refresh_live)
        self.hide()

    # --- what feeds it --------------------------------------------------------------------------
    def start_live(self) -> None:
        """A new live run: an empty feed, refreshed on a timer while it goes."""
        self.feed = SegmentFeed()
        self.show_segments([])
        self._timer.start()

    def add_live(self, batch: list[dict]) -> None:
        if self.feed is None:
            return
        if self.feed.add(batch):
            self._stale = False
            self.show_segments(self.feed.segments())
        else:
            self._stale = True
        if self.feed.final is not None:
            self._timer.stop()

    def _refresh_live(self) -> None:
        if self.feed is not None and self._stale and len(self.segments) > 1:
            self._stale = False
            self.show_segments(self.feed.segments())

    def show_stored(self, messages: Iterable[dict]) -> None:
        """A stored run's segments (its summary's, or computed from its stream)."""
        self.feed = None
        self._timer.stop()
        self.show_segments(segment_figures.from_messages(messages))

    def clear(self) -> None:
        self.feed = None
        self._timer.stop()
        self.show_segments([])

    # --- drawing --------------------------------------------------------------------------------
    def show_segments(self, parts: list[dict]) -> None:
        parts = [p for p in parts if isinstance(p, dict)]
        self.segments = parts
        if len(parts) < 2:
            self.table.setRowCount(0)
            self.hide()
            return
        changed = ", ".join(str(p.get("start_step")) for p in parts[1:])
        self.toggle_button.setText(f"Segments: {len(parts)} configurations (changed at step "
                                   f"{changed})")
        note = ("Each configuration's own figures; the run's headline is the last segment. "
                f"Timing leaves out warmup and the first {segment_figures.RETIMED_STEPS} step "
                "after each change (it pays for the switch); hover a cell for how it was taken.")
        self.toggle_button.setToolTip(note)
        self.table.setToolTip(note)
        self.table.setRowCount(len(parts))
        for row, part in enumerate(parts):
            figures = part.get("figures") if isinstance(part.get("figures"), dict) else {}
            steps = QTableWidgetItem(f"{part.get('start_step', '?')}..{part.get('end_step', '?')}")
            steps.setToolTip(f"{part.get('steps', '?')} steps, {part.get('measured_steps', '?')} "
                             "timed")
            label = str(part.get("label") or "?")
            what = QTableWidgetItem("start" if label == "start" else f"after {label}")
            what.setToolTip("\n".join(str(c.get("message") or "") for c in part.get("changes")
                                      or [] if isinstance(c, dict)) or "the run's start")
            self.table.setItem(row, 0, steps)
            self.table.setItem(row, 1, what)
            for column, (key, _title) in enumerate(COLUMNS, start=2):
                fig = figures.get(key)
                text, noisy = figure_text(key, fig)
                item = QTableWidgetItem(text)
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                how = str(fig.get("how") or "") if isinstance(fig, dict) else ""
                if noisy:
                    item.setForeground(QColor("#b45309"))
                    how = (f"{format_summary_figure(key, fig)}: the 95 % interval of the median "
                           f"is wider than {TOO_NOISY_PCT} % of it either way, so this "
                           "segment's figure cannot be told from noise (too few steps, or a "
                           "busy machine). " + how)
                if how:
                    item.setToolTip(how)
                self.table.setItem(row, column, item)
        self.table.setColumnWidth(1, min(260, max(120, self.table.sizeHintForColumn(1))))
        rows = min(len(parts), MAX_VISIBLE_ROWS)
        height = (self.table.horizontalHeader().sizeHint().height()
                  + sum(self.table.rowHeight(r) for r in range(rows))
                  + 2 * self.table.frameWidth() + 2
                  + self.table.horizontalScrollBar().sizeHint().height())  # room for it if wide
        self._full_height = height
        self.table.setFixedHeight(height)
        self._fit()
        self.table.setVisible(self.toggle_button.isChecked())
        self.show()

    def _charts_room(self) -> int:
        """The height the charts and the open table share: the charts area less what is always
        there (its toolbar, this table's header line); read from sizes that are set now, not
        from a layout that catches up at a later turn."""
        host = self.parentWidget()
        if host is None:
            return 0
        above = self._toolbar.height() if self._toolbar is not None else 0
        return host.height() - above - self.toggle_button.sizeHint().height() - 12

    def _fit(self) -> None:
        """Fold or open by the room the charts have, unless the user chose; an open table
        never takes the room a chart needs (it scrolls inside what is left)."""
        if not self.segments:
            return
        room = self._charts_room()
        if self._user_choice is None:
            self.toggle_button.setChecked(room - self._full_height >= CHARTS_ROOM_PX)
        if self.toggle_button.isChecked():
            one_row = (self.table.horizontalHeader().sizeHint().height()
                       + self.table.rowHeight(0) + 2 * self.table.frameWidth()
                       + self.table.horizontalScrollBar().sizeHint().height())
            self.table.setFixedHeight(min(self._full_height,
                                          max(one_row, room - MIN_CHARTS_ROOM_PX)))

    def fit_to(self, _height: int = 0) -> None:
        """The charts area changed size (its resize)."""
        if self.isVisible():
            self._fit()

    def watch(self, host: QWidget, toolbar: QWidget | None = None) -> None:
        """Follow the height of the charts area it sits in (`toolbar`: the charts' toolbar
        above them, which the table's room leaves out)."""
        self._toolbar = toolbar
        host.installEventFilter(self)

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt override
        if event.type() == QEvent.Type.Resize and watched is self.parentWidget():
            self.fit_to(watched.height())
        return False

    def _clicked(self, on: bool) -> None:
        self._user_choice = on

    def _expand(self, on: bool) -> None:
        self.toggle_button.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)
        self.table.setVisible(on and bool(self.segments))
        if on and self._user_choice is not None:
            self._fit()

    def cell_text(self, row: int, key: str) -> str:
        """The shown text of one segment's figure (tests and screenshots read it)."""
        column = 2 + [k for k, _t in COLUMNS].index(key)
        return self.table.item(row, column).text()
