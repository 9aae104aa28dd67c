"""Runs as MLflow runs (the optional extra: `pip install 'effiscope[mlflow]'`).

One MLflow run per EffiScope run, in an experiment (default "effiscope"): every reading a metric
GROUP/KEY at its own step and timestamp (ms), sent with log_batch in MLflow's batch limits; the
summary figures as summary/KEY at the last step; the flat config as parameters; the run's id,
name and status as tags; its HTML report as an artifact. A run exported before (its id in the
tag `effiscope.run_id`) is not exported twice.

Where: a tracking URI (a server, a database) when given, else a local folder, DIR/mlflow.db
with the artifacts in DIR/artifacts: MLflow's file store (`./mlruns`) is in maintenance mode
and newer MLflow refuses it, so the folder holds the SQLite store MLflow starts by default
(`mlflow ui --backend-store-uri sqlite:///DIR/mlflow.db` shows it).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from profiler import files
from profiler.report.trackers import readings
from profiler.report.trackers.readings import TrackerError
from profiler.report.trackers.tensorboard_events import run_facts
from profiler.store import RunStore, StoredRun

EXTRA = "pip install 'effiscope[mlflow]'"
BATCH_METRICS, BATCH_PARAMS = 1000, 100
"""MLflow's log_batch limits: 1,000 metrics and 100 parameters per call."""
PARAM_CHARS = 6000
"""The longest parameter value MLflow stores; a longer one is cut with a note."""
RUN_TAG = "effiscope.run_id"


def _mlflow() -> Any:
    try:
        import mlflow
        from mlflow.tracking import MlflowClient  # noqa: F401 - the client below
    except ImportError:
        raise TrackerError(f"the MLflow export needs the optional mlflow packages, which are not "
                           f"installed: {EXTRA}") from None
    return mlflow


def store_uri(folder: Path) -> tuple[str, str]:
    """(tracking URI, artifact location) of a local folder: a SQLite store and a folder."""
    folder = folder.resolve()
    return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()


def export_runs(runs: list[StoredRun], folder: Path, store: RunStore, tracking_uri: str | None,
                experiment: str, warnings: list[str] | None = None) -> list[str]:
    """Each run as an MLflow run; returns a line per run (its MLflow run id, or why skipped)."""
    _mlflow()
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    fix = "choose another --dir"
    artifacts = None
    if tracking_uri is None:
        files.output_folder(folder, fix)
        files.check_target(folder / "mlflow.db", fix)
        files.output_folder(folder / "artifacts", fix)
        tracking_uri, artifacts = store_uri(folder)
    try:
        client = MlflowClient(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(experiment)
        experiment_id = (found.experiment_id if found is not None else
                         client.create_experiment(experiment, artifact_location=artifacts))
        lines = []
        for stored in runs:
            lines.append(_export_one(client, experiment_id, stored, store, warnings,
                                     (Metric, Param, RunTag)))
        return lines
    except MlflowException as exc:
        raise TrackerError(f"MLflow refused the export ({str(exc)[:300]}); check the tracking "
                           f"URI {tracking_uri}") from None


def _export_one(client: Any, experiment_id: str, stored: StoredRun, store: RunStore,
                warnings: list[str] | None, entities: tuple) -> str:
    Metric, Param, RunTag = entities
    done = client.search_runs([experiment_id], f"tags.`{RUN_TAG}` = '{stored.run_id}'",
                              max_results=1)
    if done:
        return (f"run {stored.run_id} is already MLflow run {done[0].info.run_id}; "
                "left as it is")
    config, summary, meta = run_facts(stored, warnings)
    clock = readings.Clock(stored, readings.created_epoch(stored))
    name = str(meta.get("name") or stored.run_id)
    status = str(summary.get("status") or meta.get("status") or "unknown")
    run = None
    batch: list = []
    first_wall, last_step = None, None

    def flush() -> None:
        if batch:
            client.log_batch(run.info.run_id, metrics=list(batch))
            batch.clear()

    for message in stored.messages(warnings if warnings is not None else []):
        wall = clock.wall(message)
        step = readings.sample_step(message)
        if message.get("type") != "sample" or step is None:
            continue
        if run is None:
            first_wall = wall
            run = client.create_run(experiment_id, start_time=_ms(wall), run_name=name)
        last_step = step
        for key, value in readings.readings(message):
            batch.append(Metric(readings.tag(key), value, _ms(wall), step))
            if len(batch) >= BATCH_METRICS:
                flush()
    if run is None:
        run = client.create_run(experiment_id, start_time=_ms(clock.last), run_name=name)
        first_wall = clock.last
    flush()
    step = readings.last_step(summary, last_step)
    batch.extend(Metric(readings.summary_tag(key), value, _ms(clock.last), step)
                 for key, value in readings.summary_figures(summary).items())
    flush()
    params = [Param(key, _param(value)) for key, value in readings.flat_params(config).items()]
    for start in range(0, len(params), BATCH_PARAMS):
        client.log_batch(run.info.run_id, params=params[start:start + BATCH_PARAMS])
    client.log_batch(run.info.run_id, tags=[
        RunTag(RUN_TAG, stored.run_id), RunTag("effiscope.status", status),
        RunTag("effiscope.end", readings.plain(str(summary.get("end") or ""))[:5000])])
    _report_artifact(client, run.info.run_id, stored, store, warnings)
    client.set_terminated(run.info.run_id,
                          "FINISHED" if status in readings.FINISHED else "FAILED",
                          end_time=_ms(max(clock.last, first_wall or 0.0)))
    return f"run {stored.run_id} -> MLflow run {run.info.run_id}"


def _ms(wall: float) -> int:
    return int(round(wall * 1000))


def _param(value: str | bool | float) -> str:
    text = readings.plain(str(value).lower() if isinstance(value, bool) else str(value))
    return text if len(text) <= PARAM_CHARS else text[:PARAM_CHARS - 30] + "... (cut by EffiScope)"


def _report_artifact(client: Any, mlflow_run: str, stored: StoredRun, store: RunStore,
                     warnings: list[str] | None) -> None:
    """The run's HTML report beside its metrics (a report that cannot be made is a warning)."""
    from profiler.report import ReportError
    from profiler.report import export as report_export

    with tempfile.TemporaryDirectory(prefix="effiscope-mlflow-") as temp:
        try:
            path = report_export([stored.run_id], "html", Path(temp) / "report.html",
                                 store=store)
        except ReportError as exc:
            if warnings is not None:
                warnings.append(f"run {stored.run_id}: the HTML report was not attached ({exc})")
            return
        client.log_artifact(mlflow_run, str(path))
