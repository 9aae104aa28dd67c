"""Machine-readable reports: versioned JSON (schema.json) and one tidy CSV table.

Both keep every reading the run recorded, warmup and missing readings included (a missing
reading is null in JSON and an empty cell in CSV), so nothing is sampled away; both are written
as they are made, the readings streamed from the run's stream, so that a run of a million steps
is exported in bounded memory.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import IO

from profiler import __version__
from profiler.figures.metrics import json_safe, metric
from profiler.report.compare import comparison
from profiler.report.load import RunData, sample_readings
from profiler.report.recommend import recommendations

SCHEMA_ID = "effiscope.report/1"
SCHEMA_PATH = Path(__file__).with_name("schema.json")
CSV_COLUMNS = ("run", "step", "time", "metric", "unit", "value", "phase")


def run_document(run: RunData, series: object = None) -> dict:
    """One run's part of the JSON report; `series` stands in for its readings (write_json
    streams them in its place)."""
    return {
        "run_id": run.run_id,
        "name": run.name,
        "created": str(run.meta.get("created") or ""),
        "tags": [str(t) for t in run.meta.get("tags") or []],
        "status": run.status,
        "end": run.end,
        "device": run.device,
        "config": run.config,
        "config_toml": run.config_text,
        "environment": run.environment,
        "run": run.run_info,
        "summary": run.summary,
        "figures": run.figures,
        "techniques": run.techniques,
        "samples": run.samples,
        "points": run.points,
        "series": series,
        "events": run.events,
        "errors": run.errors,
        "profiles": run.profiles,
        "recommendations": recommendations(run),
        "load_warnings": run.load_warnings,
    }


def write_json(fh: IO[str], runs: list[RunData], baseline: RunData | None = None,
               spill: Spill | None = None) -> None:
    """The whole JSON report (`comparison` null for a single run), written to fh as it is made.

    Strict JSON: a value that is not finite (a forged or hand-edited file; the protocol sends
    null) is null, n/a, and the run's load warnings say where it was. The series are copied in
    from `spill` (filled while the runs loaded) or streamed from each run's stream, so a run of
    any length is exported in bounded memory.
    """
    marks = {run.run_id: f"@@series-{secrets.token_hex(8)}@@" for run in runs}
    compared = comparison(runs, baseline or runs[0]) if len(runs) > 1 else None
    document = {
        "schema": SCHEMA_ID,
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "generator": {"name": "effiscope", "version": __version__},
        "runs": [run_document(run, marks[run.run_id]) for run in runs],
        "comparison": compared,
    }
    text = json.dumps(json_safe(document), indent=1, allow_nan=False, ensure_ascii=False)
    for run in runs:
        head, _, text = text.partition(json.dumps(marks[run.run_id]))
        fh.write(head)
        _write_series(fh, run, spill.columns.get(run.run_id) if spill else None)
    fh.write(text + "\n")


COLUMNS = ("step", "time_s", "phase", "value")


def _write_series(fh: IO[str], run: RunData, spilled: _Columns | None) -> None:
    """{key: {label, unit, step, time_s, phase, value}}: every reading of every kept metric,
    from the spill, or the loaded series when they hold them all, else the stream again."""
    if spilled is not None or run.complete:
        if spilled is not None:
            spilled.flush()
        _write_columns(fh, run, spilled)
        return
    with Spill() as spill:
        add = spill.for_run(run.run_id)
        for key, step, time_s, phase, value in _stream_readings(run):
            if key in run.series:
                add(key, step, time_s, phase, value)
        columns = spill.columns[run.run_id]
        columns.flush()
        _write_columns(fh, run, columns)


class Spill:
    """Temporary files for the readings of the runs of one JSON export (a context manager:
    the files are removed when it ends)."""

    def __init__(self):
        self._folder = tempfile.TemporaryDirectory(prefix="effiscope-export-")
        self.columns: dict[str, _Columns] = {}

    def __enter__(self) -> Spill:
        return self

    def __exit__(self, *exc) -> None:
        self._folder.cleanup()

    def for_run(self, run_id: str):
        folder = Path(self._folder.name) / str(len(self.columns))
        folder.mkdir()
        columns = self.columns[run_id] = _Columns(folder)
        return columns.add


def _write_columns(fh: IO[str], run: RunData, columns: _Columns | None) -> None:
    fh.write("{")
    for index, (key, series) in enumerate(run.series.items()):
        fh.write(f"{', ' if index else ''}{json.dumps(key, ensure_ascii=False)}: "
                 f'{{"label": {json.dumps(series.label, ensure_ascii=False)}, '
                 f'"unit": {json.dumps(series.unit, ensure_ascii=False)}')
        held = (series.steps, series.times_s, series.phases, series.values)
        for name, values in zip(COLUMNS, held, strict=True):
            fh.write(f', "{name}": [')
            if columns is None:
                fh.write(json.dumps(json_safe(values), allow_nan=False, ensure_ascii=False)[1:-1])
            else:
                columns.copy(key, name, fh)
            fh.write("]")
        fh.write("}")
    fh.write("}")


class _Columns:
    """Every reading of each metric, spilled to a temporary file per metric and column as the
    body of a JSON array: the stream is read once, and memory holds at most FLUSH items."""

    FLUSH = 100_000

    def __init__(self, folder: Path):
        self.folder = folder
        self.index: dict[str, int] = {}
        self.buffers: dict[tuple[int, int], list[str]] = {}
        self.started: set[tuple[int, int]] = set()
        self.held = 0
        self.phases: dict[str | None, str] = {None: "null"}

    def add(self, key: str, step: int, time_s: float | None, phase: str | None,
            value: float | None) -> None:
        index = self.index.get(key)
        if index is None:
            index = self.index[key] = len(self.index)
        shown_phase = self.phases.get(phase)
        if shown_phase is None:
            shown_phase = json.dumps(phase, ensure_ascii=False)
            if len(self.phases) < 100:
                self.phases[phase] = shown_phase
        items = (str(step), "null" if time_s is None else repr(time_s), shown_phase,
                 "null" if value is None else repr(value))
        for column, item in enumerate(items):
            self.buffers.setdefault((index, column), []).append(item)
        self.held += 4
        if self.held >= self.FLUSH:
            self.flush()

    def _path(self, index: int, column: int) -> Path:
        return self.folder / f"{index}-{column}"

    def flush(self) -> None:
        for place, items in self.buffers.items():
            if not items:
                continue
            with self._path(*place).open("a", encoding="utf-8") as out:
                out.write(("," if place in self.started else "") + ",".join(items))
            self.started.add(place)
            items.clear()
        self.held = 0

    def copy(self, key: str, column: str, fh: IO[str]) -> None:
        if key not in self.index:
            return
        path = self._path(self.index[key], COLUMNS.index(column))
        if path.exists():
            with path.open(encoding="utf-8") as source:
                shutil.copyfileobj(source, fh)


def csv_rows(fh: IO[str]):
    """The CSV header written to fh, and for each run a sink (load.load_run) that writes its
    rows as its stream is read: run, step, time, metric, unit, value, phase, one row per
    reading, in stream order."""
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)

    def for_run(run_id: str):
        units: dict[str, str] = {}

        def add(key: str, step: int, time_s: float | None, phase: str | None,
                value: float | None) -> None:
            unit = units.get(key)
            if unit is None:
                unit = units[key] = metric(key).unit
            writer.writerow((run_id, step, "" if time_s is None else repr(time_s), key, unit,
                             "" if value is None else repr(value), phase or ""))
        return add
    return for_run


def write_csv(fh: IO[str], runs: list[RunData]) -> None:
    """csv_rows for runs already loaded: their readings in stream order, from the stream (a
    run built in memory: its series)."""
    for_run = csv_rows(fh)
    for run in runs:
        add = for_run(run.run_id)
        for key, step, time_s, phase, value in _readings(run):
            if key in run.series:
                add(key, step, time_s, phase, value)


def _readings(run: RunData):
    """Every reading in stream order: from the stream (a run built in memory: its series)."""
    if run.path:
        return _stream_readings(run)
    return ((key, step, time_s, phase, value) for key, series in run.series.items()
            for step, time_s, phase, value in zip(series.steps, series.times_s, series.phases,
                                                  series.values, strict=True))


def _stream_readings(run: RunData):
    for message in run.messages():
        if message.get("type") == "sample":
            yield from sample_readings(message) or ()


def to_json(runs: list[RunData], baseline: RunData | None = None) -> str:
    out = io.StringIO()
    write_json(out, runs, baseline)
    return out.getvalue()


def to_csv(runs: list[RunData]) -> str:
    out = io.StringIO()
    write_csv(out, runs)
    return out.getvalue()
