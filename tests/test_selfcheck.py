"""The GPU self-check rehearsed on the CPU (issue 32): the same script a lent GPU runs, with the
CPU checks running and every GPU-only check saying what it would prove, so its plumbing is
proven in CI before any GPU is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from profiler.cli.doctor import command as doctor
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_the_self_check_rehearses_every_check_on_the_cpu(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable,
           "EFFISCOPE_HOME": str(tmp_path / "home")}
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_selfcheck.sh"), "--rehearse",
                             "--quick"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=280)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"
    assert {"nvidia-smi.txt", "doctor-stdout.json", "doctor-log.txt", "pytest-gpu.txt"} <= {
        p.name for p in out.iterdir()}
    report = json.loads((out / "doctor-stdout.json").read_text())
    assert report["options"]["rehearse"] is True
    assert report["environment"]["device"] == "cpu"
    specs = {spec.name: spec for spec in doctor.all_checks()}
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == set(specs)  # the whole self-check, every check accounted for
    for name, check in checks.items():
        if specs[name].cuda_only:
            # What it proves on a GPU, in its own words, e.g. the UUID check's.
            assert check["status"] == "skip" and check["would_check"], name
            assert check["would_check"] == doctor.proves(specs[name])
        else:
            assert check["status"] in ("pass", "skip"), (name, check)
    assert "by UUID" in checks["nvml_uuid"]["would_check"] or \
        "UUID" in checks["nvml_uuid"]["would_check"]
    assert sum(c["status"] == "pass" for c in checks.values()) >= 8  # the CPU checks ran
    assert list(out.glob("doctor-*.json")) and list(out.glob("doctor-*.md"))
