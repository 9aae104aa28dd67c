"""A run as a long CSV: one row per reading, `step, timestamp, metric, value, unit`, in stream
order, streamed (a run of any length in bounded memory).

The metric is the tag the other trackers use (GROUP/KEY), the timestamp the reading's wall time
in ISO 8601 UTC (readings.Clock), a missing reading no row. One file per run, RUN_ID.csv: what
pandas (`pivot_table(index="step", columns="metric", values="value")`) and tidy tools read as it
is. trackio's `import_csv` wants the wide shape (one column per metric): give trackio the
TensorBoard export instead (`trackio.import_tf_events`), which keeps each run apart.
"""

from __future__ import annotations

import csv
import datetime
from pathlib import Path

from profiler import files
from profiler.report.trackers import readings
from profiler.store import StoredRun

COLUMNS = ("step", "timestamp", "metric", "value", "unit")


def timestamp(wall: float) -> str:
    """Epoch seconds as ISO 8601 UTC with microseconds ("" for an unknown time)."""
    if not wall:
        return ""
    moment = datetime.datetime.fromtimestamp(wall, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def export_run(stored: StoredRun, folder: str | Path, warnings: list[str] | None = None,
               fix: str = "choose another --dir") -> Path:
    """Write RUN_ID.csv under folder, whole or not at all; returns its path."""
    path = Path(folder) / f"{stored.run_id}.csv"
    clock = readings.Clock(stored, readings.created_epoch(stored))
    units: dict[str, tuple[str, str]] = {}
    with files.replacing(path, fix=fix) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(COLUMNS)
        for message in stored.messages(warnings if warnings is not None else []):
            wall = clock.wall(message)
            step = readings.sample_step(message)
            if message.get("type") != "sample" or step is None:
                continue
            when = timestamp(wall)
            for key, value in readings.readings(message):
                named = units.get(key)
                if named is None:
                    named = units[key] = (readings.tag(key), readings.unit_of(key))
                writer.writerow((step, when, named[0], repr(value), named[1]))
    return path
