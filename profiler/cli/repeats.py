"""`effiscope run CONFIG --repeats N`: the same config N times, and the spread across the runs.

One run's interval says how steady its steps were; it cannot say how far a second run of the same
config lands (another process, a different memory layout, a thermal state). Repeats measure
that: each repeat is a normal run in the store, named "NAME repeat i/N", with
{"repeat": {"group", "index", "of"}} in its meta.json and the tag "repeats:GROUP", so the history
shows them together. After the last one the headline figures (profiler.report.compare's rows)
are summarised across the runs: the median of the run medians, min-max, the coefficient of
variation and, from 6 runs on, a 95 % order-statistics interval of the median across runs.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import secrets
import sys
from collections.abc import Callable

from profiler.figures import stats
from profiler.figures.metrics import format_value, significant
from profiler.text import safe

MAX_REPEATS = 100
EXIT_OK, EXIT_USAGE = 0, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, metavar="N",
                        help="run the config N times (each a run in the store, grouped) and print "
                             "the spread of the headline figures across the runs")


def new_group() -> str:
    return secrets.token_hex(4)


def repeat_name(base: str, index: int, of: int) -> str:
    return f"{base} repeat {index}/{of}"


def mark(store, run, group: str, index: int, of: int) -> None:
    """Write a repeat's place into its run's meta.json ({"repeat": {group, index, of}} and the
    tag "repeats:GROUP") and the history's index; StoreError when the folder cannot be written."""
    meta = run.meta()
    tags = set(meta.get("tags") or []) | {f"repeats:{group}"}
    run.write_meta({**meta, "repeat": {"group": group, "index": index, "of": of},
                    "tags": sorted(tags)})
    store.update_index(run)


def spread(values: list[float]) -> dict:
    """The spread of one figure across runs: {n, median, min, max, cv_pct, ci_low, ci_high};
    cv_pct is the sample standard deviation over the mean (None below 2 runs or for a zero
    mean), ci_* the median's 95 % interval across runs (None below 6 runs)."""
    data = sorted(float(v) for v in values if isinstance(v, (int, float))
                  and not isinstance(v, bool) and math.isfinite(v))
    n = len(data)
    out = {"n": n, "median": stats.percentile(data, 50), "min": data[0] if data else None,
           "max": data[-1] if data else None, "cv_pct": None, "ci_low": None, "ci_high": None}
    if n >= 2:
        mean = sum(data) / n
        sd = math.sqrt(sum((v - mean) ** 2 for v in data) / (n - 1))
        out["cv_pct"] = sd / abs(mean) * 100 if mean else None
    out["ci_low"], out["ci_high"] = stats.median_interval(data)
    return out


def across(summaries: list[dict]) -> list[dict]:
    """[{key, label, unit, better, values, spread}] for each headline figure the runs have."""
    from profiler.report.compare import DELTA_ROWS

    rows = []
    for key, label, unit, better in DELTA_ROWS:
        values = []
        for summary in summaries:
            fig = (summary.get("figures") or {}).get(key)
            value = fig.get("value") if isinstance(fig, dict) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values.append(float(value))
        if values:
            rows.append({"key": key, "label": label, "unit": unit, "better": better,
                         "values": values, "spread": spread(values)})
    return rows


def describe(row: dict) -> str:
    """"Throughput: 1,010 tokens/s (median of 3 runs), min-max 990 - 1,030 tokens/s, CV 2.1 %,
    95 % interval n/a below 6 runs"."""
    s, unit = row["spread"], row["unit"]
    runs = "run" if s["n"] == 1 else "runs"
    text = (f"{row['label']}: {format_value(s['median'], unit)} (median of {s['n']} {runs}), "
            f"min-max {format_value(s['min'], unit)} - {format_value(s['max'], unit)}, ")
    text += "CV n/a" if s["cv_pct"] is None else f"CV {significant(s['cv_pct'], 2)} %"
    if s["ci_low"] is None:
        text += ", 95 % interval n/a below 6 runs"
    else:
        text += (f", 95 % interval {format_value(s['ci_low'], unit)} - "
                 f"{format_value(s['ci_high'], unit)}")
    return text


def completed_summaries(store, run_ids: list[str]) -> list[dict]:
    """The summaries of the runs that completed (a stopped or failed repeat is not a sample of
    the config's speed)."""
    from profiler.store import StoreError

    out = []
    for run_id in run_ids:
        try:
            summary = store.open_run(run_id).summary() or {}
        except StoreError:
            continue
        if summary.get("status") == "completed":
            out.append(summary)
    return out


def report_lines(store, group: str, run_ids: list[str], of: int) -> list[str]:
    """The spread as the CLI prints it and the app shows it: a heading and a line per figure."""
    summaries = completed_summaries(store, run_ids)
    lines = [f"spread across {len(summaries)} of {of} repeats (group {group}; runs "
             f"{', '.join(run_ids)}):"]
    rows = across(summaries)
    lines += [f"  {describe(row)}" for row in rows] or ["  n/a: no repeat completed with figures"]
    return lines


def run_repeats(config, repeats: int | None,
                run_once: Callable[[object, dict], tuple[int, str | None]],
                as_json: bool = False) -> int:
    """Run `config` `repeats` times with run_once(config, repeat) -> (exit code, run id) (the
    CLI's one headless run; it marks the run with mark(..., **repeat)), then print the spread across the runs that completed. Stops at the
    first run that was interrupted; the exit code is the first non-zero one, else 0."""
    from profiler.store import RunStore

    if not isinstance(repeats, int) or not 1 <= repeats <= MAX_REPEATS:
        print(f"effiscope: --repeats N runs the config N times: give N from 1 to {MAX_REPEATS}",
              file=sys.stderr)
        return EXIT_USAGE
    group = new_group()
    base_name = config.name or config.run_record()["model"]
    codes: list[int] = []
    run_ids: list[str] = []
    for index in range(1, repeats + 1):
        one = copy.deepcopy(config)
        one.name = repeat_name(base_name, index, repeats)
        print(f"repeat {index}/{repeats} (group {group})", file=sys.stderr)
        code, run_id = run_once(one, {"group": group, "index": index, "of": repeats})
        codes.append(code)
        if run_id:
            run_ids.append(run_id)
        if code >= 128 or run_id is None:  # interrupted, or the store refused: no more repeats
            break
    store = RunStore()
    if as_json:
        summaries = completed_summaries(store, run_ids)
        print(json.dumps({"group": group, "runs": run_ids, "completed": len(summaries),
                          "spread": across(summaries)}, indent=2))
    else:
        print()
        for line in report_lines(store, group, run_ids, repeats):
            print(safe(line))
    return next((c for c in codes if c != EXIT_OK), EXIT_OK)
