"""One worker started in the background while the user sets up a run, so Run does not wait for
torch to import.

The worker imports torch, says `hello` and then waits for `start`; it knows nothing of the run
until then, so changing any setting loses nothing. Pressing Run hands the process (and the hello
it already sent) to the run's WorkerLink; a fresh one is started once that run has ended. It is
a plain child process (a new program, never a fork of the app), in a session of its own, killed
with the window.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from PySide6.QtCore import QIODevice, QObject, QProcess, QProcessEnvironment, Signal

from profiler.wire.client import worker_env
from profiler.wire.launch import worker_command


class WarmWorker(QObject):
    """A started worker waiting for its run. `ready` once its hello has arrived."""

    became_ready = Signal()

    def __init__(self, log_path: Path, command: list[str] | None = None,
                 parent: QObject | None = None):
        super().__init__(parent)
        self.command = command or worker_command(None)
        self.log_path = Path(log_path)
        self.received = bytearray()
        """Everything it sent before a run took it (the hello line): the run records it."""
        self.ready = False
        self.process: QProcess | None = QProcess(self)
        process = self.process
        process.setProcessChannelMode(QProcess.ProcessChannelMode.SeparateChannels)
        env = QProcessEnvironment()
        for key, value in worker_env().items():
            env.insert(key, value)
        process.setProcessEnvironment(env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        process.setStandardErrorFile(str(self.log_path), QIODevice.OpenModeFlag.Truncate)
        process.setProgram(self.command[0])
        process.setArguments(self.command[1:])
        if hasattr(QProcess, "UnixProcessParameters") and os.name == "posix":
            params = QProcess.UnixProcessParameters()
            params.flags = QProcess.UnixProcessFlag.CreateNewSession
            process.setUnixProcessParameters(params)
        process.readyReadStandardOutput.connect(self._read)
        process.start()

    @property
    def pid(self) -> int | None:
        pid = self.process.processId() if self.process is not None else 0
        return int(pid) if pid else None

    @property
    def alive(self) -> bool:
        return self.process is not None and \
            self.process.state() != QProcess.ProcessState.NotRunning

    def _read(self) -> None:
        if self.process is None:
            return
        self.received += self.process.readAllStandardOutput().data()
        if not self.ready and b"\n" in self.received:
            self.ready = True
            self.became_ready.emit()

    def take(self) -> tuple[QProcess, bytes, Path]:
        """Hand the process over to a run: (process, bytes it already sent, its log file)."""
        process, self.process = self.process, None
        process.readyReadStandardOutput.disconnect(self._read)
        received = bytes(self.received) + process.readAllStandardOutput().data()
        return process, received, self.log_path

    def kill(self) -> None:
        """End it and its session now (the window closes, or its settings no longer apply)."""
        process, self.process = self.process, None
        if process is None or process.state() == QProcess.ProcessState.NotRunning:
            return
        pid = int(process.processId() or 0)
        try:
            if pid:
                os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, OSError):
            process.kill()
        process.waitForFinished(3000)
        try:
            self.log_path.unlink()
        except OSError:
            pass
