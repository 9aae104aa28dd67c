"""The main window: settings on the left, live charts in the middle, run history on the right.

The window holds no measurement logic. It builds a RunConfig, hands it to a WorkerLink, and
draws what the stream says; every worker failure ends up as a message in the window, never as
an exception that takes the app down.
"""

from __future__ import annotations

import signal
import sys
import traceback
from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QApplication,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QScrollArea,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.charts import LiveCharts
from app.history import HistoryPanel
from app.run_controls import RunControls
from app.run_form import RunForm
from app.worker_link import WorkerLink
from profiler.config import ConfigError, validate
from profiler.metrics import format_value
from profiler.recorder import RunRecorder
from profiler.store import RunStore, StoreError
from profiler.system import describe_host

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
STYLE_PATH = ASSETS_DIR / "style.qss"


def host_line(host: dict) -> str:
    """The machine in one status-bar line, from describe_host()."""
    cores = host.get("cpu_cores_logical") or "?"
    line = f"CPU: {host.get('cpu') or 'unknown'}, {cores} cores"
    gpus = host.get("gpus") or []
    if gpus:
        return line + " — GPU: " + ", ".join(str(g.get("name")) for g in gpus)
    return line + f" — no GPU ({host.get('gpu_note') or 'none found'})"


class MainWindow(QMainWindow):
    """EffiScope's window. `add_section` is where later panels (techniques) join the left side."""

    def __init__(self, store: RunStore | None = None):
        super().__init__()
        self.setWindowTitle("EffiScope")
        self.store = store or RunStore()
        self.host = describe_host()
        self.link: WorkerLink | None = None
        self.run_id: str | None = None
        self.worker_command: list[str] | None = None
        """How to launch a worker; None means client.worker_command() (tests put a fake here)."""

        # --- left: settings in sections -----------------------------------------------------------
        left = QWidget()
        left.setObjectName("leftPanel")
        self.sections = QVBoxLayout(left)
        self.sections.setContentsMargins(10, 10, 10, 10)
        self.sections.setSpacing(10)
        cuda = bool(self.host.get("gpus"))
        self.form = RunForm(cuda, self.host.get("gpu_note", ""))
        self.run_controls = RunControls()
        self.run_button = self.run_controls.run_button
        self.stop_button = self.run_controls.stop_button
        self.run_button.clicked.connect(self.start_run)
        self.stop_button.clicked.connect(self.stop_run)
        self.sections.addWidget(self.run_controls)
        self.sections.addStretch(1)
        self.add_section("Model and run", self.form)
        scroll = QScrollArea()
        scroll.setWidget(left)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(left.minimumSizeHint().width()
                               + scroll.verticalScrollBar().sizeHint().width())
        scroll.setFrameShape(QFrame.Shape.NoFrame)

        # --- centre: error banner and charts ------------------------------------------------------
        centre = QWidget()
        centre_layout = QVBoxLayout(centre)
        centre_layout.setContentsMargins(6, 10, 6, 6)
        self.banner = self._build_banner()
        centre_layout.addWidget(self.banner)
        self.charts = LiveCharts()
        centre_layout.addWidget(self.charts, 1)

        # --- right: history -----------------------------------------------------------------------
        self.history = HistoryPanel(self.store)
        self.history.setMinimumWidth(380)
        self.history.setContentsMargins(4, 10, 10, 6)
        self.history.show_on_charts.connect(self.show_stored_run)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(scroll)
        splitter.addWidget(centre)
        splitter.addWidget(self.history)
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setStretchFactor(2, 0)
        splitter.setSizes([scroll.minimumWidth(), 600, 420])
        splitter.setChildrenCollapsible(False)
        self.setCentralWidget(splitter)

        # --- status bar ---------------------------------------------------------------------------
        self.device_label = QLabel(host_line(self.host))
        self.state_label = QLabel("idle")
        self.state_label.setObjectName("stateLabel")
        self.speed_label = QLabel("")
        status = self.statusBar()
        status.addWidget(self.device_label, 1)
        status.addPermanentWidget(self.speed_label)
        status.addPermanentWidget(self.state_label)

        self.history.refresh()

    # --- building -------------------------------------------------------------------------------
    def add_section(self, title: str, widget: QWidget) -> QGroupBox:
        """Add a titled section to the left column, above the Run controls."""
        box = QGroupBox(title)
        layout = QVBoxLayout(box)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(widget)
        self.sections.insertWidget(self.sections.indexOf(self.run_controls), box)
        return box

    def _build_banner(self) -> QFrame:
        banner = QFrame()
        banner.setObjectName("errorBanner")
        layout = QHBoxLayout(banner)
        layout.setContentsMargins(10, 6, 6, 6)
        self.banner_label = QLabel()
        self.banner_label.setWordWrap(True)
        self.banner_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.banner_label, 1)
        dismiss = QToolButton()
        dismiss.setText("×")
        dismiss.setToolTip("Dismiss")
        dismiss.clicked.connect(self.clear_error)
        layout.addWidget(dismiss, 0, Qt.AlignmentFlag.AlignTop)
        banner.hide()
        return banner

    # --- messages to the user -------------------------------------------------------------------
    def show_error(self, message: str, hint: str = "") -> None:
        """A failure, in place above the charts, with what to do about it."""
        text = f"<b>{_escape(message)}</b>"
        if hint:
            text += f"<br>{_escape(hint)}"
        self.banner_label.setText(text)
        self.banner.show()
        self.statusBar().showMessage(message, 15000)

    def clear_error(self) -> None:
        self.banner_label.setText("")
        self.banner.hide()

    def error_text(self) -> str:
        """The banner's text as plain words ("" when no error is shown)."""
        return self.banner_label.text() if self.banner.isVisible() else ""

    # --- running --------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.link is not None and self.link.running

    def start_run(self) -> bool:
        """Validate the form, create the run in the store, start its worker; False if refused."""
        if self.running:
            return False
        self.clear_error()
        if self.form.preset_error:
            self.show_error(self.form.preset_error, "choose another preset or fix the file")
            return False
        try:
            config = validate(self.form.build_config())
        except ConfigError as exc:
            self.show_error(f"Cannot start: {exc}", "Change the setting and press Run again.")
            return False
        except Exception as exc:  # noqa: BLE001 - a bug in checking must not take the window down
            traceback.print_exc()
            self.show_error(f"Cannot start: the settings could not be checked ({exc!r}).",
                            "This is a bug; the traceback is on the terminal.")
            return False
        try:
            run = self.store.create_run(config)
        except StoreError as exc:
            self.show_error(f"Cannot start: {exc}")
            return False
        if self.link is not None:
            self.link.deleteLater()
        self.link = WorkerLink(RunRecorder(self.store, run), self, command=self.worker_command)
        self.link.messages.connect(self._on_messages)
        self.link.ended.connect(self._on_ended)
        self.run_id = run.run_id
        self.charts.clear()
        self.run_controls.starting(run.run_id, config.limits.steps)
        self.speed_label.setText("")
        self._set_state(f"starting {config.name}")
        self.form.set_running(True)
        self.link.start(config.to_dict())
        self.history.refresh(select_id=run.run_id)
        return True

    def stop_run(self) -> None:
        if self.running and self.link is not None and not self.link.stop_requested:
            self.link.stop()
            self._set_state("stopping…")
            self.run_controls.stopping()

    def _set_state(self, text: str) -> None:
        self.state_label.setText(text)

    def _on_messages(self, batch: list[dict]) -> None:
        self.charts.add_samples(batch)
        last = next((m for m in reversed(batch) if m["type"] == "sample"), None)
        if last is not None and self.run_id is not None:
            self.history.show_live(self.run_id, last)
        for message in batch:
            kind = message["type"]
            if kind == "sample":
                self.run_controls.sample(int(message["step"]), float(message["time"]))
                tokens = message["metrics"].get("tokens_per_s")
                if tokens is not None:
                    self.speed_label.setText(format_value(tokens, "tokens/s"))
            elif kind == "hello":
                device = message.get("device", {})
                torch_version = message.get("versions", {}).get("torch", "?")
                self.device_label.setText(f"Worker: {device.get('name', '?')} "
                                          f"({device.get('default', '?')}), torch {torch_version}")
            elif kind == "started":
                run = message["run"]
                model = run.get("model", {})
                params = model.get("parameters")
                size = f", {params / 1e6:.2f}M parameters" if isinstance(params, int) else ""
                self._set_state(f"running {model.get('preset', '?')}{size} on "
                                f"{run.get('device', '?')}")
                self.run_controls.started(run)
            elif kind == "event":
                if message["kind"] == "toggle" and isinstance(message.get("step"), int):
                    self.charts.add_marker(message["step"], message["message"])
                if message["kind"] in ("warning", "refused"):
                    self.statusBar().showMessage(message["message"], 10000)
            elif kind == "error":
                self.show_error(f"Worker error ({message['kind']}): {message['message']}",
                                message["hint"])

    def _on_ended(self, status: str) -> None:
        link = self.link  # one run at a time: the link that ended is the current one
        end = link.end_text if link is not None else status
        self._set_state(status)
        self.form.set_running(False)
        self.run_controls.ended(status, end)
        if status in ("killed", "crashed"):
            kept = link.recorder.samples if link is not None else 0
            headline = "The run was killed" if status == "killed" else "The run crashed"
            self.show_error(f"{headline}: {end}.",
                            f"The {kept} samples received before are kept with the run. "
                            "Press Run to start again.")
        self.charts.redraw_now()
        self.history.refresh(select_id=self.run_id)

    def show_stored_run(self, run_id: str) -> None:
        """Draw a finished run's stored samples (refused while a run is live on the charts)."""
        if self.running:
            self.statusBar().showMessage("A run is in progress; stop it to look at another.", 8000)
            return
        try:
            run = self.store.open_run(run_id)
        except StoreError as exc:
            self.show_error(str(exc))
            return
        self.charts.clear()
        warnings: list[str] = []
        messages = list(run.messages(warnings))
        count = self.charts.add_samples(messages)
        for message in messages:
            if message.get("type") == "event" and message.get("kind") == "toggle" \
                    and isinstance(message.get("step"), int):
                self.charts.add_marker(message["step"], str(message.get("message", "")))
        self.charts.redraw_now()
        self.statusBar().showMessage(f"showing {run_id}: {count} samples"
                                     + (f" ({len(warnings)} damaged lines skipped)"
                                        if warnings else ""), 8000)

    # --- closing --------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        """Closing the window ends the worker too: no process is left behind."""
        if self.link is not None and self.link.running:
            self._set_state("closing: stopping the worker…")
            self.hide()  # gone at once for the user while the worker finishes its step
            self.link.shutdown()
        event.accept()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def load_style(app: QApplication) -> None:
    """The optional light style sheet; the app looks plain but works without it."""
    try:
        text = STYLE_PATH.read_text(encoding="utf-8")
        # Style sheet urls are relative to the working directory, not the sheet: make them absolute.
        app.setStyleSheet(text.replace("{icons}", (ASSETS_DIR / "icons").as_posix()))
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    """Open the window and run the event loop; returns the exit code."""
    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1] + list(argv or []))
    app.setApplicationName("EffiScope")
    app.setApplicationDisplayName("EffiScope")
    load_style(app)
    window = MainWindow()
    window.resize(1280, 860)
    window.show()
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
