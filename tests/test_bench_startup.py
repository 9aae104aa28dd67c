"""`effiscope bench startup` measures both paths to the first sample: a worker spawned at Run
(cold) and one already started that has said hello (warm)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_bench_startup_measures_cold_and_warm(capsys):
    from profiler.cli import main

    assert main(["bench", "startup", "nano", "--repeats", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    cold, warm = report["parts"]["cold"], report["parts"]["warm"]
    assert cold["process_and_imports_s"]["n"] == 1 and cold["process_and_imports_s"]["median"] > 0
    assert warm["process_and_imports_s"]["n"] == 0  # done before Run was pressed
    for parts in (cold, warm):
        assert parts["total_s"]["n"] == 1
        pieces = sum(parts[p]["median"] or 0.0 for p in
                     ("process_and_imports_s", "setup_s", "first_validation_s", "first_step_s"))
        assert pieces == pytest.approx(parts["total_s"]["median"], rel=1e-6)
    assert report["warm_vs_cold"]["ratio"] == pytest.approx(
        warm["total_s"]["median"] / cold["total_s"]["median"])
