"""Run ▸ Find the fastest: an auto-tune of the current settings (profiler.tune), with a live
table and chart of its trials as they finish, and the chosen config one click away.

The search runs in a background thread (profiler.tune.session, as `effiscope tune` runs it:
candidates a running worker can switch are segments of one warm run, the others runs of their
own); the thread only puts plain rows on a queue, and a timer drains it into the table and the
chart, a bounded number per turn. The dialog holds no measurement logic: it shows what
the tune reports.
"""

from __future__ import annotations

import queue
import threading
import time
from html import escape

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from app.tune_charts import TrialCharts, progress_text
from profiler.cli.tune import parse_duration, parse_size
from profiler.config import ConfigError, RunConfig, validate
from profiler.figures import metrics, stats
from profiler.tune import report as tune_report
from profiler.tune import runner, session
from profiler.tune.space import SpaceError, build_space, parse_space

COLUMNS = ("#", "configuration", "figure (median, 95 % interval)", "steps", "peak memory",
           "predicted peak", "run")
MAX_ROWS_PER_TURN = 50
LIST_EVERY_S = 2.0
"""While a tune runs, the history is reloaded this often (its trial in flight is listed)."""


def answer_sentence(report: dict, rows: list[dict], size: int) -> str:
    """The tune's answer; a search that did not get through its space says how far it got
    and never that no candidate beat the answer (most were never tried)."""
    tried = len({r["label"] for r in rows}
                | {str(p.get("label")) for p in report.get("pruned") or [] if isinstance(p, dict)})
    sentence = report["sentence"]
    if size and tried < size:
        chosen = (report.get("chosen") or {}).get("label")
        head = (f"Stopped after {len({r['label'] for r in rows})} of {size} candidates "
                f"({report['stop_reason']}): ")
        if chosen:
            return head + (f"{chosen} is the best of those measured; the "
                           f"{size - tried} not tried may hold a faster one.")
        return head + "nothing was measured to compare."
    return sentence


class TuneDialog(QDialog):
    """The tune of one config; `finished_tune` carries the report when it is done."""

    finished_tune = Signal(dict)
    runs_changed = Signal()
    """The tune wrote runs to the store (its own run, a trial): the history lists them now."""

    def __init__(self, config: RunConfig, caps: dict, store, parent=None, evaluator=None,
                 on_use=None):
        super().__init__(parent)
        self.setWindowTitle("Find the fastest configuration that fits")
        self.resize(980, 640)
        self.config, self.caps, self.store = config, caps, store
        self.evaluator = evaluator
        """None = real trials (worker runs); tests pass a cost model."""
        self.on_use = on_use
        self.report: dict | None = None
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._points: list[tuple[float, float, float, float]] = []
        self._listed_at = 0.0

        self.budget = QLineEdit("15m")
        self.budget.setToolTip("Trial time the search may spend, start-up included (e.g. 90s, "
                               "15m, 1h)")
        self.memory_limit = QLineEdit()
        self.memory_limit.setPlaceholderText("default: free device memory minus 10 % "
                                             "(CPU: available RAM)")
        self.space = QLineEdit()
        self.space.setPlaceholderText("every dimension; e.g. batch; precision=fp32,bf16")
        self.space.setToolTip("Dimensions to search, separated by ';', each optionally with its "
                              "values: batch, checkpoint, precision, optimizer, attention, "
                              "compile, parallel (train); batch, quantize (infer)")
        form = QFormLayout()
        form.addRow("Budget", self.budget)
        form.addRow("Memory limit", self.memory_limit)
        form.addRow("Search space", self.space)
        self.start_button = QPushButton("Start")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.use_button = QPushButton("Use the chosen config")
        self.use_button.setEnabled(False)
        self.use_button.setToolTip("Load the chosen configuration into the settings")
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.use_button.clicked.connect(self.use_chosen)
        buttons = QHBoxLayout()
        for button in (self.start_button, self.stop_button, self.use_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        self.status = QLabel("Trials are short runs in the history, grouped under the tune run "
                             "(candidates a running worker can switch share one run, as its "
                             "segments); what is predicted not to fit is never launched.")
        self.status.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.charts = TrialCharts()
        self.progress = QLabel("")
        self.progress.setObjectName("tuneProgress")
        self.progress.setWordWrap(True)
        self.answer = QLabel("")
        self.answer.setWordWrap(True)
        self.answer.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addWidget(self.progress)
        layout.addWidget(self.table, 3)
        layout.addWidget(self.charts, 2)
        layout.addWidget(self.answer)
        self.timer = QTimer(self)
        self.timer.setInterval(100)
        self.timer.timeout.connect(self.drain)
        self.clock = QTimer(self)  # the progress line, every second from the first
        self.clock.setInterval(1000)
        self.clock.timeout.connect(self._show_progress)
        self.rows: list[dict] = []
        self._space_size = 0
        self._started_at = 0.0
        self._budget_s = 0.0
        self._higher = True
        self._left_s: float | None = None
        """The search's estimate of its time left (session.tune's on_estimate)."""

    # --- starting -------------------------------------------------------------------------------
    def settings(self) -> runner.Settings:
        """The dialog's fields as tune settings; ValueError / SpaceError with a sentence."""
        limit = self.memory_limit.text().strip()
        space = [part for part in self.space.text().split(";") if part.strip()]
        return runner.Settings(budget_s=parse_duration(self.budget.text()),
                               memory_limit=parse_size(limit) if limit else None,
                               dims=parse_space(space, self.config.workload))

    def start(self) -> bool:
        try:
            config = validate(RunConfig.from_dict(self.config.to_dict()))
            settings = self.settings()
            _, _, higher = runner.objective_of(config, settings.objective)
            space = build_space(config, self.caps, settings.dims)
        except (ValueError, ConfigError, SpaceError) as exc:
            self.answer.setText(f"<b>{escape(str(exc))}</b>")
            return False
        objective = runner.DEFAULT_OBJECTIVE[config.workload]
        self.table.horizontalHeaderItem(2).setText(
            f"{objective} ({metrics.metric(objective).unit}; median, 95 % interval)")
        self.charts.set_objective(objective, metrics.metric(objective).unit, higher)
        self.table.setRowCount(0)
        self._points.clear()
        self.rows = []
        self._space_size = space.size()
        self._higher = higher
        self._budget_s = settings.budget_s
        self._started_at = time.monotonic()
        self._left_s = None
        self.answer.setText("")
        self.report = None
        self._stop.clear()
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.use_button.setEnabled(False)
        self.status.setText("searching…")
        self._thread = threading.Thread(target=self._work, args=(config, settings), daemon=True,
                                        name="effiscope-tune")
        self._thread.start()
        self.timer.start()
        self.clock.start()
        self._show_progress()
        return True

    def _show_progress(self) -> None:
        unit = metrics.metric(runner.DEFAULT_OBJECTIVE[self.config.workload]).unit
        self.progress.setText(progress_text(self.rows, self._space_size, 0,
                                            time.monotonic() - self._started_at,
                                            self._budget_s, unit, self._higher, self._left_s))

    def _work(self, config: RunConfig, settings: runner.Settings) -> None:
        put = self._queue.put
        try:
            report = session.tune(
                config, settings, caps=self.caps, store=self.store, evaluator=self.evaluator,
                log=lambda text: put(("log", text)), interrupt=self._stop,
                on_estimate=lambda seconds: put(("estimate", seconds)),
                on_trial=lambda trial, space: put(("trial", tune_report.trial_row(
                    trial, space, {trial.candidate: runner.predicted_peak(space, trial.candidate)}))))
            put(("done", report))
        except Exception as exc:  # noqa: BLE001 - shown in the dialog, never a dead thread
            put(("failed", f"{type(exc).__name__}: {exc}"))

    def stop(self) -> None:
        self._stop.set()
        self.stop_button.setEnabled(False)
        self.status.setText("stopping after the current trial…")

    # --- showing ---------------------------------------------------------------------------------
    def drain(self) -> None:
        """Take what the search has sent, a bounded amount per turn."""
        deadline = time.monotonic() + 0.02
        changed = False
        for _ in range(MAX_ROWS_PER_TURN):
            if time.monotonic() > deadline:
                break
            try:
                kind, payload = self._queue.get_nowait()
            except queue.Empty:
                break
            changed = True  # each line follows a run written (the tune's own, a trial's)
            if kind == "trial":
                self.add_trial(payload)
            elif kind == "log":
                self.status.setText(payload)
            elif kind == "estimate":
                self._left_s = payload
                self._show_progress()
            elif kind == "done":
                self.finish(payload)
            elif kind == "failed":
                self.finish(None, payload)
        # A trial's run is in the store from its start: listed within a couple of seconds.
        if changed or (self.running() and time.monotonic() - self._listed_at > LIST_EVERY_S):
            self._listed_at = time.monotonic()
            self.runs_changed.emit()

    def add_trial(self, row: dict) -> None:
        unit = metrics.metric(runner.DEFAULT_OBJECTIVE[self.config.workload]).unit
        index = self.table.rowCount()
        self.table.insertRow(index)
        figure = (f"failed: {row['error']}" if row["error"]
                  else stats.describe(row["distribution"], unit))
        cells = (str(row["number"]), row["label"], figure, str(row["steps"]),
                 metrics.format_value(row["peak_bytes"], "bytes"),
                 metrics.format_value(row["predicted_bytes"], "bytes"), row["run_id"] or "")
        for column, text in enumerate(cells):
            self.table.setItem(index, column, QTableWidgetItem(text))
        self.rows.append(row)
        self.charts.add(row)
        self._points[:] = self.charts.points
        self._show_progress()

    def finish(self, report: dict | None, failure: str | None = None) -> None:
        self.timer.stop()
        self.clock.stop()
        self.start_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        self.report = report
        if report is None:
            self.status.setText("the tune failed")
            self.answer.setText(f"<b>{escape(failure or 'the tune failed')}</b>")
            return
        pruned = len(report["pruned"])
        self.status.setText(f"tune {report['tune_run']}: {len(report['trials'])} trials, "
                            f"{pruned} predicted not to fit (never launched), "
                            f"{report['stop_reason']}")
        self.progress.setText(progress_text(self.rows, self._space_size, pruned,
                                            time.monotonic() - self._started_at,
                                            self._budget_s, metrics.metric(
                                                report.get("objective") or "tokens_per_s").unit,
                                            self._higher).split("; ")[0] + ".")
        self.answer.setText(f"<b>{escape(answer_sentence(report, self.rows, self._space_size))}"
                            "</b>")
        chosen = report.get("chosen") or {}
        self.use_button.setEnabled(bool(chosen.get("config_file")))
        self.finished_tune.emit(report)

    def use_chosen(self) -> None:
        chosen = (self.report or {}).get("chosen") or {}
        path = chosen.get("config_file")
        if path and self.on_use is not None:
            self.on_use(path)

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def shutdown(self, timeout_s: float = 15.0) -> None:
        """Stop the tune and wait (at most timeout_s) for its trial in flight to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.timer.stop()
        self.close()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self._stop.set()  # a trial in flight is asked to stop; the rest are never started
        super().closeEvent(event)
