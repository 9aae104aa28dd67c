"""Machine-readable reports: versioned JSON (schema.json) and one tidy CSV table.

Both keep every reading the run recorded, warmup and missing readings included (a missing
reading is null in JSON and an empty cell in CSV), so nothing is sampled away.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

from profiler import __version__
from profiler.metrics import json_safe
from profiler.report.compare import comparison
from profiler.report.load import RunData
from profiler.report.recommend import recommendations

SCHEMA_ID = "effiscope.report/1"
SCHEMA_PATH = Path(__file__).with_name("schema.json")
CSV_COLUMNS = ("run", "step", "time", "metric", "unit", "value", "phase")


def _series(run: RunData) -> dict:
    return {key: {"label": s.label, "unit": s.unit, "step": s.steps, "time_s": s.times_s,
                  "phase": s.phases, "value": s.values}
            for key, s in run.series.items()}


def run_document(run: RunData) -> dict:
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
        "series": _series(run),
        "events": run.events,
        "errors": run.errors,
        "profiles": run.profiles,
        "recommendations": recommendations(run),
        "load_warnings": run.load_warnings,
    }


def report_document(runs: list[RunData], baseline: RunData | None = None) -> dict:
    """The whole JSON report; `comparison` is null for a single run."""
    compared = comparison(runs, baseline or runs[0]) if len(runs) > 1 else None
    return {
        "schema": SCHEMA_ID,
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "generator": {"name": "effiscope", "version": __version__},
        "runs": [run_document(run) for run in runs],
        "comparison": compared,
    }


def to_json(runs: list[RunData], baseline: RunData | None = None) -> str:
    # Strict JSON: a value that is not finite (a forged or hand-edited file; the protocol sends
    # null) is null, n/a, and the run's load warnings say where it was.
    return json.dumps(json_safe(report_document(runs, baseline)), indent=1, allow_nan=False,
                      ensure_ascii=False) + "\n"


def to_csv(runs: list[RunData]) -> str:
    """run, step, time, metric, unit, value, phase: one row per reading, in stream order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for run in runs:
        rows = []
        for order, (key, s) in enumerate(run.series.items()):
            for step, time_s, phase, value in zip(s.steps, s.times_s, s.phases, s.values,
                                                  strict=True):
                rows.append((step, order, key, time_s, s.unit, value, phase))
        # By step, then metrics in the order the stream first sent them (a stable sort keeps
        # repeated steps, e.g. after a resume, in the order received).
        rows.sort(key=lambda r: (r[0], r[1]))
        for step, _, key, time_s, unit, value, phase in rows:
            writer.writerow((run.run_id, step, "" if time_s is None else repr(time_s), key, unit,
                             "" if value is None else repr(value), phase or ""))
    return out.getvalue()
