"""The torch.profiler Chrome / Perfetto trace of a run, exported gzipped.

A trace lives in the run folder as `trace.json` or `trace.json.gz` (or torch.profiler's own
`*.pt.trace.json[.gz]` naming, in the folder or a `traces/` subfolder); the newest one wins.
"""

from __future__ import annotations

import gzip
import os
import shutil
import stat
from pathlib import Path

from profiler import files

HOW_TO_CAPTURE = (
    "capture one with the app's Profile button, or send the worker a `profile` command "
    "(steps: N) during a run; the trace is then kept in the run folder as trace.json.gz")


def _regular(path: Path) -> os.stat_result | None:
    """lstat of a regular file (a symlink, FIFO or device is not a trace); None otherwise."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info if stat.S_ISREG(info.st_mode) else None


def find_trace(run_path: Path) -> Path | None:
    """The newest trace file in the run folder or its traces/ folder: regular files only, and
    a traces/ that is a symbolic link is not followed."""
    names = ("trace.json.gz", "trace.json", "*.pt.trace.json.gz", "*.pt.trace.json")
    traces = run_path / "traces"
    folders = [run_path] + ([traces] if traces.is_dir() and not traces.is_symlink() else [])
    found = [(info.st_mtime, p) for folder in folders for pattern in names
             for p in folder.glob(pattern) if (info := _regular(p)) is not None]
    return max(found)[1] if found else None


def _looks_like_json(head: bytes) -> bool:
    return head.lstrip()[:1] in (b"{", b"[")


def write_trace(source: Path, out_path: Path, fix: str = files.WRITE_FIX,
                inside: Path | None = None) -> None:
    """Copy a gzipped trace as it is, gzip a plain one, onto out_path whole or not at all (a
    regular file or a new path only: files.replacing). Traces run to hundreds of MB, so they
    are streamed, and only their start is checked (a JSON object or array), never parsed whole.
    ValueError when the source is not a readable trace; files.FileRefused / OSError when
    out_path cannot be written."""
    try:
        with files.open_regular(source, inside) as raw:
            head = (gzip.GzipFile(fileobj=raw) if source.suffix == ".gz" else raw).read(4096)
    except (OSError, EOFError) as exc:
        raise ValueError(f"the trace {files.shown(source)} cannot be read ({exc})") from None
    if not _looks_like_json(head):
        raise ValueError(f"the trace {files.shown(source)} is not JSON; capture it again")
    with files.open_regular(source, inside) as src, files.replacing(out_path, binary=True,
                                                                     fix=fix) as dst:
        if source.suffix == ".gz":
            shutil.copyfileobj(src, dst)
            return
        with gzip.GzipFile(fileobj=dst, mode="wb") as packed:
            shutil.copyfileobj(src, packed)
