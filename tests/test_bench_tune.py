"""`effiscope bench tune`: the tuner and a grid over the same space, with trial time and ratio."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from profiler.wire.client import worker_env


def test_bench_tune_compares_the_tuner_with_the_grid(effiscope_home):
    result = subprocess.run(
        [sys.executable, "-m", "profiler.cli", "bench", "tune", "nano", "--space",
         "batch=4x1,2x2", "--batch-size", "4", "--seq-len", "32", "--grid-steps", "4",
         "--min-steps", "2", "--warmup", "1", "--repeats", "1", "--device", "cpu", "--json"],
        capture_output=True, text=True, timeout=300,
        env={**worker_env(), **os.environ, "EFFISCOPE_HOME": str(effiscope_home)})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["candidates"] == 2
    assert report["grid"]["trials"] == 2 and not report["grid"]["failed"]
    assert report["tuner"]["trials"] == 2  # two candidates: one rung, nothing to halve
    assert report["tuner"]["runs"] == 1  # 4x1 and 2x2 as segments of one warm run
    assert report["time_ratio"] == report["tuner"]["time_s"] / report["grid"]["time_s"]
    assert report["grid"]["best_rank_of_tuner_pick"] in (1, 2)
    ratio = report["best_ratio"]
    assert ratio["ratio"] is not None
    if report["grid"]["best"] == report["tuner"]["best"]:
        assert ratio["verdict"] == "the same configuration"
    # Every trial is a run in the store: the grid's tagged for this bench, the tuner's under its
    # tune run (tagged for this bench too).
    from profiler.store import RunStore

    runs = RunStore(effiscope_home).list_runs()
    tagged = [r for r in runs if report["tag"] in (r.get("tags") or [])]
    assert report["tuner"]["tune_run"] in {r["id"] for r in tagged}
    assert len(tagged) >= 2 + 1  # the grid trials and the tune run
    tuner = [r for r in runs if f"tune:{report['tuner']['tune_run']}" in (r.get("tags") or [])]
    assert len(tuner) >= 2  # its warm run and its final re-measure
