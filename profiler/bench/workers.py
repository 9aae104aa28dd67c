"""Driving a real worker through one run, as the benches do: every message with its arrival time."""

from __future__ import annotations

import time
from collections.abc import Callable

from profiler import protocol

OnMessage = Callable[[dict, float], bool | None]
"""Called with each message and its arrival time (perf_counter); True ends the run early."""


def wait_for_hello(worker, timeout_s: float = 600) -> dict:
    """Block until the worker has imported torch and said hello (the app's warm worker)."""
    from profiler.client import EOF

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
    from profiler.client import EOF, WorkerProcess

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
