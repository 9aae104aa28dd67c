"""The memory trace for the estimate panel, out of the app's process: `effiscope estimate CONFIG
--json` in a child process (the app never imports torch), its answer checked on arrival
(profiler.figures.memory_fit.valid). One job at a time: a new question ends the one before.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, Signal

from profiler.config import RunConfig
from profiler.figures import memory_fit
from profiler.wire.client import worker_env

OUTPUT_LIMIT = 4 * 1024 * 1024
"""The most the answer may be (a few KiB in practice): more is refused, not read."""


def needs_trace(config: RunConfig) -> bool:
    """Models the torch-free theory cannot break down (a Hugging Face, GGUF or past-run model),
    for the workloads the trace runs."""
    return (getattr(config.model, "source", "preset") != "preset"
            and config.workload in ("train", "infer"))


class TraceJob(QObject):
    """One `effiscope estimate` child; `answered(key, result or None, sentence)` at its end."""

    answered = Signal(str, object, str)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.process: QProcess | None = None
        self.key = ""
        self.folder = tempfile.TemporaryDirectory(prefix="effiscope-estimate-")
        self.output = bytearray()

    def start(self, key: str, config: RunConfig, device: str) -> None:
        """Trace `config` for `device` (cuda or cpu); the job before is ended unanswered."""
        self.stop()
        self.key, self.output = key, bytearray()
        path = Path(self.folder.name) / "config.toml"
        config.save(path)
        process = QProcess(self)
        env = QProcessEnvironment()
        for name, value in worker_env().items():
            env.insert(name, value)
        process.setProcessEnvironment(env)
        process.setProgram(sys.executable)
        process.setArguments(["-m", "profiler.cli", "estimate", str(path), "--json",
                              "--peak-only", "--device", device])  # the panel shows one peak
        if hasattr(QProcess, "UnixProcessParameters") and os.name == "posix":
            params = QProcess.UnixProcessParameters()
            params.flags = QProcess.UnixProcessFlag.CreateNewSession
            process.setUnixProcessParameters(params)
        process.readyReadStandardOutput.connect(self._read)
        process.finished.connect(self._finished)
        self.process = process
        process.start()

    @property
    def running(self) -> bool:
        return self.process is not None

    def _read(self) -> None:
        if self.process is None:
            return
        self.output += self.process.readAllStandardOutput().data()
        if len(self.output) > OUTPUT_LIMIT:
            self.stop()
            self.answered.emit(self.key, None, "the estimate's answer was too long to read")

    def _finished(self, code: int, _status: object) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        self.output += process.readAllStandardOutput().data()
        error = bytes(process.readAllStandardError().data()[-2000:]).decode("utf-8", "replace")
        process.deleteLater()
        lines = [line for line in error.splitlines() if line.startswith("effiscope: ")]
        if code != 0:
            why = lines[-1][len("effiscope: "):] if lines else f"the trace ended with code {code}"
            self.answered.emit(self.key, None, why)
            return
        try:
            result = json.loads(bytes(self.output).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            result = None
        if not memory_fit.valid(result):
            self.answered.emit(self.key, None, "the estimate's answer could not be read")
            return
        self.answered.emit(self.key, result, "")

    def stop(self) -> None:
        """End the running trace (its session too) without an answer."""
        process, self.process = self.process, None
        if process is None:
            return
        process.finished.disconnect(self._finished)
        pid = int(process.processId() or 0)
        try:
            if pid:
                os.killpg(pid, signal.SIGKILL)
        except OSError:
            process.kill()
        process.waitForFinished(3000)
        process.deleteLater()
