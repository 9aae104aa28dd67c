"""Run and Stop, the progress bar with its ETA, and the worker's account of the run in words.

The ETA is read off the stream's own clock (the sample's `time`), so a window that was busy
for a moment does not make the run look slower than it is.
"""

from __future__ import annotations

from html import escape

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget


def run_description(run: dict) -> str:
    """The worker's `started` account of a run, as a few lines for the left column."""
    model = run.get("model", {})
    params = model.get("parameters")
    lines = [f"{model.get('preset', '?')}"
             + (f", {params:,} parameters" if isinstance(params, int) else "")
             + f", on {run.get('device', '?')}"]
    tokens = run.get("tokens_per_step")
    if isinstance(tokens, int):
        changes = [c for c in run.get("token_changes") or () if isinstance(c, tuple)]
        if changes:  # changed mid-run: the tokens per step now, and since when
            step, now = changes[-1]
            before = changes[-2][1] if len(changes) > 1 else tokens
            lines.append(f"{now:,} tokens per step from step {step} ({before:,} before), "
                         f"{run.get('steps', '?')} steps ({run.get('warmup_steps', 0)} warmup)")
        else:
            lines.append(f"{tokens:,} tokens per step, {run.get('steps', '?')} steps "
                         f"({run.get('warmup_steps', 0)} warmup)")
    if run.get("data"):
        lines.append(f"Data: {run['data']}")
    return "\n".join(lines)


def clock(seconds: float) -> str:
    """Seconds as m:ss (h:mm:ss past an hour)."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class RunControls(QWidget):
    """The buttons and the progress of the current run; the window wires the buttons."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.setObjectName("runButton")
        self.run_button.setToolTip("Start a run with these settings (Ctrl+R)")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("stopButton")
        self.stop_button.setToolTip("Stop after the current step; the run is kept (Esc)")
        self.stop_button.setEnabled(False)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.stop_button)
        layout.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("")
        layout.addWidget(self.progress)
        self.eta_label = QLabel("")
        self.eta_label.setObjectName("hint")
        self.eta_label.setWordWrap(True)  # "killed: the worker was killed (exit code -9) …"
        layout.addWidget(self.eta_label)
        self.validation = QLabel("")
        self.validation.setObjectName("validation")
        self.validation.setWordWrap(True)
        # Always there, at a fixed height: a sentence appearing never pushes the panel down
        # under the mouse (the next click would land on another control).
        self.validation.setFixedHeight(self.validation.fontMetrics().lineSpacing() * 4 + 4)
        self.validation.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.validation.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(self.validation)
        self.breakdown_button = QPushButton("Memory breakdown…")
        self.breakdown_button.setObjectName("smallButton")
        self.breakdown_button.setToolTip("Show the predicted memory by part and the FLOPs "
                                         "(the Estimate section of the settings)")
        self.breakdown_button.hide()
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.breakdown_button)
        layout.addLayout(row)
        self.run_info = QLabel("Press Run to start; the run's figures stream into the charts.")
        self.run_info.setObjectName("hint")
        self.run_info.setWordWrap(True)
        self.run_info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addSpacing(6)
        layout.addWidget(self.run_info)
        self.steps = 0
        self.teacher_steps = 0
        self.counting = ""
        self._run: dict | None = None
        self._origin: tuple[float, int] | None = None
        self.last_step = 0

    def set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.stop_button.setEnabled(running)

    def set_problem(self, text: str, estimate: str = "") -> None:
        """What validate says about the current settings, under the buttons; with nothing to
        say, the memory estimate's verdict (found without scrolling to its section)."""
        if text:
            self.validation.setText(f"Cannot run yet: {escape(text)}")
        elif estimate:
            self.validation.setText(f"Estimate: {escape(estimate)}")
        else:
            self.validation.setText("")
        self.breakdown_button.setVisible(bool(estimate) and not text)
        self.validation.setProperty("state", "problem" if text else "estimate")
        self.validation.style().unpolish(self.validation)
        self.validation.style().polish(self.validation)
        self.validation.setToolTip(text or estimate)

    def starting(self, run_id: str, steps: int, teacher_steps: int = 0) -> None:
        """A run starts: `steps` to count, and for a distill run the teacher's own steps first
        (the bar says which it counts)."""
        self.steps = steps
        self.teacher_steps = teacher_steps
        self.counting = ""
        self._origin = None
        self.last_step = 0
        self.set_running(True)
        self.progress.setRange(0, 0)  # busy until the first step
        self.progress.setFormat("")
        self.eta_label.setText("starting the worker…")
        self.run_info.setText(f"Run {run_id}")
        self._run = None

    def started(self, run: dict) -> None:
        self.steps = int(run.get("steps") or self.steps)
        self.eta_label.setText("first step…")
        self._run = dict(run, token_changes=[])
        self.run_info.setText(run_description(self._run))

    def tokens_changed(self, step: int, tokens: int) -> None:
        """A mid-run change announced new tokens per step (a toggle event): the account says
        it, and from which step."""
        if self._run is None:
            return
        self._run["token_changes"].append((step, tokens))
        self.run_info.setText(run_description(self._run))

    def showing(self, name: str, run: dict | None, changes: list[tuple[int, int]],
                last_step: int = 0, end: str = "") -> None:
        """A stored run drawn on the charts: the account and the progress describe that run,
        not the last live one (`changes`: its (step, tokens per step) toggles; `last_step`: the
        last step its stream holds; `end`: how it ended, "stopped: stopped on request")."""
        self._run = None
        steps = run.get("steps") if run else None
        if isinstance(steps, int) and not isinstance(steps, bool) and steps > 0 and last_step:
            self.progress.setRange(0, steps)
            self.progress.setValue(min(last_step, steps))
            self.progress.setFormat(f"step {last_step} / {steps}")
        else:
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            self.progress.setFormat("")
        self.eta_label.setText(end)
        account = (run_description(dict(run, token_changes=changes)) if run
                   else "its worker never described it (no started message)")
        self.run_info.setText(f"Showing stored run {name}:\n{account}")

    def stopping(self) -> None:
        self.stop_button.setEnabled(False)
        self.eta_label.setText("stopping after this step…")

    def sample(self, step: int, time_s: float, phase: str = "") -> None:
        """Progress and ETA from one sample (step 0 is the validation before training). A
        distill run trains its teacher first ("teacher" samples): the bar says which steps it
        counts, and the ETA is of that phase."""
        if step <= 0:
            return
        teacher = phase == "teacher"
        counting = "teacher" if teacher else ("student" if self.teacher_steps else "")
        total = self.teacher_steps if teacher else self.steps
        if counting != self.counting:  # a new phase: its own bar and its own clock
            self.counting = counting
            self._origin = None
        if not teacher:
            self.last_step = step
        self.progress.setFormat(f"{counting + ' ' if counting else ''}step {step} / {total}")
        if self.progress.maximum() != total:
            self.progress.setRange(0, max(1, total))
        self.progress.setValue(min(step, total))
        if self._origin is None:
            self._origin = (time_s, step)
        origin_time, origin_step = self._origin
        if step > origin_step and time_s > origin_time:
            per_step = (time_s - origin_time) / (step - origin_step)
            left = per_step * (total - step)
            self.eta_label.setText(f"training the teacher first: {clock(left)} left, then the "
                                   f"student's {self.steps} steps" if teacher
                                   else f"ETA {clock(left)}")

    def ended(self, status: str, end: str) -> None:
        self.set_running(False)
        self.progress.setRange(0, max(1, self.steps))
        self.progress.setValue(min(self.last_step, self.steps))
        if not self.last_step:
            self.progress.setFormat("")
        self.eta_label.setText(f"{status}: {end}")
