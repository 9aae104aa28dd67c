"""The worker end to end over its real stdin/stdout, as every front end uses it."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil
import pytest

from profiler import protocol
from profiler.client import WorkerProcess, worker_env
from tests.helpers import collect, nano_config


@pytest.mark.slow
def test_nano_training_lowers_validation_loss(tmp_path):
    """200 steps of gpt-nano on the standard-library corpus: val loss < 0.8 x its first value."""
    config = nano_config(steps=200, batch_size=16, seq_len=128, eval_interval=50)
    config.train.learning_rate = 2e-3
    worker = WorkerProcess(log_path=tmp_path / "worker.log")
    try:
        worker.send(protocol.start(config.to_dict()))
        messages = collect(worker, timeout=600)
    finally:
        worker.shutdown()
    kinds = [m["type"] for m in messages]
    assert kinds[0] == "hello" and kinds[1] == "started" and kinds[-1] == "done"
    assert "error" not in kinds, [m for m in messages if m["type"] == "error"]
    samples = [m for m in messages if m["type"] == "sample"]
    assert [s["step"] for s in samples if s["step"] > 0] == list(range(1, 201))
    val = [(s["step"], s["metrics"]["loss_val"]) for s in samples if "loss_val" in s["metrics"]]
    assert [step for step, _ in val] == [0, 50, 100, 150, 200]
    assert val[-1][1] < 0.8 * val[0][1], val
    done = messages[-1]
    assert done["status"] == "completed"
    figures = done["summary"]["figures"]
    assert figures["loss_val_final"]["value"] == pytest.approx(val[-1][1])
    assert figures["tokens_per_s"]["value"] > 0 and figures["tokens_per_s"]["unit"] == "tokens/s"
    # Warmup steps are marked in the stream and left out of the speed summary.
    assert all(s["phase"] == "warmup" for s in samples if 1 <= s["step"] <= 2)
    measured = [s["metrics"]["step_time_s"] for s in samples if s.get("phase") == "measure"]
    assert done["summary"]["measured_steps"] == len(measured) == 198
    expected_tps = 198 * 16 * 128 / sum(measured)
    assert figures["tokens_per_s"]["value"] == pytest.approx(expected_tps, rel=1e-6)
    # No GPU here: GPU figures are null ("n/a"), never an exception.
    assert samples[-1]["metrics"]["gpu_util_percent"] is None
    assert samples[-1]["metrics"]["rss_bytes"] > 10 * 2**20


def test_closing_stdin_ends_the_run_and_the_worker(tmp_path):
    worker = WorkerProcess(log_path=tmp_path / "worker.log")
    try:
        worker.send(protocol.start(nano_config(steps=10_000).to_dict()))
        collect(worker, until="sample")
        closed_at = time.monotonic()
        worker.close_stdin()
        rest = collect(worker, until="done", timeout=10)
        code = worker.wait(5)
        assert time.monotonic() - closed_at < 3
    finally:
        worker.shutdown()
    assert rest[-1]["type"] == "done" and rest[-1]["status"] == "stopped"
    assert code == 0


def test_stop_command_ends_the_run_cleanly(tmp_path):
    worker = WorkerProcess(log_path=tmp_path / "worker.log")
    try:
        worker.send(protocol.start(nano_config(steps=10_000).to_dict()))
        collect(worker, until="sample")
        worker.send(protocol.stop())
        rest = collect(worker, until="done", timeout=10)
        assert rest[-1]["status"] == "stopped"
        assert rest[-1]["summary"]["stop_reason"] == "stopped by request"
        assert psutil.pid_exists(worker.pid)  # the worker waits for the next command
    finally:
        assert worker.shutdown() == 0


def test_bad_config_is_a_config_error_not_a_crash(tmp_path):
    worker = WorkerProcess(log_path=tmp_path / "worker.log")
    try:
        bad = nano_config().to_dict()
        bad["train"]["seq_len"] = 100_000
        worker.send(protocol.start(bad))
        messages = collect(worker, timeout=30)
        # The stream goes on after garbage: send a bad command, then a good run.
        worker.proc.stdin.write(b"this is not json\n")
        worker.proc.stdin.flush()
        worker.send(protocol.start(nano_config(steps=3).to_dict()))
        second = collect(worker, timeout=60)
    finally:
        worker.shutdown()
    error = next(m for m in messages if m["type"] == "error")
    assert error["kind"] == "config" and "train.seq_len" in error["message"]
    assert messages[-1] == {"type": "done", "status": "failed", "summary": {}}
    assert any(m["type"] == "event" and "bad command" in m["message"] for m in second)
    assert second[-1]["status"] == "completed"


def test_stray_prints_never_reach_the_protocol_stream():
    script = (
        "import os\n"
        "from profiler import worker\n"
        "fd = worker._claim_stdout()\n"
        "channel = worker.Channel(fd)\n"
        "print('a stray python print')\n"
        "os.write(1, b'a stray C-level write\\n')\n"
        "channel.send({'type': 'event', 'kind': 'info', 'message': 'real'})\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, env=worker_env(),
                            timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["real"]
    assert b"a stray python print" in result.stderr and b"C-level" in result.stderr


def test_set_mid_run_changes_behaviour_from_the_next_step(tmp_path):
    config = nano_config(steps=10_000, batch_size=4, seq_len=32, eval_interval=0)
    worker = WorkerProcess(log_path=tmp_path / "worker.log")
    try:
        worker.send(protocol.start(config.to_dict()))
        before = collect(worker, until="sample")
        while before[-1]["step"] < 3:
            before += collect(worker, until="sample")
        worker.send(protocol.set_technique("grad_accumulation", {"micro_batches": 2}))
        worker.send(protocol.set_technique("optimizer", {"learning_rate": 1.5e-4}))
        worker.send(protocol.set_technique("compile", {"mode": "default"}))
        after = []
        while len([m for m in after if m["type"] == "sample"]) < 4:
            after += collect(worker, until="sample")
        worker.send(protocol.stop())
        after += collect(worker, until="done")
    finally:
        worker.shutdown()
    toggles = [m for m in after if m["type"] == "event" and m["kind"] == "toggle"]
    assert [t["technique"] for t in toggles] == ["grad_accumulation", "optimizer"]
    change_step = toggles[0]["step"]
    refused = [m for m in after if m["type"] == "event" and m["kind"] == "refused"]
    assert refused and "restart the run" in refused[0]["message"]
    samples = [m for m in before + after if m["type"] == "sample"]
    for sample in samples:
        m = sample["metrics"]
        tokens = round(m["tokens_per_s"] * m["step_time_s"])
        if sample["step"] < change_step:
            assert tokens == 4 * 32 and m["lr"] == pytest.approx(1e-3)
        else:
            assert tokens == 2 * 4 * 32 and m["lr"] == pytest.approx(1.5e-4)
    assert max(s["step"] for s in samples) > change_step
    assert after[-1]["summary"]["mid_run_changes"] == 2


def test_unsupported_technique_is_refused_before_the_run(tmp_path):
    config = nano_config()
    config.techniques = {"precision": {"dtype": "fp16"}}
    worker = WorkerProcess(log_path=tmp_path / "worker.log")
    try:
        worker.send(protocol.start(config.to_dict()))
        messages = collect(worker, timeout=60)
    finally:
        worker.shutdown()
    assert "started" not in [m["type"] for m in messages]
    error = next(m for m in messages if m["type"] == "error")
    assert error["kind"] == "unsupported"
    assert error["message"].startswith("techniques.precision: fp16")
    assert "bf16 or fp32" in error["message"]
