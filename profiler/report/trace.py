"""The torch.profiler Chrome / Perfetto trace of a run, exported gzipped.

A trace lives in the run folder as `trace.json` or `trace.json.gz` (or torch.profiler's own
`*.pt.trace.json[.gz]` naming, in the folder or a `traces/` subfolder); the newest one wins.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

HOW_TO_CAPTURE = (
    "capture one with the app's Profile button, or send the worker a `profile` command "
    "(steps: N) during a run; the trace is then kept in the run folder as trace.json.gz")


def find_trace(run_path: Path) -> Path | None:
    names = ("trace.json.gz", "trace.json", "*.pt.trace.json.gz", "*.pt.trace.json")
    found = [p for folder in (run_path, run_path / "traces") for pattern in names
             for p in folder.glob(pattern) if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _looks_like_json(head: bytes) -> bool:
    return head.lstrip()[:1] in (b"{", b"[")


def write_trace(source: Path, out_path: Path) -> None:
    """Copy a gzipped trace as it is, gzip a plain one. Traces run to hundreds of MB, so only
    their start is checked (a JSON object or array), never parsed whole."""
    opener = gzip.open if source.suffix == ".gz" else open
    try:
        with opener(source, "rb") as fh:
            head = fh.read(4096)
    except (OSError, EOFError) as exc:
        raise ValueError(f"the trace {source} cannot be read ({exc})") from None
    if not _looks_like_json(head):
        raise ValueError(f"the trace {source} is not JSON; capture it again")
    if source.suffix == ".gz":
        shutil.copyfile(source, out_path)
        return
    with source.open("rb") as src, gzip.open(out_path, "wb") as dst:
        shutil.copyfileobj(src, dst)
