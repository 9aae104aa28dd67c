"""The receiving side of a run, shared by the app, the CLI and the tests (no Qt, no torch).

Each line from the worker is decoded, validated, appended to the run's stream.jsonl at once, and
folded into a small live state (last sample, errors, done). When the worker goes away, `finish`
decides how the run ended and writes summary.json: a run that died keeps all it received.
A store that cannot be written (full disk, read-only folder) is never a silent loss: the
messages stay in memory and `write_error` says what failed, for the front end to show and act on.

Each worker message is stamped with the time it arrived (`received`, epoch seconds): the wall
clock of a sample for the trackers a run is exported to. A mirror (a TensorBoard event file
written while the run goes, profiler.report.trackers) gets every message as it is stored and the
finished run; NO_MIRROR when there is none.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from profiler.store import RunStore, StoredRun, StoreError, StreamWriter
from profiler.wire import protocol


class Mirror(Protocol):
    """A second copy of a run written while it goes; it never raises into the recorder."""

    problem: str | None
    """Why the mirror stopped writing (a sentence), None while it writes."""

    def message(self, message: dict) -> None: ...

    def finish(self, run: StoredRun) -> None:
        """The run is over and its summary.json written."""


class _NoMirror:
    problem = None

    def message(self, message: dict) -> None:
        pass

    def finish(self, run: StoredRun) -> None:
        pass


NO_MIRROR: Mirror = _NoMirror()


class RunRecorder:
    def __init__(self, store: RunStore, run: StoredRun, mirror: Mirror = NO_MIRROR):
        self.store = store
        self.run = run
        self.mirror = mirror
        self._mirror_noted = False
        self.writer = StreamWriter(run.stream_path)
        self.hello: dict | None = None
        self.started: dict | None = None
        self.last_sample: dict | None = None
        self.errors: list[dict] = []
        self.warnings: list[str] = []
        self.done: dict | None = None
        self.stop_requested = False
        self.stopped_because: str | None = None
        """Why the front end itself ended the run, when no user asked (a tuner whose windows
        are all measured): the run's end says that, not "stopped on request"."""
        self.samples = 0
        self.finished = False
        self.status = "running"
        self.write_error: str | None = None
        """Why the store refused a write (a sentence with the fix); None while all is stored."""
        self.unwritten: list[dict] = []
        """Messages received but not yet stored because of write_error, in order."""

    def handle_line(self, line: bytes | str) -> dict | None:
        """Decode one worker line; store it; return the message (None for a rejected line)."""
        try:
            message = protocol.decode(line, "worker")
        except protocol.ProtocolError as exc:
            self.reject(str(exc))
            return None
        if message["type"] == "heartbeat":
            return message  # proof of life for the front end; not part of the run's record
        self.handle_message(message)
        return message

    def reject(self, reason: str) -> None:
        """A line from the worker that was not a valid message: noted, and the stream goes on.

        The worker may be on another machine (ssh), so its lines are data to check, not trust.
        """
        note = f"rejected a line from the worker: {reason[:500]}"
        self.warnings.append(note)
        del self.warnings[:-100]
        # The rejection is itself recorded (as the front end's own event), the stream goes on.
        self._store(protocol.warning(note, origin="front", received=time.time()))

    def handle_message(self, message: dict) -> None:
        message["received"] = time.time()  # the front end's clock, never the worker's say
        self._store(message)
        kind = message["type"]
        if kind == "sample":
            self.samples += 1
            self.last_sample = message
        elif kind == "hello":
            self.hello = message
        elif kind == "started":
            self.started = message
        elif kind == "error":
            self.errors.append(message)
        elif kind == "done":
            self.done = message

    def _store(self, message: dict) -> None:
        try:
            while self.unwritten:  # the disk may have room again: older messages first
                self.writer.append(self.unwritten[0])
                self.unwritten.pop(0)
            self.writer.append(message)
        except StoreError as exc:
            self.write_error = self.write_error or str(exc)
            self.unwritten.append(message)
        self.mirror.message(message)  # the mirror keeps what the disk refused, too
        if self.mirror.problem and not self._mirror_noted:
            self._mirror_noted = True
            self.note("warning", self.mirror.problem)

    def note(self, kind: str, message: str, **extra: Any) -> None:
        """An event of the front end's own (stop requested, worker died) in the same stream."""
        self._store(protocol.event(kind, message, origin="front", received=time.time(),
                                   **extra))

    def finish(self, exit_code: int | None, killed_by_signal: bool = False,
               explanation: str | None = None) -> str:
        """Close the run: status, summary.json, index row. Safe to call twice.

        explanation: why the worker ended without `done`, when the front end could tell (e.g.
        which rank of a torchrun job failed); it becomes the run's error.
        """
        if self.finished:
            return self.status
        self.finished = True
        if self.done is not None:
            status = self.done["status"]
            summary = dict(self.done["summary"])
            end = {"completed": "finished", "stopped": "stopped on request",
                   "failed": "failed"}.get(status) or str(summary.get("stop_reason") or status)
            if status == "stopped" and self.stopped_because and not self.stop_requested:
                end = self.stopped_because
            if explanation and status == "failed":
                # The launcher knows the root cause (e.g. which rank died); the worker's own
                # error is its consequence and stays in the stream.
                end = explanation
                error = protocol.error("crash", explanation,
                                       "the run's worker log holds each rank's output",
                                       origin="front")
                self._store(error)
                self.errors.append(error)
        else:
            status = "killed" if killed_by_signal else "crashed"
            summary = {}
            end = (f"the worker was killed (exit code {exit_code}) before it finished"
                   if killed_by_signal else
                   f"the worker exited with code {exit_code} without finishing")
            if explanation:
                status, end = "failed", explanation
                error = protocol.error("crash", explanation,
                                       "the worker log of the run has each rank's output",
                                       origin="front")
                self._store(error)
                self.errors.append(error)
            self.note("warning", end)
        if self.errors:
            last = self.errors[-1]
            summary["error"] = {k: last.get(k) for k in ("kind", "message", "hint")}
            if status == "completed":
                status = "failed"
        summary["status"] = status
        summary["end"] = end
        summary["samples_received"] = self.samples
        if self.last_sample is not None:
            summary.setdefault("last_step", self.last_sample["step"])
        if self.hello is not None:
            summary.setdefault("environment", {
                "versions": self.hello["versions"], "device": self.hello["device"],
                "host": self.hello["environment"]})
        if self.warnings:
            summary["protocol_warnings"] = self.warnings[-20:]
        if self.write_error:
            summary["write_error"] = self.write_error
            summary["unstored_messages"] = len(self.unwritten)
        self.writer.close()
        self.status = status
        try:
            self.run.write_summary(summary)
        except (StoreError, OSError) as exc:
            self.write_error = self.write_error or str(exc)
        self.mirror.finish(self.run)
        try:
            self.store.set_status(self.run, status, end=end if self.write_error is None else
                                  f"{end}; the store could not be written: {self.write_error}")
        except (StoreError, OSError) as exc:
            self.write_error = self.write_error or str(exc)
        return status
