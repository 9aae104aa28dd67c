"""The worker process's side of the wire: the protocol channel on the real stdout (or none, on
ranks other than 0), the front end's commands read from stdin on a thread of their own, the
heartbeat, and the process's lifetime (it dies with its front end and leaves once stdin closes).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sys
import threading
import time
from typing import Any

from profiler.wire import protocol


class Channel:
    """The protocol's write side; thread-safe; a closed pipe makes `alive` false, never raises."""

    def __init__(self, fd: int):
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._lock = threading.Lock()
        self.alive = True
        self.last_sent = time.monotonic()

    def send(self, message: dict) -> None:
        data = protocol.encode(message, "worker").encode("utf-8")
        with self._lock:
            if not self.alive:
                return
            try:
                self._file.write(data)
                self.last_sent = time.monotonic()
            except (BrokenPipeError, OSError):
                self.alive = False


class SilentChannel:
    """The protocol side of a rank that does not speak (only global rank 0 does)."""

    alive = True

    def send(self, message: dict) -> None:
        protocol.encode(message, "worker")  # still validated: a bug shows on every rank


class Control:
    """What the run loop asks between steps: new commands, and whether it must stop."""

    def __init__(self, commands: queue.Queue, channel: Channel | SilentChannel, dist: Any = None):
        self._commands = commands
        self._channel = channel
        self.stop_event = threading.Event()
        self.stdin_closed = False
        self.dist = dist
        """The torchrun job (profiler.engine.distributed.DistContext), or None for a single process."""
        self.prepared: Any = None
        """The running workload's set-up (profiler.engine.workloads.setup.Prepared) once it is built: a
        run that fails after it still reports the contention measured over it."""

    def note_prepared(self, prepared: Any) -> None:
        self.prepared = prepared

    @property
    def should_stop(self) -> bool:
        return self.stop_event.is_set() or self.stdin_closed or not self._channel.alive

    def poll(self) -> list[dict]:
        """Commands that arrived since the last call (stop and end-of-input are handled here)."""
        out = []
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return out
            if command["type"] == "_eof":
                self.stdin_closed = True
            elif command["type"] == "stop":
                self.stop_event.set()
            elif command["type"] == "_bad_start":  # a run is going: this start is not for it
                self._channel.send(protocol.warning(
                    f"ignored a bad command: {command['reason']}"))
            else:
                out.append(command)

    def wait(self) -> dict:
        """The next command; `_eof` once stdin has closed or a SIGTERM asked the worker to go
        (a blocking get would not wake for the signal)."""
        while True:
            try:
                return self._commands.get(timeout=0.25)
            except queue.Empty:
                if self.stdin_closed:
                    return _eof()


# Notes the stdin reader queues beside the front end's commands; never on the wire (a leading
# underscore no protocol type has).
def _eof() -> dict:
    """stdin has ended (or a signal asked the worker to go)."""
    return {"type": "_eof"}


def _bad_start(reason: str) -> dict:
    """A start the protocol refused: answered with a failed run, never silence."""
    return {"type": "_bad_start", "reason": reason}


def claim_stdout() -> int:
    proto_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto_fd


STDIN_GRACE_S = 10.0
"""After its stdin closes the worker ends its run at the next step and exits; one still here
this much later is busy where no step boundary comes (building a huge model): it exits anyway."""


def die_with_parent() -> None:
    """On Linux, ask the kernel to SIGKILL this process when the one that started it dies (a
    front end killed with SIGKILL cannot close anything): nothing the worker sends could be
    received any more, and a model being built would keep allocating. Elsewhere the stdin
    watch alone ends an orphaned worker."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        parent = os.getppid()
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):  # no libc to ask: the stdin watch still works
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def leave_if_still_running(grace_s: float) -> None:
    """Started when stdin closes: exit once grace_s has passed (the run did not end by then)."""
    def leave() -> None:
        time.sleep(grace_s)
        print(f"effiscope: stdin closed {grace_s:.0f} s ago and the worker is still busy "
              "(e.g. building a model); exiting", file=sys.stderr, flush=True)
        os._exit(1)

    threading.Thread(target=leave, daemon=True, name="effiscope-orphan-exit").start()


def read_stdin(commands: queue.Queue, channel: Channel) -> None:
    """Queue each valid command; answer each bad line with a warning; `_eof` when stdin ends.

    Nothing a front end sends can end this thread early: whatever one line does, `_eof` still
    comes, so the worker always exits when its stdin closes.
    """
    stream = sys.stdin.buffer
    try:
        while True:
            try:
                line = stream.readline(protocol.MAX_LINE_BYTES + 1)
            except (OSError, ValueError):
                line = b""
            if not line:
                break
            if len(line) > protocol.MAX_LINE_BYTES:
                # Drop the rest of an oversize line, then say so; the stream goes on.
                while line and not line.endswith(b"\n"):
                    line = stream.readline(protocol.MAX_LINE_BYTES)
                channel.send(protocol.warning(
                    f"ignored a command over {protocol.MAX_LINE_BYTES} bytes"))
                continue
            if not line.strip():
                continue
            try:
                command = protocol.decode(line, "front")
                version = command.get("protocol", protocol.PROTOCOL_VERSION)
                if version != protocol.PROTOCOL_VERSION:
                    raise protocol.ProtocolError(
                        f"the command is protocol {repr(version)[:40]}, this worker speaks "
                        f"{protocol.PROTOCOL_VERSION}: install the same EffiScope version on "
                        "both sides")
                commands.put(command)
            except Exception as exc:  # noqa: BLE001 - one bad line must not end the reader
                reason = exc if isinstance(exc, protocol.ProtocolError) else f"{type(exc).__name__}: {exc}"
                if _command_type(line) == "start":  # answered, or its front end waits forever
                    commands.put(_bad_start(str(reason)[:500]))
                    continue
                channel.send(protocol.warning(f"ignored a bad command: {str(reason)[:500]}"))
    finally:
        commands.put(_eof())
        leave_if_still_running(STDIN_GRACE_S)


def _command_type(line: bytes) -> str | None:
    """The `type` of a line that failed validation, read leniently (numbers kept as text), so
    a refused start can be answered; None when it is no JSON object."""
    try:
        message = json.loads(line, parse_int=str, parse_float=str, parse_constant=str)
    except Exception:  # noqa: BLE001 - anything unreadable simply has no type
        return None
    kind = message.get("type") if isinstance(message, dict) else None
    return kind if isinstance(kind, str) else None


def refuse_start(channel: Channel | SilentChannel, reason: str) -> None:
    """A start the protocol refused ends as a failed run with the reason (never silence)."""
    channel.send(protocol.error(
        "config", f"the start command was refused: {reason}",
        "fix the run config (every number within its range) and start again"))
    channel.send(protocol.done("failed", {}))


def _heartbeat(channel: Channel, stop: threading.Event) -> None:
    """While nothing else goes out, a heartbeat about once a second (see SilenceWatch)."""
    while not stop.wait(protocol.HEARTBEAT_PERIOD_S / 2):
        if time.monotonic() - channel.last_sent >= protocol.HEARTBEAT_PERIOD_S:
            channel.send(protocol.heartbeat(time.time()))


def start_heartbeat(channel: Channel) -> threading.Event:
    """Start the heartbeat thread; set the returned event to end it."""
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(channel, stop), daemon=True,
                     name="effiscope-heartbeat").start()
    return stop
