"""Launching a worker from a script (CLI, tests): a subprocess with pipes and a reader thread.

The Qt app does the same with QProcess; both hand every line to a RunRecorder.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from profiler import protocol

EOF = object()


def worker_command() -> list[str]:
    """How to start a local worker: this interpreter, so the worker sees the same packages."""
    return [sys.executable, "-m", "profiler.worker"]


def failure_explanation(recorder, config=None) -> str | None:
    """Why a worker (or a torchrun job) ended without `done`, read from its log."""
    from profiler.launch import explain_failure

    try:
        with open(recorder.run.log_path, encoding="utf-8", errors="replace") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 200_000))
            text = fh.read()
    except OSError:
        return None
    return explain_failure(text, config)


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class WorkerProcess:
    """A worker child process; `lines` yields raw protocol lines, then EOF when it exits."""

    def __init__(self, log_path: str | Path | None = None, command: list[str] | None = None):
        self._log: IO | int
        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        # A session of its own: the terminal's Ctrl-C reaches the CLI, which asks the worker to
        # stop through the protocol instead of killing it mid-step.
        self.proc = subprocess.Popen(
            command or worker_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._log, env=worker_env(), start_new_session=True,
        )
        self.lines: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True, name="effiscope-reader")
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(EOF)

    def send(self, message: dict) -> bool:
        """Send one command; False when the worker is no longer listening."""
        if self.proc.stdin is None or self.proc.stdin.closed:
            return False
        try:
            self.proc.stdin.write(protocol.encode(message, "front").encode("utf-8"))
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    def close_stdin(self) -> None:
        try:
            if self.proc.stdin and not self.proc.stdin.closed:
                self.proc.stdin.close()
        except OSError:
            pass

    def kill(self) -> None:
        """Kill the worker and everything it started (its whole session)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def exited(self) -> bool:
        """Whether the worker process has ended, without reaping it: while it is unreaped its
        process group id cannot be reused, so `kill()` still reaches only what it started."""
        if self.proc.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def shutdown(self, grace_s: float = 3.0) -> int:
        """Close stdin (the worker ends its run), wait up to grace_s, then kill what is left.

        Children the worker leaves behind (compile workers, a rank) die with it: the whole
        process group is killed before the worker is reaped.
        """
        self.close_stdin()
        deadline = time.monotonic() + grace_s
        while not self.exited() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.kill()
        code = self.wait(5)
        if not isinstance(self._log, int):
            self._log.close()
        return code if code is not None else -9


def run_to_completion(config_dict: dict, recorder, on_message=None, stop_after_s: float | None = None,
                      interrupt: threading.Event | None = None, command: list[str] | None = None) -> str:
    """Start a worker, send the config, record every message until done; return the run status.

    `on_message(message)` sees every message; the commands it returns (a list, or None) are sent.

    `interrupt` (set from a signal handler or another thread) asks the worker to stop cleanly; if
    it is set twice in a row with no answer for 10 s the worker is killed.
    """
    worker = WorkerProcess(log_path=recorder.run.log_path, command=command)
    worker.send(protocol.start(config_dict))
    ended_at: float | None = None
    started = time.monotonic()
    stop_sent_at: float | None = None
    code: int | None = None
    while True:
        try:
            item = worker.lines.get(timeout=0.1)
        except queue.Empty:
            item = None
        want_stop = (interrupt is not None and interrupt.is_set()) or (
            stop_after_s is not None and time.monotonic() - started > stop_after_s)
        if want_stop and stop_sent_at is None:
            stop_sent_at = time.monotonic()
            recorder.stop_requested = True
            recorder.note("info", "stop requested by the user")
            worker.send(protocol.stop())
        if recorder.write_error and stop_sent_at is None:
            # The store is full or read-only: what the worker sends next could not be kept.
            stop_sent_at = time.monotonic()
            worker.send(protocol.stop())
        if stop_sent_at is not None and time.monotonic() - stop_sent_at > 10:
            worker.kill()
        if item is EOF:
            break
        if item is None:
            # The worker may be gone while a child it left holds the pipe open (no EOF then):
            # take what is still queued for a moment, then close the run.
            if ended_at is None and worker.exited():
                ended_at = time.monotonic()
            if ended_at is not None and time.monotonic() - ended_at > 0.3:
                break
            continue
        message = recorder.handle_line(item)
        if message is not None and on_message is not None:
            for command in on_message(message) or ():  # it may answer with commands to send
                worker.send(command)
        if message is not None and message["type"] == "done":
            break
    code = worker.shutdown()
    killed = code is not None and code < 0 and recorder.done is None
    failed = recorder.done is None or recorder.done["status"] == "failed"
    explanation = failure_explanation(recorder, _config_or_none(config_dict)) if failed else None
    return recorder.finish(code, killed_by_signal=killed, explanation=explanation)


def _config_or_none(config_dict: dict):
    from profiler.config import ConfigError, RunConfig

    try:
        return RunConfig.from_dict(config_dict)
    except (ConfigError, ValueError):
        return None


def dumps(data: object) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=str)
