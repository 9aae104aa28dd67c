"""One worker process for one run, driven through QProcess so the event loop never blocks.

The worker's stdout is read in slices with a time budget per event-loop turn: a burst of thousands
of lines is recorded and handed on over several turns instead of freezing the window. Every line
goes to the RunRecorder (stream.jsonl, flushed per line) before anyone draws it, so a worker that
dies keeps everything it sent.
"""

from __future__ import annotations

import os
import signal
import time
from collections import deque

from PySide6.QtCore import QIODevice, QObject, QProcess, QProcessEnvironment, QTimer, Signal

from profiler.config import ConfigError, RunConfig
from profiler.store.recorder import RunRecorder
from profiler.wire import protocol
from profiler.wire.client import failure_explanation, worker_env
from profiler.wire.launch import worker_command

READ_BUDGET_S = 0.008
"""Time one event-loop turn may spend recording lines; the rest waits for the next turn."""
SETUP_GRACE_S = 120.0
"""Longest wait for a worker asked to stop before its run has started (imports, data, model)."""


class WorkerLink(QObject):
    """A worker for one run: start, stop, kill, and the run's messages as Qt signals.

    `messages` carries a list of decoded messages (in order) per event-loop turn; `ended` carries
    the run's final status once the process is gone and the recorder has written summary.json.
    """

    messages = Signal(object)
    ended = Signal(str)

    def __init__(self, recorder: RunRecorder, parent: QObject | None = None,
                 command: list[str] | None = None, stop_grace_s: float = 5.0,
                 exit_grace_s: float = 5.0):
        super().__init__(parent)
        self.recorder = recorder
        self.command = command
        """The launch command; None = profiler.wire.launch.worker_command for the run's config (the
        plain worker, torchrun for a parallel job, ssh for a remote one)."""
        self.config: RunConfig | None = None
        self.stop_grace_s = stop_grace_s
        self.exit_grace_s = exit_grace_s
        self.end_text = ""
        """How the run ended, in words, once `ended` has been emitted."""
        self.lines_handled = 0
        self._partial = bytearray()
        self._lines: deque[bytes] = deque()
        self._start_line = b""
        self._queued: list[bytes] = []
        self._exit: tuple[int | None, bool] | None = None
        self._ended = False
        self._closing = False
        self._stop_sent = False
        self._last_step_time_s = 0.0

        self._warm_log = None
        """The log of a warm worker this run took over (appended to the run's log at the end)."""
        self._process = QProcess(self)
        self._attach(self._process)
        # Leftover lines are picked up on the next turn, after Qt has painted and handled input.
        self._drain_timer = QTimer(self)
        self._drain_timer.setSingleShot(True)
        self._drain_timer.setInterval(0)
        self._drain_timer.timeout.connect(self._drain)
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self._kill_overdue)
        # Heartbeat: a worker that sends nothing for seconds (SIGSTOP, a hang) is said, once.
        self.silence = protocol.SilenceWatch()
        self._silence_timer = QTimer(self)
        self._silence_timer.setInterval(1000)
        self._silence_timer.timeout.connect(self._check_silence)

    def _attach(self, process: QProcess) -> None:
        process.setProcessChannelMode(QProcess.ProcessChannelMode.SeparateChannels)
        process.started.connect(self._on_started)
        process.readyReadStandardOutput.connect(self._on_ready_read)
        process.finished.connect(self._on_finished)
        process.errorOccurred.connect(self._on_error)

    # --- control --------------------------------------------------------------------------------
    def adopt(self, config: dict, warm) -> None:
        """Run on a warm worker (app/warm_worker.py) that has imported torch and waits: what it
        already sent (its hello) is recorded first, then the start command goes out at once."""
        self._start_line = protocol.encode(protocol.start(config), "front").encode("utf-8")
        try:
            self.config = RunConfig.from_dict(config)
        except ConfigError:
            self.config = None
        process, received, self._warm_log = warm.take()
        self.command = warm.command
        self._process.deleteLater()
        process.setParent(self)
        self._process = process
        self._attach(process)
        self._take(received)
        self._drain()  # its hello first, as from a worker started for this run
        self.recorder.note("info", f"run started on a warm worker (pid {process.processId()})")
        if process.state() == QProcess.ProcessState.Running:
            self._on_started()
        else:  # it died while waiting: the run ends as that worker did
            self._on_finished(process.exitCode(), process.exitStatus())

    def start(self, config: dict) -> None:
        """Launch the worker; the start command goes out as soon as the process is up."""
        self._start_line = protocol.encode(protocol.start(config), "front").encode("utf-8")
        try:
            self.config = RunConfig.from_dict(config)
        except ConfigError:
            self.config = None  # the worker answers with its own config error
        if self.command is None:
            self.command = worker_command(self.config)
        env = QProcessEnvironment()
        for key, value in worker_env().items():
            env.insert(key, value)
        self._process.setProcessEnvironment(env)
        self._process.setStandardErrorFile(str(self.recorder.run.log_path),
                                           QIODevice.OpenModeFlag.Append)
        self._process.setProgram(self.command[0])
        self._process.setArguments(self.command[1:])
        if hasattr(QProcess, "UnixProcessParameters") and os.name == "posix":
            # A session of its own: a kill reaches torchrun's ranks too, and the terminal's
            # Ctrl-C reaches the app, which stops the worker through the protocol.
            params = QProcess.UnixProcessParameters()
            params.flags = QProcess.UnixProcessFlag.CreateNewSession
            self._process.setUnixProcessParameters(params)
        self._process.start()
        self._silence_timer.start()

    @property
    def pid(self) -> int | None:
        """The worker's process id while it runs, else None."""
        pid = self._process.processId()
        return int(pid) if pid else None

    @property
    def running(self) -> bool:
        """True until the run has ended and been recorded (process gone, lines handled)."""
        return not self._ended

    @property
    def stop_requested(self) -> bool:
        return self._stop_sent

    def stop(self) -> None:
        """Ask the worker to stop after its current step; kill it if it does not within a grace.

        The grace is at least `stop_grace_s`, and three step times for models whose single step
        is slower than that, so a big model is not killed for being slow.
        """
        if self._ended or self._stop_sent:
            return
        self._stop_sent = True
        self.recorder.stop_requested = True
        self.recorder.note("info", "stop requested by the user")
        if self._process.state() == QProcess.ProcessState.NotRunning:
            return
        self._send(protocol.stop())
        if self.recorder.started is None:
            # Still importing torch and loading data: the worker stops at its first step; the
            # grace starts once it says `started` (a generous ceiling in case it hangs before).
            self._kill_timer.start(int(SETUP_GRACE_S * 1000))
        else:
            self._arm_stop_grace()

    def send_set(self, technique: str, params: dict) -> bool:
        """Change a technique of the running worker (a `set`); False when nothing runs."""
        if self._ended or self._stop_sent:
            return False
        self._send(protocol.set_technique(technique, params))
        self.recorder.note("info", f"set {technique} {params} sent", technique=technique,
                           params=params)
        return True

    def request_profile(self, steps: int, memory: bool = False) -> bool:
        """Ask the running worker to capture the next `steps` steps with torch.profiler (and
        the CUDA memory snapshot of them when `memory`)."""
        if self._ended or self._stop_sent:
            return False
        self._send(protocol.profile_request(int(steps), memory=bool(memory)))
        return True

    def kill(self) -> None:
        """Kill the worker and everything it started (its whole session)."""
        pid = self.pid
        if pid is None:
            return
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, OSError):
            self._process.kill()

    def _arm_stop_grace(self) -> None:
        grace = max(self.stop_grace_s, 3 * self._last_step_time_s)
        self._kill_timer.start(int(grace * 1000))

    def shutdown(self, grace_s: float | None = None) -> None:
        """End the run now (the window is closing): close stdin, wait a little, then kill.

        The worker finishes its step, sends `done` and exits; the wait is the stop grace (three
        step times for slow models). This blocks, so it is only used when the app is going away.
        """
        if self._ended:
            return
        if grace_s is None:
            grace_s = max(self.stop_grace_s, 3 * self._last_step_time_s)
        self._closing = True
        self._kill_timer.stop()
        if self._process.state() != QProcess.ProcessState.NotRunning:
            self.recorder.stop_requested = True
            self.recorder.note("info", "the app is closing: run ended by closing the worker's stdin")
            self._process.closeWriteChannel()
            if not self._process.waitForFinished(int(grace_s * 1000)):
                self.recorder.note("warning", f"the worker did not exit within {grace_s:.0f} s "
                                              "of the app closing; killed it")
                self.kill()
                self._process.waitForFinished(3000)
        if not self._ended:
            # finished was not delivered (never started, or the wait gave up): close the run anyway.
            if self._exit is None:
                self._exit = (None, self._process.exitStatus() == QProcess.ExitStatus.CrashExit)
            self._drain()

    # --- process events -------------------------------------------------------------------------
    def _send(self, message: dict) -> None:
        line = protocol.encode(message, "front").encode("utf-8")
        state = self._process.state()
        if state == QProcess.ProcessState.Running:
            self._process.write(line)
        elif state == QProcess.ProcessState.Starting:
            self._queued.append(line)  # a Stop pressed before the process is up still counts

    def _on_started(self) -> None:
        self._process.write(self._start_line)
        for line in self._queued:
            self._process.write(line)
        self._queued.clear()

    def _on_ready_read(self) -> None:
        self._take(self._process.readAllStandardOutput().data())
        self._drain()

    def _take(self, data: bytes) -> None:
        """Split received bytes into complete lines; a partial line waits for its end."""
        if not data:
            return
        note = self.silence.heard()
        if note:
            self._front_warning(note)
        self._partial += data
        if b"\n" not in data:
            if len(self._partial) > protocol.MAX_LINE_BYTES:
                self.recorder.note("warning", f"dropped {len(self._partial)} bytes from the "
                                              "worker with no line end (over the line limit)")
                self._partial.clear()
            return
        *complete, rest = bytes(self._partial).split(b"\n")
        self._partial = bytearray(rest)
        self._lines.extend(line for line in complete
                           if line.strip() and not protocol.is_heartbeat(line))

    def _check_silence(self) -> None:
        if self._ended or self._process.state() != QProcess.ProcessState.Running:
            return
        note = self.silence.check()
        if note:
            self._front_warning(note)

    def _front_warning(self, text: str) -> None:
        """A warning of the front end's own, recorded and shown like the worker's warnings."""
        self.recorder.note("warning", text)
        self.messages.emit([{"type": "event", "kind": "warning", "message": text,
                             "origin": "front"}])

    def _drain(self) -> None:
        """Record queued lines until this turn's budget is spent; emit them as one batch."""
        deadline = float("inf") if self._closing else time.perf_counter() + READ_BUDGET_S
        batch: list[dict] = []
        while self._lines:
            message = self.recorder.handle_line(self._lines.popleft())
            self.lines_handled += 1
            if message is not None:
                batch.append(message)
            if time.perf_counter() >= deadline:
                break
        for message in batch:
            if message["type"] == "sample":
                step_time = message["metrics"].get("step_time_s")
                if isinstance(step_time, (int, float)):
                    self._last_step_time_s = float(step_time)
            elif message["type"] == "started" and self._stop_sent:
                self._arm_stop_grace()
            elif message["type"] == "done":
                self._after_done()
        if batch:
            self.messages.emit(batch)
        if self._lines:
            self._drain_timer.start()
        elif self._exit is not None:
            self._finalize()

    def _after_done(self) -> None:
        """The run is over: closing stdin makes the worker exit; kill it if it lingers."""
        if self._process.state() == QProcess.ProcessState.NotRunning:
            return
        self._process.closeWriteChannel()
        if not self._closing:
            self._kill_timer.start(int(self.exit_grace_s * 1000))

    def _kill_overdue(self) -> None:
        if self._process.state() == QProcess.ProcessState.NotRunning:
            return
        self.recorder.note("warning", "the worker did not exit in time after a stop or its end; "
                                      "killed it")
        self.kill()

    def _on_finished(self, exit_code: int, exit_status: QProcess.ExitStatus) -> None:
        self._kill_timer.stop()
        self._take(self._process.readAllStandardOutput().data())
        if self._partial.strip():  # a last line without its newline still counts
            self._lines.append(bytes(self._partial))
        self._partial.clear()
        crashed = exit_status == QProcess.ExitStatus.CrashExit
        # Like subprocess: a negative code is the signal that ended the process.
        self._exit = (-exit_code if crashed and exit_code > 0 else exit_code, crashed)
        self._drain()

    def _on_error(self, error: QProcess.ProcessError) -> None:
        if error != QProcess.ProcessError.FailedToStart:
            return  # a crash is followed by finished, which records it
        self.end_text = f"the worker could not start: {self._process.errorString()}"
        self.recorder.note("warning", self.end_text)
        self._exit = (None, False)
        self._drain()

    def _keep_warm_log(self) -> None:
        if self._warm_log is None:
            return
        try:
            with open(self._warm_log, "rb") as src, open(self.recorder.run.log_path, "ab") as dst:
                dst.write(src.read())
            os.unlink(self._warm_log)
        except OSError:
            pass
        self._warm_log = None

    def _finalize(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._silence_timer.stop()
        self._keep_warm_log()
        self._drain_timer.stop()
        self._kill_timer.stop()
        code, crashed = self._exit if self._exit is not None else (None, False)
        explanation = None
        done = self.recorder.done
        if done is None or done.get("status") == "failed":
            # torchrun and ssh say in their log why a job ended (which rank died, no route).
            explanation = failure_explanation(self.recorder, self.config)
        status = self.recorder.finish(code, killed_by_signal=crashed and done is None,
                                      explanation=explanation)
        if not self.end_text:
            summary = self.recorder.run.summary() or {}
            self.end_text = str(summary.get("end", status))
        self.ended.emit(status)
