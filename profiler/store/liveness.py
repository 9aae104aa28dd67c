"""Whether a run's front end is still alive: who records a run is written in its meta.json
(pid, start time, host), and a run that still says "running" after that process is gone was
orphaned (its front end was killed with SIGKILL) and is marked crashed at the next look.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Protocol

from profiler.store.runfolder import StoredRun
from profiler.store.storage import StoreError


class Store(Protocol):
    """What reconcile needs of a RunStore (profiler.store.folders)."""

    runs_dir: Path

    def run_ids(self) -> list[str]: ...

    def indexed_running_ids(self) -> list[str] | None: ...

    def set_status(self, run: StoredRun, status: str, end: str | None = None) -> None: ...


def this_process() -> dict:
    """The record of the process that starts a run (meta.json's "front")."""
    import psutil

    return {"pid": os.getpid(), "started": psutil.Process().create_time(),
            "host": socket.gethostname()}


def alive(front: Any) -> bool:
    """Whether the process that recorded a run still runs (a reused pid does not count)."""
    if not isinstance(front, dict) or not isinstance(front.get("pid"), int):
        return True  # no record of it (an older run): leave the run alone
    if front.get("host", socket.gethostname()) != socket.gethostname():
        return True  # recorded on another machine sharing this store: cannot tell from here
    import psutil

    try:
        process = psutil.Process(front["pid"])
        return (abs(process.create_time() - float(front.get("started", 0))) < 1.0
                and process.status() != psutil.STATUS_ZOMBIE)
    except (psutil.Error, TypeError, ValueError, OverflowError):
        return False


def reconcile(store: Store) -> list[str]:
    """Mark runs still "running" whose front end is gone as crashed; returns their ids.

    A front end killed with SIGKILL cannot close its run; the next look at the history does.
    """
    ids = store.indexed_running_ids()
    orphaned = []
    for run_id in store.run_ids() if ids is None else ids:
        run = StoredRun(run_id, store.runs_dir / run_id)
        if not run.path.is_dir() or run.path.is_symlink():
            continue  # an index row whose folder is gone: list_runs drops it
        meta = run.meta()
        if meta.get("status") != "running" or alive(meta.get("front")):
            continue
        samples, last_step = 0, None
        for message in run.messages(warnings=[]):  # streamed: a long stream stays on disk
            if message.get("type") == "sample":
                samples, last_step = samples + 1, message.get("step")
        summary = run.summary() or {}
        summary.update({"status": "crashed", "end": "the front end ended without closing the run",
                        "samples_received": samples})
        if samples:
            summary.setdefault("last_step", last_step)
        try:
            run.write_summary(summary)
            store.set_status(run, "crashed")
        except (OSError, StoreError):
            continue  # a read-only store is listed as it is
        orphaned.append(run_id)
    return orphaned
