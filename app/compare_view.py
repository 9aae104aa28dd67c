"""Compared runs side by side: a delta table against a chosen baseline, and a settings diff.

Every row, value and verdict is profiler.report.compare's (the same the CLI and the reports
print), so the table says what each run's summary says, judged by the one verdict rule
(profiler.figures.significance). Reading the runs' streams and the statistics run in the background
(app.comparison_job, a worker thread): the window stays responsive and draws the table when the
comparison is ready. The settings diff lists the settings the runs' workloads read, each run's
segments where it changed techniques mid-run, and the runs by their current names.
"""

from __future__ import annotations

from PySide6.QtCore import QDeadlineTimer, QEventLoop, Qt, QThreadPool, Signal
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QSizePolicy,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.comparison_job import ComparisonJob, JobSignals
from profiler.figures.metrics import format_change, format_value, metric
from profiler.figures.significance import SHORT, TOOLTIPS, segment_value
from profiler.report.compare import DELTA_ROWS
from profiler.store import RunStore

BETTER, WORSE, NEUTRAL, BUSY = "#15803d", "#b91c1c", "#6b7280", "#b45309"


def summary_value(summary: dict, key: str) -> float | None:
    """A figure's headline value from a summary; perplexity is exp(final validation loss) unless
    measured (profiler.figures.significance.segment_value, the one the comparisons read)."""
    return segment_value(key, summary, None)


BARE_UNITS = ("tokens/s", "nats/token")
"""Units said once in the Figure column; bytes and seconds keep theirs (MiB / GiB, ms / s)."""


def cell_value(value: float | None, unit: str) -> str:
    """A figure as the delta table writes it."""
    text = format_value(value, unit)
    return text.removesuffix(f" {unit}") if unit in BARE_UNITS else text


def row_label(label: str, unit: str) -> str:
    """"Perplexity (exp of validation loss)" -> "Perplexity"; "Throughput" -> "Throughput, tokens/s"."""
    short = label.split(" (")[0]
    short = {"Final validation loss": "Val loss (final)", "Final train loss": "Train loss (final)"
             }.get(short, short)
    return f"{short}, {unit}" if unit in BARE_UNITS else short


def _item(text: str, tip: str = "", right: bool = True) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setFlags(Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled)
    if tip:
        item.setToolTip(tip)
    if right:
        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return item


def _no_min_width(widget: QWidget) -> None:
    """Wide contents scroll inside the widget instead of widening the window."""
    policy = widget.sizePolicy()
    policy.setHorizontalPolicy(QSizePolicy.Policy.Ignored)
    widget.setSizePolicy(policy)


def delta_cell(cell: dict) -> QTableWidgetItem:
    """A Δ % cell: the change, "(within noise)" / "(machine busy)" / "(not comparable)" where
    there is no verdict, coloured only for a significant one; the tooltip says the verdict and
    its reason."""
    verdict = cell["verdict"]
    text = format_change(cell["change_pct"])
    if verdict in SHORT and cell["change_pct"] is not None:
        text += f" ({SHORT[verdict]})"
    counted = verdict in ("better", "worse", "apart") and cell.get("counted")
    tip = TOOLTIPS.get("counted" if counted else verdict, "")
    if cell["text"]:
        tip += f"\n{cell['text']}" + (f"; {cell['method']}." if cell.get("method") else "")
    if cell["scope"]:
        tip += f"\nCompared like with like: {cell['scope']}."
    item = _item(text, tip.strip())
    item.setData(Qt.ItemDataRole.UserRole, verdict)
    if cell["change_pct"] and verdict in ("better", "worse"):
        item.setForeground(QColor(BETTER if verdict == "better" else WORSE))
    elif verdict == "machine busy":
        item.setForeground(QColor(BUSY))
    elif cell["change_pct"]:
        item.setForeground(QColor(NEUTRAL))
    return item


class CompareView(QWidget):
    """The ticked runs of the history: deltas against a baseline, and a settings diff."""

    ready = Signal()
    """The comparison asked for last is drawn."""

    def __init__(self, store: RunStore, parent: QWidget | None = None):
        super().__init__(parent)
        self.store = store
        self.run_ids: list[str] = []
        self.names: dict[str, str] = {}
        self.result: dict | None = None
        self._loaded: dict = {}
        self._evidence: dict = {}
        self._generation = 0
        self._pending = False
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)  # one comparison at a time; a newer one supersedes
        self._signals = JobSignals()
        self._signals.done.connect(self._finished)
        # A pool waits for its running job when it is destroyed (QThreadPool's destructor): no
        # job outlives the view.
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.note = QLabel("Tick two or more runs in the history to compare them.")
        self.note.setObjectName("hint")
        self.note.setWordWrap(True)
        layout.addWidget(self.note)
        self.machine = QLabel("")
        self.machine.setObjectName("compareMachine")
        self.machine.setWordWrap(True)
        self.machine.setTextFormat(Qt.TextFormat.PlainText)
        layout.addWidget(self.machine)
        top = QHBoxLayout()
        top.addWidget(QLabel("Baseline"))
        self.baseline = QComboBox()
        self.baseline.setObjectName("baselineCombo")
        self.baseline.setToolTip("The run every other run is compared with")
        self.baseline.currentIndexChanged.connect(self._recompute)
        top.addWidget(self.baseline, 1)
        top.addSpacing(16)
        top.addWidget(QLabel("Settings diff with"))
        self.other = QComboBox()
        self.other.setObjectName("diffCombo")
        self.other.currentIndexChanged.connect(self._fill_diff)
        top.addWidget(self.other, 1)
        layout.addLayout(top)

        splitter = QSplitter(Qt.Orientation.Vertical)
        self.table = QTableWidget(0, 0)
        self.table.setObjectName("deltaTable")
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setWordWrap(False)
        splitter.addWidget(self.table)
        for widget in (self.table, self.baseline, self.other):
            _no_min_width(widget)
        diff_host = QWidget()
        diff_layout = QVBoxLayout(diff_host)
        diff_layout.setContentsMargins(0, 4, 0, 0)
        self.diff_keys = QTableWidget(0, 3)
        self.diff_keys.setObjectName("diffKeys")
        self.diff_keys.setHorizontalHeaderLabels(("Setting", "Baseline", "Other"))
        self.diff_keys.verticalHeader().setVisible(False)
        self.diff_keys.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        diff_layout.addWidget(self.diff_keys, 1)
        self.diff_text = QPlainTextEdit()
        self.diff_text.setObjectName("diffText")
        self.diff_text.setReadOnly(True)
        mono = QFont("monospace")
        mono.setStyleHint(QFont.StyleHint.Monospace)
        self.diff_text.setFont(mono)
        for widget in (self.diff_keys, self.diff_text):
            _no_min_width(widget)
        diff_layout.addWidget(self.diff_text, 1)
        splitter.addWidget(diff_host)
        splitter.setSizes([320, 300])
        layout.addWidget(splitter, 1)

    # --- asking for a comparison -------------------------------------------------------------
    def set_runs(self, run_ids: list[str], names: dict[str, str]) -> None:
        """Compare these runs (read from the store in the background) and draw when ready."""
        self.run_ids = [r for r in run_ids]
        self.names = {r: names.get(r, r) for r in run_ids}
        self._loaded, self._evidence = {}, {}  # a run may have finished since: read it anew
        keep = self.baseline.currentData()
        for box in (self.baseline, self.other):
            box.blockSignals(True)
            box.clear()
            for run_id in self.run_ids:
                box.addItem(self.names[run_id], run_id)
            box.blockSignals(False)
        if keep in self.run_ids:
            self.baseline.setCurrentIndex(self.run_ids.index(keep))
        if self.other.count() > 1:
            self.other.setCurrentIndex(1 if self.baseline.currentIndex() == 0 else 0)
        self._recompute()

    def set_baseline(self, run_id: str) -> None:
        if run_id in self.run_ids:
            self.baseline.setCurrentIndex(self.run_ids.index(run_id))

    def busy(self) -> bool:
        """Whether a comparison asked for is still being computed."""
        return self._pending

    def wait(self, timeout_ms: int = 30_000) -> bool:
        """Block until the comparison asked for last is drawn (scripts and tests); False when it
        took longer than timeout_ms."""
        deadline = QDeadlineTimer(timeout_ms)
        while self._pending and not deadline.hasExpired():
            self._pool.waitForDone(20)
            QApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 20)
        return not self._pending

    def _recompute(self) -> None:
        self._generation += 1
        base_id = self.baseline.currentData()
        if base_id is None or len(self.run_ids) < 2:
            self._pending = False
            self.result = None
            self.note.setText("Tick two or more runs in the history to compare them.")
            self.machine.setText("")
            self._draw()
            self.ready.emit()
            return
        self._pending = True
        self.note.setText(f"Comparing {len(self.run_ids)} runs against the baseline… (read and "
                          "judged in the background)")
        self._pool.start(ComparisonJob(self._generation, self.store, list(self.run_ids),
                                       base_id, dict(self.names), self._loaded, self._evidence,
                                       self._signals))

    def _finished(self, generation: int, result: dict) -> None:
        if generation != self._generation:
            return  # a newer comparison was asked for meanwhile
        self._pending = False
        self.result = result
        error = result.get("error")
        compared = result.get("run_ids") or []
        if error:
            self.note.setText(f"The comparison could not be made: {error}")
        elif len(compared) < 2:
            self.note.setText("Tick two or more runs in the history to compare them (the others "
                              "could not be read from the store).")
        else:
            self.note.setText(f"{len(compared)} runs compared against the baseline; the numbers "
                              "are the runs' summary figures, judged like with like.")
        self.machine.setText("\n".join(
            f"Machine during {self.names.get(run_id, run_id)}: {state['text']}"
            for run_id, state in (result.get("machine") or {}).items()))
        self._draw()
        self.ready.emit()

    # --- drawing -------------------------------------------------------------------------------
    def _draw(self) -> None:
        self._fill_table()
        self._fill_diff()

    def _fill_table(self) -> None:
        rows = (self.result or {}).get("deltas")
        if not rows:
            self.table.setRowCount(0)
            self.table.setColumnCount(0)
            return
        order = [c["run"] for c in rows[0]["cells"]]
        base_id, others = order[0], order[1:]

        def wrapped(name: str) -> str:  # two short header lines instead of one long one
            return name.replace(" ", "\n", 1) if len(name) > 10 else name

        headers = ["Figure", f"{wrapped(self.names.get(base_id, base_id))}\n(baseline)"]
        for run_id in others:
            headers += [wrapped(self.names.get(run_id, run_id)), "Δ %"]
        shown = [row for row in rows if any(c["value"] is not None for c in row["cells"])]
        self.table.clear()
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        self.table.setRowCount(len(shown))
        for index, row in enumerate(shown):
            key, label, unit, better = row["key"], row["label"], row["unit"], row["better"]
            tip = f"{label}: {key} ({better} is better). {metric(key).description}"
            self.table.setItem(index, 0, _item(row_label(label, unit), tip, right=False))
            self.table.setItem(index, 1, _item(cell_value(row["baseline"], unit)))
            for column, cell in enumerate(row["cells"][1:]):
                tip = ""
                if cell["base_value"] != row["baseline"] and cell["base_value"] is not None:
                    tip = (f"against the baseline's {cell_value(cell['base_value'], unit)} "
                           f"({cell['scope']})")
                self.table.setItem(index, 2 + 2 * column, _item(cell_value(cell["value"], unit),
                                                                tip))
                self.table.setItem(index, 3 + 2 * column,
                                   delta_cell({**cell, "counted": metric(key).exact}))
        header = self.table.horizontalHeader()  # a wide table scrolls; the names stay readable
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)

    def cell_text(self, key: str, run_id: str, delta: bool = False) -> str:
        """The table's text for a figure of a run (its value, or with delta its % change)."""
        labels = {k: row_label(label, unit) for k, label, unit, _ in DELTA_ROWS}
        order = [c["run"] for c in (self.result or {}).get("deltas", [{}])[0].get("cells", [])]
        if run_id not in order:
            raise KeyError(run_id)
        column = 1 if run_id == order[0] else 2 + 2 * (order.index(run_id) - 1) + (
            1 if delta else 0)
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).text() == labels[key]:
                return self.table.item(row, column).text()
        raise KeyError(key)

    def _fill_diff(self) -> None:
        base_id, other_id = self.baseline.currentData(), self.other.currentData()
        diffs = (self.result or {}).get("diffs") or {}
        if base_id is None or other_id is None or base_id == other_id or other_id not in diffs:
            self.diff_keys.setRowCount(0)
            self.diff_text.setPlainText("Choose two different runs to see their settings diff."
                                        if not self._pending else "Comparing…")
            return
        diff = diffs[other_id]
        self.diff_keys.setHorizontalHeaderLabels(("Setting", self.names.get(base_id, base_id),
                                                  self.names.get(other_id, other_id)))
        rows = [(item["key"], [c["value"] for c in item["values"]]) for item in diff["keys"]]
        segments = {item["run"]: "\n".join(item["segments"]) for item in diff["segments"]}
        if segments:
            rows.append(("segments (techniques changed mid-run)",
                         [segments.get(r, "one configuration") for r in (base_id, other_id)]))
        self.diff_keys.setRowCount(len(rows))
        for index, (key, values) in enumerate(rows):
            self.diff_keys.setItem(index, 0, _item(key, key, right=False))
            for column, value in enumerate(values, start=1):
                if value is None:
                    value = "—"
                elif value == {}:
                    value = "on (no parameters)" if key.startswith("techniques.") else "(empty)"
                self.diff_keys.setItem(index, column, _item(str(value), str(value), right=False))
        self.diff_keys.resizeRowsToContents()
        text = diff["unified"][0]["diff"] if diff["unified"] else ""
        self.diff_text.setPlainText(text or "The settings the two runs' workloads read are "
                                    "identical.")
