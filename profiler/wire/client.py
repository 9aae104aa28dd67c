"""Launching a worker from a script (CLI, tests): a subprocess with pipes and a reader thread.

The Qt app does the same with QProcess; both hand every line to a RunRecorder.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

from profiler.wire import launch, protocol

EOF = object()
OVERSIZE = object()
SEND_FAILURE_GRACE_S = 5.0
"""How long a worker that refused the start command gets to end on its own (and leave in its log
why: ssh's connection error, a command not found) before it is killed."""
"""Put in `lines` in place of a line over protocol.MAX_LINE_BYTES (its bytes were dropped)."""


class StartRefused(ValueError):
    """The start command cannot be sent (too big, not JSON); the text says what to change."""


def start_line(config_dict: dict) -> bytes:
    """The encoded start command, or StartRefused with a sentence naming what makes it too big.

    Checked before any worker starts: a start the protocol refuses would leave the worker
    waiting for a command that never comes.
    """
    try:
        return protocol.encode(protocol.start(config_dict), "front").encode("utf-8")
    except protocol.ProtocolError as exc:
        biggest = _longest_text(config_dict)
        where = (f"; the longest text is {biggest[0]} ({biggest[1]:,} characters): shorten it"
                 if biggest else "; shorten the longest settings")
        raise StartRefused(f"the run config cannot be sent to the worker ({exc}){where}") from None


def _longest_text(value: object, path: str = "") -> tuple[str, int] | None:
    best: tuple[str, int] | None = None
    items = (value.items() if isinstance(value, dict)
             else enumerate(value) if isinstance(value, list) else ())
    for key, item in items:
        where = f"{path}.{key}" if path and isinstance(key, str) else (
            f"{path}[{key}]" if path else str(key))
        found = (where, len(item)) if isinstance(item, str) else _longest_text(item, where)
        if found and (best is None or found[1] > best[1]):
            best = found
    return best


def failure_explanation(recorder, config=None) -> str | None:
    """Why a worker (or a torchrun job) ended without `done`, read from its log."""
    try:
        with open(recorder.run.log_path, encoding="utf-8", errors="replace") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 200_000))
            text = fh.read()
    except OSError:
        return None
    return _no_memory_to_start(text, recorder) or launch.explain_failure(text, config)


_NO_MEMORY = ("Cannot allocate memory", "failed to map segment", "MemoryError",
              "out of memory", "std::bad_alloc")


def _no_memory_to_start(log_text: str, recorder) -> str | None:
    """A worker that died before its hello for want of memory (a ulimit, a full machine)."""
    if getattr(recorder, "hello", None) is not None:
        return None
    found = next((marker for marker in _NO_MEMORY if marker in log_text), None)
    if found is None:
        return None
    line = next((ln.strip() for ln in reversed(log_text.splitlines()) if found in ln), found)
    return (f"the worker could not start: out of memory while loading Python and torch "
            f"({line[:200]}); raise the memory limit (ulimit -v, the container's memory) or "
            "close other programs")


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The worker's environment: this one, the project on PYTHONPATH, and `extra` over both."""
    env = {**os.environ, **(extra or {})}
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class WorkerProcess:
    """A worker child process; `lines` yields raw protocol lines, then EOF when it exits."""

    def __init__(self, log_path: str | Path | None = None, command: list[str] | None = None,
                 env: dict[str, str] | None = None, switchable_log: bool = False):
        """`env`: variables set for the worker over this process's (e.g. OMP_NUM_THREADS).
        `switchable_log`: the worker's stderr is copied by a thread into the log file, which
        `switch_log` changes (a worker kept for several runs writes each run's log)."""
        self._log: IO | int
        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        self._log_lock = threading.Lock()
        # A session of its own: the terminal's Ctrl-C reaches the CLI, which asks the worker to
        # stop through the protocol instead of killing it mid-step.
        self.proc = subprocess.Popen(
            command or launch.worker_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if switchable_log else self._log, env=worker_env(env),
            start_new_session=True,
        )
        if switchable_log:
            threading.Thread(target=self._copy_log, daemon=True, name="effiscope-log").start()
        self.lines: queue.Queue = queue.Queue()
        self.last_heard = time.monotonic()
        """When the worker last sent a line (heartbeats included); see protocol.SilenceWatch."""
        self.heartbeats = 0
        self.send_error: str | None = None
        """Why the last `send` failed, in words; None while sends succeed."""
        self._reader = threading.Thread(target=self._read, daemon=True, name="effiscope-reader")
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        """Queue each line; at most MAX_LINE_BYTES are held for one line, whatever arrives
        (the rest of a longer line is read and dropped, and OVERSIZE queued in its place)."""
        assert self.proc.stdout is not None
        stream = self.proc.stdout
        limit = protocol.MAX_LINE_BYTES
        try:
            while True:
                line = stream.readline(limit + 1)
                if not line:
                    break
                self.last_heard = time.monotonic()
                if len(line) > limit:
                    while line and not line.endswith(b"\n"):
                        line = stream.readline(limit)
                        self.last_heard = time.monotonic()
                    self.lines.put(OVERSIZE)
                elif protocol.is_heartbeat(line):
                    self.heartbeats += 1  # transport only: proof of life, never recorded
                else:
                    self.lines.put(line)
        except (OSError, ValueError):
            pass
        finally:
            self.lines.put(EOF)

    def _copy_log(self) -> None:
        assert self.proc.stderr is not None
        try:
            for line in iter(self.proc.stderr.readline, b""):
                with self._log_lock:
                    if not isinstance(self._log, int):
                        self._log.write(line)
                        self._log.flush()
        except (OSError, ValueError):
            pass

    def switch_log(self, log_path: str | Path | None) -> None:
        """From now on the worker's stderr goes to `log_path` (a worker made with
        switchable_log; the next run of a kept worker writes its own log)."""
        with self._log_lock:
            if not isinstance(self._log, int):
                self._log.close()
            self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115

    def send(self, message: dict | bytes) -> bool:
        """Send one command (a message, or a line already encoded); False when it could not be
        sent, with the reason in `send_error`."""
        if self.proc.stdin is None or self.proc.stdin.closed:
            self.send_error = "the worker's input is closed"
            return False
        try:
            data = message if isinstance(message, bytes) else protocol.encode(
                message, "front").encode("utf-8")
        except protocol.ProtocolError as exc:
            self.send_error = f"the command cannot be sent ({exc})"
            return False
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError) as exc:
            self.send_error = f"the worker stopped reading its input ({exc})"
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
        with self._log_lock:
            if not isinstance(self._log, int):
                self._log.close()
                self._log = subprocess.DEVNULL
        return code if code is not None else -9


def read_messages(worker: WorkerProcess, until: tuple[str, ...] = ("done",),
                  timeout_s: float = 120.0) -> list[dict]:
    """The worker's messages, checked on arrival, until one whose type is in `until` (or the
    worker's EOF); TimeoutError, carrying what came, when none arrives within timeout_s."""
    messages: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            item = worker.lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if item is EOF:
            return messages
        messages.append(protocol.decode(item, "worker"))
        if messages[-1]["type"] in until:
            return messages
    error = TimeoutError(f"no {' or '.join(until)} message within {timeout_s:g} s; got "
                         f"{[m['type'] for m in messages]}")
    error.messages = messages  # type: ignore[attr-defined]
    raise error


def run_to_completion(config_dict: dict, recorder, on_message=None, stop_after_s: float | None = None,
                      interrupt: threading.Event | None = None, command: list[str] | None = None,
                      silence: protocol.SilenceWatch | None = None) -> str:
    """Start a worker, send the config, record every message until done; return the run status.

    `on_message(message)` sees every message; the commands it returns (a list, or None) are sent.

    `interrupt` (set from a signal handler or another thread) asks the worker to stop cleanly; if
    it is set twice in a row with no answer for 10 s the worker is killed. A config the protocol
    cannot carry raises StartRefused before any worker starts. A worker that goes silent (see
    protocol.SilenceWatch) is noted in the run and reported through `on_message` as a warning.
    """
    first_line = start_line(config_dict)
    watch = silence or protocol.SilenceWatch()
    worker = WorkerProcess(log_path=recorder.run.log_path, command=command)
    try:
        return _record(worker, first_line, config_dict, recorder, on_message, stop_after_s,
                       interrupt, watch)
    except BaseException:  # a second Ctrl-C (KeyboardInterrupt): nothing may be left running
        worker.kill()
        worker.shutdown(0)
        raise


def run_on(worker: WorkerProcess, config_dict: dict, recorder, on_message=None,
           interrupt: threading.Event | None = None, hello: bytes | None = None,
           silence: protocol.SilenceWatch | None = None) -> str:
    """run_to_completion on a worker already started, which is kept for its next run when
    this one ends with `done` (shut down otherwise: check `worker.exited()`). `hello`: the
    line a kept worker said first, recorded first, as from a worker started for this run."""
    first_line = start_line(config_dict)
    if hello is not None:
        recorder.handle_line(hello)
    try:
        return _record(worker, first_line, config_dict, recorder, on_message, None, interrupt,
                       silence or protocol.SilenceWatch(), keep_worker=True)
    except BaseException:
        worker.kill()
        worker.shutdown(0)
        raise


def _front_warning(recorder, on_message, text: str) -> None:
    recorder.note("warning", text)
    if on_message is not None:
        on_message(protocol.warning(text, origin="front"))


def _record(worker: WorkerProcess, first_line: bytes, config_dict: dict, recorder, on_message,
            stop_after_s: float | None, interrupt: threading.Event | None,
            watch: protocol.SilenceWatch, keep_worker: bool = False) -> str:
    send_failure = None
    started = time.monotonic()
    if not worker.send(first_line):
        # The process closed its input: it is on its way out (ssh that could not connect, a
        # command not found). Let it end and say why in its words; kill it only if it lingers.
        send_failure = f"the start command could not be sent: {worker.send_error}"
    ended_at: float | None = None
    stop_sent_at: float | None = None
    heard = worker.last_heard
    while True:
        try:
            item = worker.lines.get(timeout=0.1)
        except queue.Empty:
            item = None
        if worker.last_heard != heard:  # any line, a heartbeat too, is a sign of life
            heard = worker.last_heard
            note = watch.heard()
            if note:
                _front_warning(recorder, on_message, note)
        else:
            note = watch.check()
            if note and not worker.exited():
                _front_warning(recorder, on_message, note)
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
        if send_failure is not None and not worker.exited() \
                and time.monotonic() - started > SEND_FAILURE_GRACE_S:
            worker.kill()
        if item is EOF:
            break
        if item is OVERSIZE:
            recorder.reject(f"a line over the {protocol.MAX_LINE_BYTES:,} byte limit was dropped")
            continue
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
    if keep_worker and recorder.done is not None and send_failure is None \
            and not worker.exited():
        return recorder.finish(None)  # the worker waits for its next start
    code = worker.shutdown()
    killed = code is not None and code < 0 and recorder.done is None and send_failure is None
    failed = recorder.done is None or recorder.done["status"] == "failed"
    explanation = (failure_explanation(recorder, _config_or_none(config_dict)) if failed
                   else None) or send_failure
    return recorder.finish(code, killed_by_signal=killed, explanation=explanation)


def _config_or_none(config_dict: dict):
    from profiler.config import ConfigError, RunConfig

    try:
        return RunConfig.from_dict(config_dict)
    except (ConfigError, ValueError):
        return None


def dumps(data: object) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=str)
