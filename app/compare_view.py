"""Compared runs side by side: a delta table against a chosen baseline, and a config diff.

Every number comes from the runs' own summary.json (the same rows and the same % change as the
report's comparison, profiler.report.compare), so the table says exactly what each run's summary
says. The config diff lists the keys that differ and shows the unified diff of the two
config.toml files.
"""

from __future__ import annotations

import difflib
import math

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
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

from profiler.metrics import format_change, format_value, metric
from profiler.report.compare import DELTA_ROWS, change_pct, delta_rows, flatten
from profiler.significance import TOOLTIPS, describe, judge, run_samples
from profiler.store import RunStore, StoreError

BETTER, WORSE, NEUTRAL = "#15803d", "#b91c1c", "#6b7280"


def summary_value(summary: dict, key: str) -> float | None:
    """A figure's value from a summary; perplexity is exp(final validation loss) unless measured."""
    figures = summary.get("figures") or {}

    def value(name: str) -> float | None:
        found = (figures.get(name) or {}).get("value")
        return float(found) if isinstance(found, (int, float)) else None

    if key == "perplexity" and value("perplexity") is None:
        loss = value("loss_val_final")
        try:
            return math.exp(loss) if loss is not None else None
        except OverflowError:
            return None
    return value(key)


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


def diff_keys(base: dict, other: dict) -> list[str]:
    """Settings that differ, leaves only: an empty section ({}) against an absent one is no
    difference when a setting under it already says what differs (no spurious `techniques {}`
    row), but a technique without parameters switched on is one."""
    keys = [k for k in set(base) | set(other) if base.get(k) != other.get(k) and k not in ("output_dir", "name")]
    def covered(key: str) -> bool:
        return {} in (base.get(key), other.get(key)) and any(
            k.startswith(key + ".") for k in keys)
    return sorted(k for k in keys if not covered(k))


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


class CompareView(QWidget):
    """The ticked runs of the history: deltas against a baseline, and a config diff."""

    def __init__(self, store: RunStore, parent: QWidget | None = None):
        super().__init__(parent)
        self.store = store
        self.run_ids: list[str] = []
        self.names: dict[str, str] = {}
        self.summaries: dict[str, dict] = {}
        self.configs: dict[str, str] = {}
        self.samples: dict[str, dict] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.note = QLabel("Tick two or more runs in the history to compare them.")
        self.note.setObjectName("hint")
        self.note.setWordWrap(True)
        layout.addWidget(self.note)
        top = QHBoxLayout()
        top.addWidget(QLabel("Baseline"))
        self.baseline = QComboBox()
        self.baseline.setObjectName("baselineCombo")
        self.baseline.setToolTip("The run every other run is compared with")
        self.baseline.currentIndexChanged.connect(self._refill)
        top.addWidget(self.baseline, 1)
        top.addSpacing(16)
        top.addWidget(QLabel("Config diff with"))
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

    def set_runs(self, run_ids: list[str], names: dict[str, str]) -> None:
        """Load the ticked runs' summaries and configs (from the store) and redraw."""
        self.run_ids = []
        self.names = {}
        self.summaries.clear()
        self.configs.clear()
        self.samples.clear()
        for run_id in run_ids:
            try:
                run = self.store.open_run(run_id)
            except StoreError:
                continue
            self.run_ids.append(run_id)
            self.names[run_id] = names.get(run_id, run_id)
            self.summaries[run_id] = run.summary() or {}
            self.configs[run_id] = run.config_text()
            self.samples[run_id] = run_samples(run)
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
        enough = len(self.run_ids) >= 2
        self.note.setText(f"{len(self.run_ids)} runs compared against the baseline; the numbers "
                          "are the runs' summary figures." if enough else
                          "Tick two or more runs in the history to compare them.")
        self._refill()

    def set_baseline(self, run_id: str) -> None:
        if run_id in self.run_ids:
            self.baseline.setCurrentIndex(self.run_ids.index(run_id))

    def _refill(self) -> None:
        self._fill_table()
        self._fill_diff()

    def _fill_table(self) -> None:
        base_id = self.baseline.currentData()
        if base_id is None:
            self.table.setRowCount(0)
            self.table.setColumnCount(0)
            return
        others = [r for r in self.run_ids if r != base_id]
        def wrapped(name: str) -> str:  # two short header lines instead of one long one
            return name.replace(" ", "\n", 1) if len(name) > 10 else name

        headers = ["Figure", f"{wrapped(self.names[base_id])}\n(baseline)"]
        for run_id in others:
            headers += [wrapped(self.names[run_id]), "Δ %"]
        rows = []
        for key, label, unit, better in delta_rows([self.summaries[r] for r in [base_id, *others]]):
            values = [summary_value(self.summaries[r], key) for r in [base_id, *others]]
            if all(v is None for v in values):
                continue
            rows.append((key, label, unit, better, values))
        self.table.clear()
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        self.table.setRowCount(len(rows))
        for index, (key, label, unit, better, values) in enumerate(rows):
            self.table.setItem(index, 0, _item(row_label(label, unit),
                                               f"{label}: {key} ({better} is better)", right=False))
            base = values[0]
            self.table.setItem(index, 1, _item(cell_value(base, unit)))
            for column, value in enumerate(values[1:]):
                self.table.setItem(index, 2 + 2 * column, _item(cell_value(value, unit)))
                pct = change_pct(value, base)
                run_id = others[column]
                noise = self.judge(key, better, base_id, run_id)
                text = format_change(pct)
                if pct is not None and noise["verdict"] == "within noise":
                    text += " (within noise)"
                counted = metric(key).exact and noise["verdict"] in ("better", "worse", "apart")
                tip = TOOLTIPS["counted" if counted else noise["verdict"]]
                if noise.get("p_value") is not None:
                    tip += f" {describe(noise)}; {noise['method']}."
                cell = _item(text, tip)
                cell.setData(Qt.ItemDataRole.UserRole, noise["verdict"])
                if pct and noise["verdict"] in ("better", "worse"):
                    cell.setForeground(QColor(BETTER if noise["verdict"] == "better" else WORSE))
                elif pct:
                    cell.setForeground(QColor(NEUTRAL))
                self.table.setItem(index, 3 + 2 * column, cell)
        header = self.table.horizontalHeader()  # a wide table scrolls; the names stay readable
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)

    def judge(self, key: str, better: str | None, base_id: str, run_id: str) -> dict:
        """The verdict on a delta: profiler.significance.judge, the one the CLI and the reports
        use (per-step samples when both runs stored them, else the summary figures' intervals)."""
        return judge(key, better, self.summaries[base_id], self.summaries[run_id],
                     self.samples.get(base_id), self.samples.get(run_id))

    def cell_text(self, key: str, run_id: str, delta: bool = False) -> str:
        """The table's text for a figure of a run (its value, or with delta its % change)."""
        labels = {k: row_label(label, unit) for k, label, unit, _ in DELTA_ROWS}
        base_id = self.baseline.currentData()
        column = 1 if run_id == base_id else None
        if column is None:
            others = [r for r in self.run_ids if r != base_id]
            column = 2 + 2 * others.index(run_id) + (1 if delta else 0)
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).text() == labels[key]:
                return self.table.item(row, column).text()
        raise KeyError(key)

    def _fill_diff(self) -> None:
        base_id, other_id = self.baseline.currentData(), self.other.currentData()
        if base_id is None or other_id is None or base_id == other_id:
            self.diff_keys.setRowCount(0)
            self.diff_text.setPlainText("Choose two different runs to see their config diff.")
            return
        self.diff_keys.setHorizontalHeaderLabels(("Setting", self.names[base_id],
                                                  self.names[other_id]))
        flat = {}
        for run_id in (base_id, other_id):
            try:
                from profiler.config import RunConfig

                flat[run_id] = flatten(RunConfig.from_toml(self.configs[run_id]).to_dict())
            except Exception:  # noqa: BLE001 - a config that no longer loads: text diff only
                flat[run_id] = {}
        keys = diff_keys(flat[base_id], flat[other_id])
        self.diff_keys.setRowCount(len(keys))
        for index, key in enumerate(keys):
            self.diff_keys.setItem(index, 0, _item(key, key, right=False))
            for column, run_id in enumerate((base_id, other_id), start=1):
                value = flat[run_id].get(key, "—")
                if value == {}:
                    value = "on (no parameters)" if key.startswith("techniques.") else "(empty)"
                self.diff_keys.setItem(index, column, _item(str(value), right=False))
        diff = "".join(difflib.unified_diff(
            self.configs[base_id].splitlines(keepends=True),
            self.configs[other_id].splitlines(keepends=True),
            fromfile=f"{self.names[base_id]}/config.toml",
            tofile=f"{self.names[other_id]}/config.toml"))
        self.diff_text.setPlainText(diff or "The two configs are identical.")
