"""The CUDA memory snapshot of a profile capture (a `profile` command with `memory: true`).

While the captured steps run, the CUDA caching allocator records every allocation and free with
its stack (torch.cuda.memory._record_memory_history); at the end of the capture the history is
saved with torch.cuda.memory._dump_snapshot in the run folder, beside the Chrome trace, for
pytorch.org/memory_viz (drag the file onto the page). torch writes it as a pickle: EffiScope
writes that file and never reads it back.

GPU only: the history is the CUDA caching allocator's, so on any other device the capture says
n/a with the reason instead of a file.
"""

from __future__ import annotations

from pathlib import Path

import torch

from profiler import files

MAX_ENTRIES = 100_000
"""Allocation events kept (the newest); each holds its stack, a few KB: unbounded, a long
capture's file reaches gigabytes."""
SUFFIX = ".memory_snapshot.pickle"
VIEWER = "pytorch.org/memory_viz"


def not_available(device: torch.device) -> str | None:
    """Why there is no memory snapshot on `device` (a sentence), None on a usable CUDA device."""
    if device.type != "cuda":
        where = "CPU" if device.type == "cpu" else device.type
        return (f"memory snapshot: n/a on {where}: it is the CUDA caching allocator's history "
                "(run on a GPU for it)")
    if not torch.cuda.is_available():
        return "memory snapshot: n/a: CUDA is not available in this worker"
    return None


class MemorySnapshot:
    """Records the allocator's history from start() to save(); one recording at a time."""

    def __init__(self, device: torch.device):
        self.device = device
        self.recording = False

    def start(self) -> str | None:
        """Begin recording; returns why it cannot (n/a on this device, refused by torch)."""
        why = not_available(self.device)
        if why is not None:
            return why
        try:
            torch.cuda.memory._record_memory_history(max_entries=MAX_ENTRIES,
                                                     device=self.device)
        except (RuntimeError, ValueError) as exc:
            return f"memory snapshot: torch could not record the allocator's history ({exc})"
        self.recording = True
        return None

    def save(self, folder: Path, stem: str) -> tuple[str | None, str]:
        """Stop recording and write FOLDER/STEM.memory_snapshot.pickle: (its path, "") or
        (None, why not); nothing when no recording runs."""
        if not self.recording:
            return None, ""
        self.recording = False
        path = folder / f"{stem}{SUFFIX}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            files.check_target(path, "the run folder holds something else by that name")
            torch.cuda.memory._dump_snapshot(str(path))
        except (OSError, RuntimeError) as exc:
            return None, f"the memory snapshot could not be written ({exc})"
        finally:
            try:
                torch.cuda.memory._record_memory_history(enabled=None, device=self.device)
            except (RuntimeError, ValueError):
                pass  # recording could not be switched off: nothing more to do
        return str(path), ""
