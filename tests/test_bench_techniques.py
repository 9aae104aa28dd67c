"""`effiscope bench techniques` measures variants side by side and reports ratios."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from profiler.wire.client import worker_env


def test_bench_techniques_reports_ratios_against_the_baseline():
    result = subprocess.run(
        [sys.executable, "-m", "profiler.cli", "bench", "techniques", "--steps", "4", "--warmup",
         "1", "--repeats", "1", "--only", "SGD,fp16", "--json"],
        capture_output=True, text=True, env={**worker_env(), **os.environ}, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    rows = {row["variant"]: row for row in report["rows"]}
    baseline = rows.pop("baseline (AdamW foreach, fp32, SDPA)")
    assert baseline["tokens_per_s"]["distribution"]["median"] > 0
    assert baseline["tokens_per_s"]["vs_baseline"]["ratio"] == 1.0
    sgd = rows["optimizer: SGD momentum"]
    assert sgd["tokens_per_s"]["vs_baseline"]["ratio"] == pytest.approx(
        sgd["tokens_per_s"]["distribution"]["median"] / baseline["tokens_per_s"]["distribution"]["median"])
    assert sgd["peak_rss_growth_bytes"]["distribution"]["median"] > 0
    # fp16 needs CUDA: on this machine it is listed as not run, with the reason.
    skipped = {s["variant"]: s["reason"] for s in report["skipped"]}
    if report["host"]["device"] == "cpu":
        assert "CUDA" in skipped["precision: fp16 autocast + scaler"]
    assert "--compile" in skipped["torch.compile (default)"]
    assert "vs baseline" in subprocess.run(  # the table names the baseline each ratio is against
        [sys.executable, "-c", "from profiler.bench.techniques import format_table; import json, "
         "sys; print(format_table(json.loads(sys.stdin.read())))"], input=result.stdout,
        capture_output=True, text=True, env={**worker_env(), **os.environ}).stdout
