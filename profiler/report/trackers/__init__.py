"""Runs in the trackers people already use: TensorBoard event files (tensorboard_events), MLflow
runs (mlflow_runs, the optional `effiscope[mlflow]` extra) and a long CSV (long_csv), read from
the store only; the tag, unit and wall-time rules they share are in readings.

`export(run_ids, target, folder)` is the one entry point (CLI and app); torch-free and Qt-free.
"""

from __future__ import annotations

from pathlib import Path

from profiler import files
from profiler.report.trackers.readings import TrackerError
from profiler.store import RunStore, StoredRun, StoreError

TARGETS = ("tensorboard", "mlflow", "csv-long")
DEFAULT_FOLDERS = {"tensorboard": "tensorboard", "mlflow": "mlruns", "csv-long": "."}
"""Where each target writes when no folder is given (relative to the current folder)."""

__all__ = ["DEFAULT_FOLDERS", "TARGETS", "TrackerError", "export"]


def _open_runs(run_ids: list[str], store: RunStore) -> list[StoredRun]:
    if not run_ids:
        raise TrackerError("no run id given; `effiscope runs` lists them")
    try:
        runs = [store.open_run(run_id) for run_id in run_ids]
    except StoreError as exc:
        raise TrackerError(str(exc)) from None
    return list({run.run_id: run for run in runs}.values())


def export(run_ids: list[str], target: str, folder: str | Path | None = None,
           store: RunStore | None = None, warnings: list[str] | None = None,
           tracking_uri: str | None = None, experiment: str = "effiscope") -> list[str]:
    """Export each run to `target` (one of TARGETS) under `folder` (default DEFAULT_FOLDERS);
    returns what was written, a line per run. TrackerError with a sentence for an unknown run id,
    a folder that cannot be written, or a missing optional package; nothing is half-written
    (each file is written whole or not at all)."""
    if target not in TARGETS:
        raise TrackerError(f"unknown target {target!r}; use one of {', '.join(TARGETS)}")
    store = store or RunStore()
    runs = _open_runs(list(run_ids), store)
    out = Path(folder if folder is not None else DEFAULT_FOLDERS[target]).expanduser()
    fix = "choose another --dir"
    try:
        if target == "mlflow":
            from profiler.report.trackers.mlflow_runs import export_runs

            return export_runs(runs, out, store, tracking_uri, experiment, warnings)
        files.output_folder(out, fix)
        if target == "tensorboard":
            from profiler.report.trackers.tensorboard_events import export_run
        else:
            from profiler.report.trackers.long_csv import export_run
        return [str(export_run(run, out, warnings, fix)) for run in runs]
    except files.FileRefused as exc:
        raise TrackerError(str(exc)) from None
    except OSError as exc:
        raise TrackerError(f"cannot write under {files.shown(out)} ({exc.strerror or exc}); "
                           f"{fix}") from None
