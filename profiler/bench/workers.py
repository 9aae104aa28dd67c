"""Driving a real worker through one run, as the benches do: every message with its arrival time."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from profiler.wire import protocol

OnMessage = Callable[[dict, float], bool | None]
"""Called with each message and its arrival time (perf_counter); True ends the run early."""


def wait_for_hello(worker, timeout_s: float = 600) -> dict:
    """Block until the worker has imported torch and said hello (the app's warm worker)."""
    from profiler.wire.client import EOF

    deadline = time.perf_counter() + timeout_s
    while True:
        item = worker.lines.get(timeout=max(0.1, deadline - time.perf_counter()))
        if item is EOF:
            raise RuntimeError("the worker exited before its hello")
        message = protocol.decode(item, "worker")
        if message["type"] == "hello":
            return message


def drive(config_dict: dict, on_message: OnMessage | None = None, worker=None,
          command: list[str] | None = None, timeout_s: float = 1800) -> dict:
    """Run one config in `worker` (a fresh one when None, shut down afterwards; a given one is
    left running for its next start). Returns {"status", "summary", "error"}: status is the done
    message's, "ended early" when on_message stopped it, or "exited" when the worker died."""
    from profiler.wire.client import EOF, WorkerProcess

    own = worker is None
    worker = worker or WorkerProcess(command=command)
    error = None
    try:
        worker.send(protocol.start(config_dict))
        while True:
            item = worker.lines.get(timeout=timeout_s)
            now = time.perf_counter()
            if item is EOF:
                return {"status": "exited", "summary": None,
                        "error": error or "the worker exited without a summary"}
            message = protocol.decode(item, "worker")
            if message["type"] == "error":
                error = message["message"]
            if on_message is not None and on_message(message, now):
                worker.send(protocol.stop())
                if not own:  # the worker stays: take this run's remaining messages off the pipe
                    while item is not EOF and message["type"] != "done":
                        item = worker.lines.get(timeout=timeout_s)
                        message = protocol.decode(item, "worker") if item is not EOF else message
                return {"status": "ended early", "summary": None, "error": None}
            if message["type"] == "done":
                failed = message["status"] != "completed"
                return {"status": message["status"], "summary": message["summary"],
                        "error": (error or message["status"]) if failed else None}
    finally:
        if own:
            worker.shutdown()


@dataclass
class Placement:
    """Where a bench's measured processes run: `threads` torch threads each and, when `measured`
    is a set, pinned to those cores while the bench's own process (the front end reading their
    pipes) keeps `front_end`, so reading a message never takes the core a measured step runs on
    and the scheduler never migrates the step between cores (on a 2-core VM, unpinned, a 60-step
    measurement of the same loop spreads several times as much)."""

    threads: int
    measured: set[int] | None
    front_end: set[int] | None
    why_not: str = ""

    def env(self) -> dict[str, str]:
        """The measured processes' thread settings (torch reads them at import)."""
        return {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}

    def pin(self, pid: int) -> None:
        """Put every thread of process `pid` on the measured cores; threads it starts later
        inherit them (call it right after the process is started, before it imports torch)."""
        if self.measured is not None:
            pin_process(pid, self.measured)

    def describe(self) -> str:
        if self.measured is None:
            return f"{self.threads} torch threads per measured process, not pinned ({self.why_not})"
        return (f"{self.threads} torch thread{'s' if self.threads > 1 else ''} per measured "
                f"process, pinned to core {cores_text(self.measured)}; the bench's front end on "
                f"core {cores_text(self.front_end or set())}")


def pin_process(pid: int, cores: set[int]) -> None:
    """Every thread of process `pid` (this one's too) on `cores`; threads it starts later
    inherit the mask of the thread that starts them."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), cores)


def cores_text(cores: set[int]) -> str:
    return ", ".join(str(c) for c in sorted(cores))


def available_cores() -> list[int]:
    """The cores this process may run on (a container's or taskset's limit included)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def placement(threads: int | None = None, pin: bool = True) -> Placement:
    """Threads default to every core but one (the front end's); pinned where that leaves a core
    for the front end and the platform can pin (Linux)."""
    cores = available_cores()
    threads = threads or max(1, len(cores) - 1)
    if not pin:
        return Placement(threads, None, None, "--no-pin")
    if not hasattr(os, "sched_setaffinity") or not os.path.isdir("/proc/self/task"):
        return Placement(threads, None, None, "this platform cannot pin processes to cores")
    if threads >= len(cores):
        return Placement(threads, None, None, f"{threads} threads leave none of the "
                         f"{len(cores)} cores to the front end: use --threads {len(cores) - 1}"
                         if len(cores) > 1 else "one core")
    return Placement(threads, set(cores[-threads:]), set(cores[:-threads]))


@contextlib.contextmanager
def front_end_on(where: Placement) -> Iterator[None]:
    """The calling thread (and the threads and processes it starts meanwhile) on the front end's
    cores, the thread's own mask restored afterwards."""
    if where.front_end is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, where.front_end)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
