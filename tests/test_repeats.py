"""`effiscope run --repeats N`: N stored runs of one config, grouped, and the spread across them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from profiler import cli
from profiler.cli.repeats import across, describe, spread
from profiler.store import RunStore
from profiler.wire.client import worker_env


def test_spread_across_runs_from_known_values():
    s = spread([100.0, 110.0, 90.0])
    assert s["n"] == 3 and s["median"] == 100.0 and (s["min"], s["max"]) == (90.0, 110.0)
    assert s["cv_pct"] == pytest.approx(10.0)  # sample sd 10 over mean 100
    assert s["ci_low"] is None  # 3 runs: too few for a 95 % interval of the median
    wide = spread([float(v) for v in range(1, 11)])
    assert (wide["ci_low"], wide["ci_high"]) == (2.0, 9.0)  # order statistics, n = 10
    assert spread([5.0])["cv_pct"] is None and spread([])["median"] is None


def test_across_reads_the_headline_figures_of_each_run():
    summaries = [{"figures": {"tokens_per_s": {"value": v, "unit": "tokens/s"}}}
                 for v in (1000.0, 1200.0)]
    rows = across(summaries)
    assert [r["key"] for r in rows] == ["tokens_per_s"]
    text = describe(rows[0])
    assert text.startswith("Throughput: 1,100 tokens/s (median of 2 runs), min-max 1,000")
    assert "CV 13 %" in text and "n/a below 6 runs" in text  # sd 141 over mean 1,100


def test_repeats_out_of_range_is_refused_with_a_sentence(capsys):
    assert cli.main(["run", "nano", "--repeats", "0"]) == 2
    assert "--repeats N runs the config N times" in capsys.readouterr().err
    assert RunStore().list_runs() == []


@pytest.mark.slow  # two tiny nano runs: ~10 s on an idle 2-core machine
def test_run_repeats_two_stores_two_grouped_runs_and_a_spread_line():
    result = subprocess.run(
        [sys.executable, "-m", "profiler.cli", "run", "nano", "--repeats", "2", "--steps", "4",
         "--batch-size", "2", "--seq-len", "32", "--warmup", "1", "--name", "rep"],
        capture_output=True, text=True, env={**worker_env(), **os.environ}, timeout=300)
    assert result.returncode == 0, result.stderr
    store = RunStore()
    runs = sorted(store.list_runs(), key=lambda r: r["name"])
    assert [r["name"] for r in runs] == ["rep repeat 1/2", "rep repeat 2/2"]
    metas = [store.open_run(r["id"]).meta() for r in runs]
    groups = {m["repeat"]["group"] for m in metas}
    assert len(groups) == 1 and [m["repeat"]["index"] for m in metas] == [1, 2]
    group = groups.pop()
    assert all(m["tags"] == [f"repeats:{group}"] and m["repeat"]["of"] == 2 for m in metas)
    line = next(x for x in result.stdout.splitlines() if x.strip().startswith("Throughput:"))
    rates = [store.open_run(r["id"]).summary()["figures"]["tokens_per_s"]["value"] for r in runs]
    assert "median of 2 runs" in line and "CV " in line
    assert f"spread across 2 of 2 repeats (group {group}" in result.stdout
    shown = spread(rates)
    from profiler.figures.metrics import format_value

    assert format_value(shown["median"], "tokens/s") in line  # the spread of the stored runs
