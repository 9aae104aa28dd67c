"""`effiscope bench parallel` compares 1 process with N through torchrun and reports scaling."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from profiler.wire.client import worker_env


@pytest.mark.slow
def test_bench_parallel_reports_speedup_and_efficiency():
    result = subprocess.run(
        [sys.executable, "-m", "profiler.cli", "bench", "parallel", "--steps", "4", "--warmup", "1",
         "--repeats", "1", "--json"],
        capture_output=True, text=True, env={**worker_env(), **os.environ}, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    one = report["tokens_per_s"]["1 process"]["median"]
    two = report["tokens_per_s"]["2 processes"]["median"]
    assert one > 0 and two > 0
    assert report["speedup"]["ratio"] == pytest.approx(two / one)
    assert report["efficiency"]["ratio"] == pytest.approx(two / (2 * one))
    assert report["speedup"]["verdict"].startswith("n/a")  # one round: no interval to claim
