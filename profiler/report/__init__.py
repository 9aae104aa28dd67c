"""Profiling reports from the run store: HTML, JSON, CSV, Markdown, and the profiler trace.

`export(run_ids, fmt, out_path)` is the one entry point (CLI and app); torch-free and Qt-free.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import IO

from profiler import files
from profiler.store import RunStore, StoreError

FORMATS = ("html", "json", "csv", "md", "trace")
EXTENSIONS = {"html": "html", "json": "json", "csv": "csv", "md": "md", "trace": "trace.json.gz"}

__all__ = ["FORMATS", "ReportError", "default_filename", "export", "load_runs", "render", "write"]


class ReportError(ValueError):
    """A report cannot be made; the text names what is wrong and how to fix it."""


def _resolve(run_ids: list[str], store: RunStore, baseline: str | None,
             warnings: list[str] | None = None, sink_for=None):
    from profiler.report.load import load_run

    if not run_ids:
        raise ReportError("no run id given; `effiscope runs` lists them")
    try:
        stored = [store.open_run(run_id) for run_id in run_ids]
        base_stored = store.open_run(baseline) if baseline else stored[0]
    except StoreError as exc:
        raise ReportError(str(exc)) from None
    unique = {}
    for item in [base_stored, *stored] if baseline else stored:
        unique.setdefault(item.run_id, item)
    runs = [load_run(item, sink_for(item.run_id) if sink_for else None)
            for item in unique.values()]
    base = next(r for r in runs if r.run_id == base_stored.run_id)
    if warnings is not None:  # for a front end to say beside the report
        warnings.extend(f"run {run.run_id}: {w}" for run in runs for w in run.load_warnings)
    return runs, base


def load_runs(run_ids: list[str], store: RunStore, baseline: str | None = None,
              warnings: list[str] | None = None):
    """(runs, baseline) loaded from the store (profiler.report.load.RunData each, the baseline
    among them, default the first); ReportError names a run id that is not there. `warnings`
    gets each run's load warnings (damaged lines, files not read), prefixed by its id."""
    return _resolve(run_ids, store, baseline, warnings)


def write(fh: IO[str], run_ids: list[str], fmt: str, store: RunStore | None = None,
          baseline: str | None = None, warnings: list[str] | None = None) -> None:
    """A text report (html, json, csv, md) of one run, or a comparison of several, written to
    fh as it is made (the JSON and CSV readings streamed: bounded memory); `warnings` gets what
    could not be read (see load_runs)."""
    from profiler.report import html, markdown, tidy

    if fmt not in FORMATS or fmt == "trace":
        raise ReportError(f"format {fmt!r} is not a text report; use one of html, json, csv, md")
    store = store or RunStore()
    if fmt == "csv":  # the rows are written as the streams are read: one pass each
        _resolve(run_ids, store, baseline, warnings, tidy.csv_rows(fh))
    elif fmt == "json":  # the readings are spilled as the streams are read, then copied in
        with tidy.Spill() as spill:
            runs, base = _resolve(run_ids, store, baseline, warnings, spill.for_run)
            tidy.write_json(fh, runs, base, spill)
    else:
        runs, base = _resolve(run_ids, store, baseline, warnings)
        module = html if fmt == "html" else markdown
        fh.write(module.render_comparison(runs, base) if len(runs) > 1 else
                 module.render_run(runs[0]))


def render(run_ids: list[str], fmt: str, store: RunStore | None = None,
           baseline: str | None = None, warnings: list[str] | None = None) -> str:
    """write() into a string."""
    out = io.StringIO()
    write(out, run_ids, fmt, store, baseline, warnings)
    return out.getvalue()


def default_filename(run_ids: list[str], fmt: str, baseline: str | None = None) -> str:
    ext = EXTENSIONS.get(fmt, fmt)
    if len(set(run_ids) | ({baseline} if baseline else set())) > 1:
        return f"compare-{baseline or run_ids[0]}-{len(run_ids)}-runs.{ext}"
    return f"{run_ids[0]}.{ext}"


def export(run_ids: list[str], fmt: str, out_path: str | os.PathLike, store: RunStore | None = None,
           baseline: str | None = None, warnings: list[str] | None = None) -> Path:
    """Write a report of `run_ids` (several: a comparison against `baseline`, default the first)
    to `out_path` (a file, or an existing folder to put the default file name in); returns it."""
    if fmt not in FORMATS:
        raise ReportError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    store = store or RunStore()
    out = Path(out_path).expanduser()
    if out.is_dir() or str(out_path).endswith(("/", os.sep)):
        try:  # name the file after the full run ids, not the prefixes the user typed
            full = [store.open_run(r).run_id for r in run_ids]
            base = store.open_run(baseline).run_id if baseline else None
        except StoreError as exc:
            raise ReportError(str(exc)) from None
        out = out / default_filename(full, fmt, base)
    fix = "choose another --out"
    try:
        files.output_folder(out.parent, fix)
        if fmt == "trace":
            _export_trace(list(run_ids), store, out, fix)
        else:
            with files.replacing(out, fix=fix) as fh:
                write(fh, list(run_ids), fmt, store, baseline, warnings)
    except files.FileRefused as exc:
        raise ReportError(str(exc)) from None
    except OSError as exc:
        raise ReportError(f"cannot write {files.shown(out)} ({exc.strerror or exc}); {fix}") from None
    return out


def _export_trace(run_ids: list[str], store: RunStore, out: Path, fix: str) -> None:
    from profiler.report.trace import HOW_TO_CAPTURE, find_trace, write_trace

    if len(set(run_ids)) != 1:
        raise ReportError("--format trace exports one run's trace; give a single run id")
    try:
        stored = store.open_run(run_ids[0])
    except StoreError as exc:
        raise ReportError(str(exc)) from None
    source = find_trace(stored.path)
    if source is None:
        raise ReportError(f"run {stored.run_id} has no torch.profiler trace; {HOW_TO_CAPTURE}")
    try:
        write_trace(source, out, fix=fix, inside=stored.path)
    except ValueError as exc:
        raise ReportError(str(exc)) from None
