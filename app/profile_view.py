"""The profile view: capture N steps of a running worker with torch.profiler, and read the result.

The worker does the capture (profiler/measure/capture.py) and sends one `profile` message: the top
operators, each captured step's time, where the time went (forward / backward / optimizer /
other) and the path of its gzipped Chrome trace, which this view saves wherever the user wants
for Perfetto (ui.perfetto.dev) or chrome://tracing.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.estimate_panel import BreakdownBar
from profiler.figures.metrics import format_value

COLUMNS = (("name", "Operator"), ("calls", "Calls"), ("self_cpu_s", "Self CPU"),
           ("total_cpu_s", "Total CPU"), ("self_cuda_s", "Self CUDA"),
           ("total_cuda_s", "Total CUDA"), ("percent_of_steps", "% of steps"))
PARTS = (("forward_s", "Forward", "#2563eb"), ("backward_s", "Backward", "#7c3aed"),
         ("optimizer_s", "Optimizer", "#db2777"), ("other_s", "Other (data, sync, …)", "#94a3b8"))


WRAPPER = "autograd::engine::evaluate_function: "
"""The autograd engine's span around a backward op: the same op as its inner row."""


def merged_operators(operators: list[dict]) -> list[dict]:
    """One row per operator: the autograd engine's wrapper span ("autograd::engine::
    evaluate_function: AddmmBackward0") and the op inside it ("AddmmBackward0") are one row,
    their self times added (they do not overlap), the wrapper's total kept (it holds the
    op's), the calls counted once."""
    out: dict[str, dict] = {}
    for op in operators:
        name = str(op.get("name", "?"))
        key = name.removeprefix(WRAPPER)
        row = out.get(key)
        if row is None:
            out[key] = {**op, "name": key, "merged": name != key}
            continue
        row["merged"] = True
        for field in ("self_cpu_s", "self_cuda_s", "percent_of_steps"):
            values = [v for v in (row.get(field), op.get(field)) if isinstance(v, (int, float))]
            row[field] = sum(values) if values else None
        for field in ("total_cpu_s", "total_cuda_s", "calls"):
            values = [v for v in (row.get(field), op.get(field)) if isinstance(v, (int, float))]
            row[field] = max(values) if values else None
    return list(out.values())


class _NumberItem(QTableWidgetItem):
    """Sorts by the number behind the text."""

    def __init__(self, text: str, number: float):
        super().__init__(text)
        self.number = number
        self.setFlags(Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled)
        self.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    def __lt__(self, other: QTableWidgetItem) -> bool:
        return self.number < getattr(other, "number", 0.0)


def memory_line(message: dict) -> str:
    """What became of the CUDA memory snapshot a capture was asked for ("" when not asked)."""
    path = message.get("memory_snapshot_path")
    if isinstance(path, str) and path:
        return (f" CUDA memory snapshot: {path} (drag it onto pytorch.org/memory_viz to see "
                "every allocation of these steps).")
    note = message.get("memory_snapshot_note")
    return f" {note[:1].upper()}{note[1:]}." if isinstance(note, str) and note else ""


class ProfileView(QWidget):
    capture_requested = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.profiles: list[dict] = []
        self._capture: list | None = None
        self.warmup_steps = 0
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        top = QHBoxLayout()
        top.addWidget(QLabel("Steps"))
        self.steps = QSpinBox()
        self.steps.setObjectName("profileSteps")
        self.steps.setRange(1, 50)
        self.steps.setValue(5)
        self.steps.setToolTip("How many of the next training steps torch.profiler records")
        top.addWidget(self.steps)
        self.capture_button = QPushButton("Capture profile")
        self.capture_button.setObjectName("captureButton")
        self.capture_button.setToolTip("Record the next N steps of the running train run with "
                                       "torch.profiler (Ctrl+P)")
        self.capture_button.setEnabled(False)
        self.capture_button.clicked.connect(lambda: self.capture_requested.emit(self.steps.value()))
        top.addWidget(self.capture_button)
        self.memory = QCheckBox("CUDA memory snapshot")
        self.memory.setObjectName("memorySnapshotBox")
        self.memory.setToolTip("Also record the CUDA caching allocator's history over the same "
                               "steps, saved in the run folder for pytorch.org/memory_viz "
                               "(GPU only: n/a on a CPU)")
        top.addWidget(self.memory)
        top.addSpacing(12)
        self.which = QComboBox()
        self.which.setObjectName("profileCombo")
        self.which.setToolTip("Captures of this run, newest last")
        self.which.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.which.setMinimumContentsLength(8)
        self.which.currentIndexChanged.connect(self._show_selected)
        top.addWidget(self.which, 1)
        self.save_button = QPushButton("Save trace…")
        self.save_button.setToolTip("Save the Chrome / Perfetto trace (.json.gz) of this capture; "
                                    "open it at ui.perfetto.dev")
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(self._ask_save)
        top.addWidget(self.save_button)
        layout.addLayout(top)
        self.status = QLabel("Start a train run, then press Capture profile to record a few "
                             "steps with torch.profiler.")
        self.status.setObjectName("hint")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status)

        self.breakdown_title = QLabel("Step time breakdown (mean per step, under the profiler)")
        self.breakdown_title.setWordWrap(True)
        self.breakdown_title.setObjectName("sectionTitle")
        layout.addWidget(self.breakdown_title)
        self.bar = BreakdownBar()
        self.bar.setMinimumHeight(18)
        self.bar.setMaximumHeight(18)
        layout.addWidget(self.bar)
        legend = QGridLayout()
        legend.setHorizontalSpacing(14)
        self.part_labels: dict[str, QLabel] = {}
        for index, (key, label, color) in enumerate(PARTS):
            text = QLabel(f"<span style='color:{color}'>■</span> {label}: –")
            legend.addWidget(text, index // 2, index % 2)
            self.part_labels[key] = text
        layout.addLayout(legend)
        self.step_times = QLabel("")
        self.step_times.setObjectName("hint")
        self.step_times.setWordWrap(True)
        layout.addWidget(self.step_times)

        ops_title = QLabel("Top operators (by self time)")
        ops_title.setObjectName("sectionTitle")
        layout.addWidget(ops_title)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("operatorTable")
        self.table.setHorizontalHeaderLabels([label for _, label in COLUMNS])
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setAlternatingRowColors(True)
        self.table.setSortingEnabled(True)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        policy = self.table.sizePolicy()
        policy.setHorizontalPolicy(QSizePolicy.Policy.Ignored)  # scroll, never widen the window
        self.table.setSizePolicy(policy)
        layout.addWidget(self.table, 1)

    # --- state ------------------------------------------------------------------------------------
    def set_capturable(self, ok: bool, why: str = "") -> None:
        self.capture_button.setEnabled(ok)
        self.capture_button.setToolTip("Record the next N steps of the running train run with "
                                       "torch.profiler (Ctrl+P)" if ok else why)

    def clear(self) -> None:
        self.profiles = []
        self._capture = None
        self.which.clear()
        self.table.setRowCount(0)
        self.bar.set_parts([])
        for key, label, color in PARTS:
            self.part_labels[key].setText(f"<span style='color:{color}'>■</span> {label}: –")
        self.step_times.setText("")
        self.save_button.setEnabled(False)

    def capturing(self, steps: int) -> None:
        self._capture = [steps, None]  # steps asked for, the first step recorded
        self.status.setText(f"Capturing the next {steps} steps…")
        self.capture_button.setEnabled(False)

    def step_seen(self, step: int) -> None:
        """A step of the live run went by: while a capture runs, how far it is."""
        if self._capture is None:
            return
        steps, first = self._capture
        if first is None:
            first = self._capture[1] = step
        done = min(step - first + 1, steps)
        self.status.setText(f"Capturing: {done} of {steps} steps recorded (from step {first}); "
                            "the table fills when the last one ends.")

    def set_warmup(self, steps: int) -> None:
        """The run's warmup steps (from its start message), so a capture says whether it
        held any."""
        self.warmup_steps = max(0, int(steps))

    def add_profile(self, message: dict) -> None:
        """A `profile` message from the stream (live or stored): list it and show it."""
        self.profiles.append(message)
        first = message.get("step", "?")
        count = message.get("steps", len(message.get("step_time_s") or []))
        last = int(first) + int(count) - 1 if isinstance(first, int) else "?"
        self.which.addItem(f"steps {first}–{last}")
        self.which.setCurrentIndex(self.which.count() - 1)
        note = message.get("note", "")
        how = str(message.get("how") or "")
        self._capture = None
        warm = ""
        if isinstance(first, int) and isinstance(last, int) and self.warmup_steps:
            if first > self.warmup_steps:
                warm = f"after the {self.warmup_steps} warmup steps. "
            else:
                warm = (f"steps {first}–{min(last, self.warmup_steps)} are warmup steps (slower "
                        "than the rest: caches, first allocations). ")
        self.status.setText(f"Captured {count} steps from step {first}, " + (warm or ". ")
                            + (how[:1].upper() + how[1:] + ". " if how else "") + note
                            + memory_line(message))

    def _show_selected(self, index: int) -> None:
        if not 0 <= index < len(self.profiles):
            return
        self._show(self.profiles[index])

    def _show(self, message: dict) -> None:
        operators = merged_operators([op for op in message.get("operators", [])
                                      if isinstance(op, dict)])
        # CUDA columns only where a GPU ran the capture (a CPU run's would be empty).
        cuda = any(isinstance(op.get("self_cuda_s"), (int, float)) and op["self_cuda_s"] > 0
                   for op in operators)
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(operators))
        for row, op in enumerate(operators):
            name = QTableWidgetItem(str(op.get("name", "?")))
            name.setFlags(Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled)
            name.setToolTip(str(op.get("name", "")) + (
                "\n(with the autograd engine's span around it, merged into one row)"
                if op.get("merged") else ""))
            self.table.setItem(row, 0, name)
            calls = op.get("calls") or 0
            self.table.setItem(row, 1, _NumberItem(f"{calls:,}", float(calls)))
            for column, (key, _label) in enumerate(COLUMNS[2:], start=2):
                value = op.get(key)
                number = float(value) if isinstance(value, (int, float)) else -1.0
                text = format_value(value, "%" if key == "percent_of_steps" else "s")
                self.table.setItem(row, column, _NumberItem(text, number))
        for column in (4, 5):
            self.table.setColumnHidden(column, not cuda)
        self.table.setSortingEnabled(True)
        self.table.sortItems(4 if cuda else 2, Qt.SortOrder.DescendingOrder)
        self.table.scrollToTop()  # opens at the top operator and the first column
        self.table.horizontalScrollBar().setValue(0)
        breakdown = message.get("breakdown")
        how = message.get("breakdown_how")
        # Which clock the parts are on: host time on a CPU, GPU kernel time on CUDA.
        self.breakdown_title.setText("Step time breakdown" + (
            f": {how}" if isinstance(how, str) and how else " (mean per step, under the profiler)"))
        if isinstance(breakdown, dict):
            total = sum(v for v in breakdown.values() if isinstance(v, (int, float))) or 1.0
            self.bar.set_parts([(breakdown.get(key) or 0.0, color) for key, _, color in PARTS])
            for key, label, color in PARTS:
                value = breakdown.get(key)
                share = (f" ({format_value(value / total * 100, '%')})"
                         if isinstance(value, (int, float)) else "")
                self.part_labels[key].setText(f"<span style='color:{color}'>■</span> {label}: "
                                              f"{format_value(value, 's')}{share}")
        else:
            self.bar.set_parts([])
            for key, label, color in PARTS:
                self.part_labels[key].setText(f"<span style='color:{color}'>■</span> {label}: "
                                              "n/a")
        times = message.get("step_time_s") or []
        self.step_times.setText("Captured step times: " + ", ".join(format_value(t, "s")
                                                                    for t in times)
                                if times else "")
        trace = message.get("trace_path")
        self.save_button.setEnabled(bool(trace) and Path(str(trace)).exists())

    def current(self) -> dict | None:
        index = self.which.currentIndex()
        return self.profiles[index] if 0 <= index < len(self.profiles) else None

    def _ask_save(self) -> None:
        profile = self.current()
        if not profile or not profile.get("trace_path"):
            return
        default = Path.home() / Path(str(profile["trace_path"])).name
        path, _ = QFileDialog.getSaveFileName(self, "Save trace for Perfetto", str(default),
                                              "Chrome trace (*.json.gz)")
        if path:
            self.save_trace(path)

    def save_trace(self, path: str) -> bool:
        """Copy the capture's trace (gzipped) to path; the status line says how it went."""
        from profiler.report.trace import write_trace

        profile = self.current()
        if not profile or not profile.get("trace_path"):
            return False
        try:
            write_trace(Path(str(profile["trace_path"])), Path(path))
        except (OSError, ValueError) as exc:
            self.status.setText(f"The trace could not be saved: {exc}")
            return False
        self.status.setText(f"Saved the trace to {path}; open it at ui.perfetto.dev or "
                            "chrome://tracing.")
        return True
