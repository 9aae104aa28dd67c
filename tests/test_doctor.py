"""`effiscope doctor`: CPU checks pass and GPU checks skip with reasons here; a broken check makes
it exit non-zero and names the check; the JSON and Markdown reports are written and valid."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from profiler import cli
from profiler.cli.doctor import base as doctor_base
from profiler.cli.doctor import command as doctor

ROOT = Path(__file__).resolve().parent.parent
CPU_CHECKS = ["versions", "train_fp32", "adamw", "sdpa", "activation_checkpointing", "ddp",
              "fsdp", "flash_generation"]
GPU_CHECKS = [spec.name for spec in doctor.all_checks() if spec.cuda_only]
"""Every check only a GPU can tell: each must skip here, saying it needs CUDA."""


def _report(folder: Path) -> dict:
    files = sorted(folder.glob("doctor-*.json"))
    assert len(files) == 1, files
    assert files[0].with_suffix(".md").exists()
    return json.loads(files[0].read_text(encoding="utf-8"))


def test_cpu_checks_pass_and_gpu_checks_skip_with_reasons(effiscope_home, capsys):
    only = ",".join(CPU_CHECKS + GPU_CHECKS + ["compile"])
    assert cli.main(["doctor", "--device", "cpu", "--quick", "--only", only]) == 0
    report = _report(effiscope_home / "doctor")  # the data directory, as no --out was given
    status = {c["name"]: c for c in report["checks"]}
    assert set(status) == set(CPU_CHECKS + GPU_CHECKS + ["compile"])
    for name in CPU_CHECKS:
        assert status[name]["status"] == "pass", (name, status[name]["error"])
        assert status[name]["figures"], name
    for name in GPU_CHECKS:
        assert status[name]["status"] == "skip", name
        assert "CUDA" in status[name]["reason"], name
    assert "--full" in status["compile"]["reason"]  # slow on a CPU: skipped unless asked for
    assert status["ddp"]["figures"]["backend"] == status["fsdp"]["figures"]["backend"] == "gloo"
    assert status["fsdp"]["figures"]["parameter_types"] == ["DTensor"]
    assert report["result"]["exit_code"] == 0 and report["result"]["failed"] == []
    assert "PASS  train_fp32" in capsys.readouterr().out


def test_memory_prediction_on_cpu_compares_16_configurations(tmp_path):
    assert cli.main(["doctor", "--device", "cpu", "--only", "memory_prediction",
                     "--out", str(tmp_path)]) == 0
    check = _report(tmp_path)["checks"][0]
    rows = check["figures"]["configs"]
    assert len(rows) >= 12
    assert {(r["checkpoint_every"], r["dtype"]) for r in rows} == {
        (0, "fp32"), (1, "fp32"), (0, "bf16"), (1, "bf16")}
    assert all(abs(r["ratio"] - 1) <= 0.10 for r in rows)


def _broken(ctx):
    raise RuntimeError("deliberately broken for the test")


def test_a_broken_check_fails_the_run_and_is_named(tmp_path, monkeypatch, capsys):
    specs = doctor.all_checks()
    monkeypatch.setattr(doctor, "all_checks", lambda: specs + [
        doctor_base.CheckSpec("broken", "a check that raises", _broken)])
    code = cli.main(["doctor", "--device", "cpu", "--only", "versions,broken", "--out",
                     str(tmp_path)])
    assert code == 1
    assert "FAILED: broken" in capsys.readouterr().err
    report = _report(tmp_path)
    assert report["result"]["failed"] == ["broken"]
    broken = next(c for c in report["checks"] if c["name"] == "broken")
    assert broken["status"] == "fail"
    assert "RuntimeError: deliberately broken" in broken["error"]
    assert "_broken" in broken["traceback"]
    assert next(c for c in report["checks"] if c["name"] == "versions")["status"] == "pass"


def test_a_real_check_catches_non_finite_losses(tmp_path, monkeypatch):
    real_step = doctor_base.train_step

    def nan_step(state, batches, step):
        loss, norm, tokens = real_step(state, batches, step)
        return float("nan") if step >= 3 else loss, norm, tokens

    monkeypatch.setattr(doctor_base, "train_step", nan_step)
    assert cli.main(["doctor", "--device", "cpu", "--quick", "--only", "train_fp32",
                     "--out", str(tmp_path)]) == 1
    check = _report(tmp_path)["checks"][0]
    assert check["status"] == "fail" and "not finite" in check["error"]
    assert check["figures"]["loss_last"] is None and check["figures"]["loss_first"] > 0
    json.dumps(check, allow_nan=False)  # NaN figures were written as null, the JSON is valid


def test_unknown_check_is_a_usage_error(capsys):
    assert cli.main(["doctor", "--only", "versions,no_such_check"]) == 2
    err = capsys.readouterr().err
    assert "no_such_check" in err and "train_fp32" in err


def test_cli_subprocess_prints_json_and_imports_no_qt(tmp_path):
    code = ("import sys\n"
            "from profiler.cli import main\n"
            "rc = main(['doctor', '--json', '--device', 'cpu', '--only', 'versions,sdpa,nvml', "
            f"'--out', {str(tmp_path)!r}])\n"
            "qt = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph')]\n"
            "assert not qt, qt\n"
            "sys.exit(rc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=240)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [c["name"] for c in report["checks"]] == ["versions", "nvml", "sdpa"]
    assert report == _report(tmp_path)
    assert "doctor: 2 passed, 1 skipped, 0 failed" in result.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_checks_pass_on_a_gpu(tmp_path):
    assert cli.main(["doctor", "--quick", "--only", "nvml,train_fp16,sdpa,ddp,fsdp",
                     "--out", str(tmp_path)]) == 0
    assert {c["status"] for c in _report(tmp_path)["checks"]} == {"pass"}


def test_memory_trace_check_is_gpu_only_and_judges_at_5_percent(tmp_path):
    from profiler.cli.doctor.checks_memory import judge_trace_rows

    assert cli.main(["doctor", "--device", "cpu", "--only", "memory_trace",
                     "--out", str(tmp_path)]) == 0
    check = _report(tmp_path)["checks"][0]
    assert check["status"] == "skip" and "CUDA" in check["reason"]
    rows = [{"config": "a", "peak_ratio": 1.04, "start_ratio": 1.0},
            {"config": "b", "peak_ratio": 0.94, "start_ratio": 1.0},
            {"config": "c", "peak_ratio": 1.0, "start_ratio": 1.06}]
    assert [r["config"] for r in judge_trace_rows(rows)] == ["b", "c"]
