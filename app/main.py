"""The main window: settings on the left, charts / compare / profile in the middle, history right.

The window holds no measurement logic. It builds a RunConfig from its widgets, hands it to a
WorkerLink, and draws what the stream says; every worker failure ends up as a message in the
window, never as an exception that takes the app down. Menus, settings and export live in
app/window_actions.py; what the window does with a run's messages and stored runs, in
app/window_runs.py.
"""

from __future__ import annotations

import re
import signal
import sys
import traceback

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QCloseEvent, QGuiApplication
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QFrame,
    QGroupBox,
    QLabel,
    QMainWindow,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.charts import LiveCharts
from app.compare_view import CompareView
from app.controls import WheelScrollsPanel, fit_popup
from app.estimate_panel import EstimatePanel
from app.history import HistoryPanel
from app.labels import expected_steps, host_line, killed_hint
from app.launch_form import LaunchForm
from app.messages import MessageArea
from app.profile_view import ProfileView
from app.repeat_runs import RepeatPlan
from app.run_controls import RunControls
from app.run_form import RunForm, on_screen
from app.segment_table import SegmentTable
from app.summary_view import HeadlineStrip, SummaryView
from app.system_panel import SystemPanel
from app.technique_panel import TechniquePanel
from app.theme import AppSettings, apply_theme
from app.warm_worker import WarmWorker
from app.window_actions import WindowActions
from app.window_runs import RunViews
from app.worker_link import WorkerLink
from profiler.config import ConfigError, RunConfig, validate
from profiler.measure.system import describe_host, host_capabilities
from profiler.store import RunStore, StoreError
from profiler.store.recorder import RunRecorder
from profiler.wire.launch import LaunchError, preflight, worker_command


class MainWindow(RunViews, WindowActions, QMainWindow):
    """EffiScope's window. `add_section` adds a titled panel to the left column."""

    def __init__(self, store: RunStore | None = None, settings: AppSettings | None = None,
                 warm_worker: bool = False):
        super().__init__()
        self.setWindowTitle("EffiScope")
        self.store = store or RunStore()
        self.settings = settings or AppSettings()
        self.host = describe_host()
        self.host_caps = host_capabilities()
        self.link: WorkerLink | None = None
        self.export_job = None
        """File > Export to's export being written (app.tracker_export.ExportJob), if any."""
        self.run_id: str | None = None
        self.run_config: RunConfig | None = None
        self.worker_command: list[str] | None = None
        """How to launch a worker; None = profiler.wire.launch.worker_command (tests put a fake here)."""
        self.warm_enabled = warm_worker
        """Keep one worker started in the background (torch imported, waiting for `start`)."""
        self.warm_command: list[str] | None = None
        """The warm worker's command; None = the local worker (tests put a fake here)."""
        self.warm: WarmWorker | None = None
        self._warm_count = 0
        self._closed = False
        self._restart_pending = False
        self.repeats = RepeatPlan()
        """A series of repeats in progress (the Launch section's Repeats)."""
        self._shown_run_id: str | None = None
        self._last_rss: float | None = None
        """The live run's last memory reading (what a killed run's hint says)."""

        # --- left: run controls on top, settings in sections below ------------------------------
        left_host = QWidget()
        left_host.setObjectName("leftPanel")
        left_layout = QVBoxLayout(left_host)
        left_layout.setContentsMargins(10, 10, 6, 0)
        self.run_controls = RunControls()
        self.run_button = self.run_controls.run_button
        self.stop_button = self.run_controls.stop_button
        self.run_button.clicked.connect(self.start_run)
        self.stop_button.clicked.connect(self.stop_run)
        left_layout.addWidget(self.run_controls)
        sections_widget = QWidget()
        sections_widget.setObjectName("leftPanel")
        self.sections = QVBoxLayout(sections_widget)
        self.sections.setContentsMargins(0, 0, 4, 10)
        self.sections.setSpacing(8)
        self.sections.addStretch(1)
        cuda = bool(self.host.get("gpus"))
        self.form = RunForm(cuda, self.host.get("gpu_note", ""))
        self.launch_form = LaunchForm()
        self.techniques = TechniquePanel()
        self.estimate = EstimatePanel()
        self.add_section("Workload, model and data", self.form)
        self.add_section("Techniques", self.techniques)
        self.add_section("Launch", self.launch_form)
        self.estimate_box = self.add_section("Estimate before running", self.estimate)
        self.run_controls.breakdown_button.clicked.connect(
            lambda: self.settings_scroll.ensureWidgetVisible(self.estimate_box))
        scroll = QScrollArea()
        scroll.setWidget(sections_widget)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.settings_scroll = scroll
        left_layout.addWidget(scroll, 1)
        # A long choice must not widen the column: combo boxes size to a short text; their open
        # list is as wide as its longest choice, so no choice is cut there.
        for combo in sections_widget.findChildren(QComboBox):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(6)
            combo.setMinimumWidth(90)
            fit_popup(combo)
        # Nor may a field's widest possible number: the column keeps its width, so nothing is
        # scrolled sideways out of reach (a click aimed at a check box would miss it).
        for spin in sections_widget.findChildren(QAbstractSpinBox):
            spin.setMinimumWidth(80)
        # The wheel over a field scrolls the panel; it never changes a setting.
        self.wheel_filter = WheelScrollsPanel(scroll, self)
        self.wheel_filter.watch(sections_widget)
        left_host.setMinimumWidth(300)
        self.left_panel = left_host

        # --- centre: the headline, the tabs; the error banner and notices float over its foot ---
        centre = QWidget()
        centre_layout = QVBoxLayout(centre)
        centre_layout.setContentsMargins(6, 6, 6, 6)
        # Not in the layout: a message that appears never moves what is under the mouse.
        self.messages = MessageArea(centre, show_log=lambda run_id: self.show_log(run_id))
        self.banner, self.notice = self.messages.banner, self.messages.notice
        self.banner_label, self.notice_label = self.messages.banner_label, \
            self.messages.notice_label
        self.log_button = self.messages.log_button
        self.headline = HeadlineStrip()  # the answer first: the shown run's four figures
        centre_layout.addWidget(self.headline)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.charts = LiveCharts()
        self.summary_view = SummaryView(self.store)
        self.compare = CompareView(self.store)
        self.profile = ProfileView()
        self.system = SystemPanel()
        # Under the charts: each configuration's figures of a run that changed mid-run.
        self.segments = SegmentTable()
        self.charts.layout().addWidget(self.segments)
        self.segments.watch(self.charts, self.charts.toolbar)
        self.tabs.addTab(self.charts, "Charts")
        self.tabs.addTab(self.summary_view, "Summary")
        self.tabs.addTab(self.compare, "Compare")
        self.tabs.addTab(self.profile, "Profile")
        self.tabs.addTab(self.system, "System")
        centre_layout.addWidget(self.tabs, 1)

        # --- right: history ---------------------------------------------------------------------
        self.history = HistoryPanel(self.store)
        self.history.setMinimumWidth(250)
        centre.setMinimumWidth(380)
        self.history.setContentsMargins(4, 10, 10, 6)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setObjectName("mainSplitter")
        for widget in (left_host, centre, self.history):
            self.splitter.addWidget(widget)
        # A wider window widens the side columns too (the run table most): names stay readable.
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 3)
        self.splitter.setStretchFactor(2, 2)
        self.splitter.setSizes([300, 620, 360])
        self.splitter.setChildrenCollapsible(False)
        self.setCentralWidget(self.splitter)

        # --- status bar ---------------------------------------------------------------------------
        self.device_label = QLabel(host_line(self.host))
        self.state_label = QLabel("idle")
        self.state_label.setObjectName("stateLabel")
        self.speed_label = QLabel("")
        self.load_label = QLabel("")  # other processes' CPU now (profiler.figures.busy.live_text)
        self.load_label.setObjectName("loadLabel")
        self.load_label.setToolTip("CPU used by processes outside the run's own tree over the "
                                   "last second or so; above a quarter of a core (or a tenth of "
                                   "the machine) the speed figures are unreliable")
        self.worker_cores: int | None = None
        status = self.statusBar()
        status.addWidget(self.device_label, 1)
        status.addPermanentWidget(self.load_label)
        status.addPermanentWidget(self.speed_label)
        status.addPermanentWidget(self.state_label)

        # --- wiring -------------------------------------------------------------------------------
        self._check_timer = QTimer(self)
        self._check_timer.setSingleShot(True)
        self._check_timer.setInterval(150)
        self._check_timer.timeout.connect(self.check_settings)
        for source in (self.form.changed, self.launch_form.changed, self.techniques.changed):
            source.connect(self._check_timer.start)
        self.form.preset_loaded.connect(lambda _name: self._preset_loaded())
        self.form.learning_rate.valueChanged.connect(self._learning_rate_changed)
        self.techniques.live_change.connect(self.send_change)
        self.techniques.restart_requested.connect(self.restart_run)
        self.history.show_on_charts.connect(self.show_stored_run)
        self.history.compare_changed.connect(self.set_compared)
        self.history.run_deleted.connect(self._run_deleted)
        self.history.run_renamed.connect(self._run_renamed)
        self.history.load_settings.connect(self.load_run_settings)
        self.history.selection_changed.connect(self.show_summary)
        self.history.table.itemSelectionChanged.connect(self._selection_moved)
        self.charts.overlays_cleared.connect(self.history.uncheck_all)
        self.charts.exported.connect(self._chart_exported)
        self.profile.capture_requested.connect(self.capture_profile)
        self.build_menus()
        self._preset_loaded()
        self.history.refresh()
        self.check_settings()

    # --- building -------------------------------------------------------------------------------
    def add_section(self, title: str, widget: QWidget) -> QGroupBox:
        """Add a titled section to the left column (above the stretch at its end)."""
        box = QGroupBox(title)
        layout = QVBoxLayout(box)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(widget)
        self.sections.insertWidget(self.sections.count() - 1, box)
        return box

    # --- messages to the user (app/messages.py owns them) ----------------------------------------
    def show_error(self, message: str, hint: str = "", run_id: str | None = None) -> None:
        """A failure, over the foot of the charts, with what to do about it (and its log); the
        status bar says what happened in a few words (a long sentence there would be cut)."""
        self.messages.show_error(message, hint, run_id)
        self.statusBar().showMessage(message.split(":")[0].rstrip("."), 15000)

    def clear_error(self) -> None:
        self.messages.clear_error()

    def error_text(self) -> str:
        return self.messages.error_text()

    def add_notice(self, text: str) -> None:
        self.messages.add_notice(text)

    def clear_notices(self) -> None:
        self.messages.clear_notices()

    def notice_text(self) -> str:
        return self.messages.notice_text()

    # --- settings -> config ---------------------------------------------------------------------
    def build_config(self) -> RunConfig:
        """Everything the widgets say, as one (unvalidated) RunConfig."""
        config = self.form.build_config()
        self.launch_form.apply(config)
        if config.workload != self.techniques.workload:  # what applies depends on it
            self.techniques.set_context(self.capabilities(config), config.workload)
        config.techniques = self.techniques.techniques()
        return config

    def set_config(self, config: RunConfig) -> None:
        """Show a config in every widget (a preset, a loaded file, the last session's)."""
        self.form.set_config(config)
        self.launch_form.set_config(config)
        self.techniques.set_techniques(config.techniques)
        self.check_settings()

    def _preset_loaded(self) -> None:
        base = self.form.base
        self.launch_form.set_config(base)
        self.techniques.set_techniques(base.techniques)
        self.check_settings()

    def capabilities(self, config: RunConfig) -> dict:
        """This machine's capabilities as the run would see them (device and job size); none
        for a remote host, whose machine only its worker can describe (it refuses what fails)."""
        if config.launch.ssh:
            return {}
        caps = {**self.host_caps,
                "world_size": config.launch.nproc_per_node * config.launch.nnodes}
        if config.device == "cpu":
            caps.update(cuda=False, cuda_capability=None, device="cpu")
        return caps

    def check_settings(self) -> str:
        """Availability, estimate and the validation sentence for the current widgets."""
        try:
            config = self.build_config()
        except Exception as exc:  # noqa: BLE001 - a broken widget state must not crash the app
            self.run_controls.set_problem(str(exc))
            return str(exc)
        self.techniques.set_context(self.capabilities(config), config.workload)
        self.launch_form.check(config)
        self.estimate.update_for(config, self.host)
        problem = ""
        try:
            validate(config)
        except ConfigError as exc:
            problem = on_screen(str(exc))
        except Exception as exc:  # noqa: BLE001
            problem = f"the settings could not be checked ({exc})"
        if not problem:
            unavailable = [(name, self.techniques.reason(name)) for name in config.techniques
                           if name in self.techniques.rows and self.techniques.reason(name)]
            if unavailable:
                name, why = unavailable[0]
                problem = on_screen(f"techniques.{name}: {why}")
        if problem:  # no "Fits" for settings that cannot run
            self.estimate.no_verdict(problem)
        if not self.running:
            self.run_controls.set_problem(problem, self.estimate.fit.text())
        return problem

    # --- running --------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.link is not None and self.link.running

    def start_run(self) -> bool:
        """Validate the settings, create the run in the store, start its worker; False if refused."""
        if self.running:
            return False
        self.clear_error()
        if self.form.preset_error:
            self.show_error(self.form.preset_error, "Choose another preset or fix the file.")
            return False
        try:
            config = validate(self.build_config())
            preflight(config)
        except (ConfigError, LaunchError) as exc:
            self.show_error(f"Cannot start: {on_screen(str(exc))}",
                            "Change the setting and press Run again.")
            return False
        except Exception as exc:  # noqa: BLE001 - a bug in checking must not take the window down
            traceback.print_exc()
            self.show_error(f"Cannot start: the settings could not be checked ({exc!r}).",
                            "This is a bug; the traceback is on the terminal.")
            return False
        config.name = self.repeats.name_for(  # "nano #3", or "nano #3 repeat 2/3"
            self.launch_form.repeats.value(), self.unique_run_name(config.name or config.model.preset))
        try:
            run = self.store.create_run(config)
            self.repeats.started(self.store, run)
        except StoreError as exc:
            self.show_error(f"Cannot start: {exc}")
            return False
        if self.link is not None:
            self.link.deleteLater()
        mirror, mirror_problem = self.launch_form.mirror_for(run)  # --tensorboard's twin
        self.link = WorkerLink(RunRecorder(self.store, run, mirror), self,
                               command=self.worker_command)
        self.clear_notices()
        if mirror_problem:
            self.add_notice(mirror_problem)
        self._last_rss = None
        self.charts.live_run_label = config.name
        self.link.messages.connect(self._on_messages)
        self.link.ended.connect(self._on_ended)
        self.run_id = self._shown_run_id = run.run_id
        self.run_config = config
        self.charts.clear()
        self.sync_overlays()
        self.segments.start_live()
        self.profile.clear()
        self.system.start_run(remote=bool(config.launch.ssh))
        self.run_controls.starting(run.run_id, expected_steps(config),
                                   config.distill.teacher_train_steps
                                   if config.workload == "distill" else 0)
        self.run_controls.set_problem("")
        self.speed_label.setText("")
        self.show_load(None)
        self._set_state(f"starting {config.name or config.model.preset}")
        self._freeze(True, config)
        payload = config.to_dict()
        payload["output_dir"] = str(run.path)  # artifacts (profiler traces) go to the run folder
        if self._warm_fits(config):
            warm, self.warm = self.warm, None
            self.link.adopt(payload, warm)
            warm.deleteLater()
        else:
            self.link.start(payload)
        self.history.live_run_id = run.run_id
        self.history.refresh(select_id=run.run_id)
        self.remember_config(config)
        return True

    def _next_repeat(self) -> None:
        """Start the series' next repeat; one that cannot start ends the series."""
        self.repeats.continuing = True
        if not self.start_run():
            self.repeats.continuing = False
            for line in self.repeats.cancel(self.store):
                self.add_notice(line.strip())

    def unique_run_name(self, base: str) -> str:
        """"nano #3": the preset's name and a number no stored run of that name has, so legends
        and the history never read "nano, nano"."""
        base = re.sub(r"\s+#\d+(?: repeat \d+/\d+)?$", "", base).strip() or "run"
        taken = set()
        try:
            for row in self.store.list_runs():
                found = re.fullmatch(re.escape(base) + r"\s+#(\d+)(?: repeat \d+/\d+)?",
                                     str(row.get("name") or ""))
                if found:
                    taken.add(int(found[1]))
        except (StoreError, OSError):
            pass
        return f"{base} #{max(taken, default=0) + 1}"

    # --- the warm worker --------------------------------------------------------------------------
    def start_warm_worker(self) -> None:
        """Start a worker in the background (once): torch imports while the user sets up."""
        if not self.warm_enabled or self._closed or self.running or (
                self.warm is not None and self.warm.alive):
            return
        if self.warm is not None:
            self.warm.deleteLater()
        self._warm_count += 1
        log = self.store.home / "warm-workers" / f"{id(self):x}-{self._warm_count}.log"
        self.warm = WarmWorker(log, self.warm_command, self)

    def _warm_fits(self, config: RunConfig) -> bool:
        """The warm worker serves a plain local run (not torchrun, not ssh, not a test's fake)."""
        if self.warm is None or not self.warm.alive or self.worker_command is not None:
            return False
        return self.warm_command is not None or worker_command(config) == worker_command(None)

    def stop_warm_worker(self) -> None:
        if self.warm is not None:
            self.warm.kill()
            self.warm.deleteLater()
            self.warm = None

    def _freeze(self, running: bool, config: RunConfig | None = None) -> None:
        self.form.set_running(running)
        self.launch_form.set_running(running)
        self.techniques.set_running(running, config.techniques if config else None)
        self.profile.set_capturable(running and config is not None and config.workload == "train",
                                    "Profiles are captured from a running train run.")
        self.action_run.setEnabled(not running)
        self.action_stop.setEnabled(running)

    def stop_run(self) -> None:
        if self.running and self.link is not None and not self.link.stop_requested:
            self.link.stop()
            self._set_state("stopping…")
            self.run_controls.stopping()

    def restart_run(self) -> None:
        """Stop the running run and start a new one with the widgets' settings."""
        if not self.running:
            self.start_run()
            return
        self._restart_pending = True
        self.stop_run()

    def _chart_exported(self, text: str, ok: bool) -> None:
        """Where a chart's CSV / PNG went (in the status bar), or why not (in the banner)."""
        if ok:
            self.statusBar().showMessage(text, 15000)
        else:
            self.show_error(text, "Choose a folder you can write to.")

    def _set_state(self, text: str) -> None:
        self.state_label.setText(text)

    def _on_ended(self, status: str) -> None:
        link = self.link  # one run at a time: the link that ended is the current one
        end = link.end_text if link is not None else status
        self._set_state(status)
        self._freeze(False)
        self.speed_label.setText("")  # no figure of a run that is over stays in the status bar
        self.show_load(None)
        self.run_controls.ended(status, end)
        self.history.live_run_id = None
        if link is not None and link.recorder.mirror.problem:
            self.add_notice(link.recorder.mirror.problem)
        if status in ("killed", "crashed", "failed") and not self.error_text():
            kept = link.recorder.samples if link is not None else 0
            headline = {"killed": "The run was killed", "crashed": "The run crashed",
                        "failed": "The run failed"}[status]
            hint = (killed_hint(end, self._last_rss, self.host.get("memory_total_bytes"), kept)
                    if status in ("killed", "crashed") else
                    f"The {kept} samples received before are kept with the run. Press Run to "
                    "start again.")
            self.show_error(f"{headline}: {end}.", hint, run_id=self.run_id)
        self.charts.redraw_now()
        self.history.refresh(select_id=self.run_id)
        self.check_settings()
        follow, spread = (False, self.repeats.cancel(self.store)) if self._restart_pending \
            else self.repeats.ended(status, self.store)
        for line in spread:  # a series of repeats is over: the spread across its runs
            self.add_notice(line.strip())
        if self._restart_pending:
            self._restart_pending = False
            QTimer.singleShot(0, self.start_run)
        elif follow:
            QTimer.singleShot(0, self._next_repeat)
        else:
            QTimer.singleShot(0, self, self.start_warm_worker)

    def take_focus(self) -> None:
        """Make this the active window with keyboard focus (at launch; a no-op once it is)."""
        if self.isActiveWindow() or not self.isVisible():
            return
        self.raise_()
        self.activateWindow()
        self.run_button.setFocus(Qt.FocusReason.ActiveWindowFocusReason)

    # --- closing --------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        """Closing the window ends the worker too: no process is left behind. Closed by the user
        (its close button) while a run goes, it asks first, as Ctrl+Q does."""
        if event.spontaneous() and not getattr(self, "_quit_confirmed", False) \
                and not self.confirm_quit():
            event.ignore()
            return
        self._closed = True
        self.save_window_settings()
        self.stop_warm_worker()
        if self.export_job is not None:
            self._set_state("closing: finishing the export…")
            self.export_job.wait()  # its files whole, not cut off by the exit
        if getattr(self, "tune_dialog", None) is not None:
            self.tune_dialog.shutdown()  # a tune's trial in flight is stopped, not orphaned
        if self.link is not None and self.link.running:
            self._set_state("closing: stopping the worker…")
            self.hide()  # gone at once for the user while the worker finishes its step
            self.link.shutdown()
        event.accept()


def main(argv: list[str] | None = None) -> int:
    """Open the window and run the event loop; returns the exit code."""
    app = QApplication.instance()
    if app is None:
        QGuiApplication.setHighDpiScaleFactorRoundingPolicy(
            Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
        app = QApplication(sys.argv[:1] + list(argv or []))
    app.setApplicationName("EffiScope")
    app.setApplicationDisplayName("EffiScope")
    app.setOrganizationName("EffiScope")
    settings = AppSettings()
    apply_theme(app, settings.theme)
    window = MainWindow(settings=settings, warm_worker=True)
    window.restore_window_settings()
    window.show()
    # Keyboard focus on the window at launch: Ctrl+R works before any click. Asked again once
    # the window is on screen (X only grants focus to a mapped window, and without a window
    # manager nobody else gives it).
    for delay_ms in (0, 150, 500, 1000):
        QTimer.singleShot(delay_ms, window, window.take_focus)
    QTimer.singleShot(0, window, window.start_warm_worker)
    # Ctrl-C or a SIGTERM closes the window (ending its worker and recording the run) instead of
    # killing the app mid-run: Python runs handlers between bytecodes, a slow timer gives it turns.
    previous = {signum: signal.signal(signum, lambda *_: window.close())
                for signum in (signal.SIGINT, signal.SIGTERM)}
    wake = QTimer()
    wake.timeout.connect(lambda: None)
    wake.start(250)
    try:
        code = app.exec()
    finally:
        wake.stop()
        window.close()  # ends a worker still running when the loop was quit another way
        window.deleteLater()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
