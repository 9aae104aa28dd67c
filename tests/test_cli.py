"""The effiscope command: run a preset headless, list and show runs, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from profiler.wire.client import worker_env


def effiscope(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "profiler.cli", *args], capture_output=True,
                          text=True, env={**worker_env(), **os.environ}, timeout=timeout)


@pytest.mark.slow  # ~12 s on an idle 2-core machine, over 20 s on a busy one
def test_run_nano_then_runs_and_show():
    result = effiscope("run", "nano", "--steps", "12", "--batch-size", "4", "--seq-len", "64",
                       "--warmup", "2", "--name", "cli-test")
    assert result.returncode == 0, result.stderr
    assert "step 12/12" in result.stderr
    listed = json.loads(effiscope("runs", "--json").stdout)
    assert len(listed) == 1 and listed[0]["name"] == "cli-test"
    assert listed[0]["status"] == "completed" and listed[0]["steps"] == 12
    run_id = listed[0]["id"]
    plain = effiscope("runs")
    assert run_id in plain.stdout and "completed" in plain.stdout
    shown = json.loads(effiscope("show", run_id, "--json").stdout)
    assert shown["summary"]["figures"]["tokens_per_s"]["value"] > 0
    assert shown["config"]["limits"]["steps"] == 12
    text = effiscope("show", run_id[:15]).stdout
    assert "tokens/s" in text and "n/a" in text  # no GPU: GPU figures are n/a


def test_ctrl_c_stops_cleanly_and_keeps_the_run():
    proc = subprocess.Popen([sys.executable, "-m", "profiler.cli", "run", "nano", "--steps", "100000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**worker_env(), **os.environ})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until the run has its first steps
            time.sleep(0.5)
            runs = json.loads(effiscope("runs", "--json").stdout or "[]")
            if runs and runs[0]["id"]:
                stream = os.path.join(os.environ["EFFISCOPE_HOME"], "runs", runs[0]["id"], "stream.jsonl")
                if os.path.exists(stream) and '"step":3' in open(stream).read():
                    break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    row = json.loads(effiscope("runs", "--json").stdout)[0]
    assert row["status"] == "stopped"
    assert row["steps"] >= 3


@pytest.mark.parametrize("args, words", [
    (["run", "no-such-preset"], "neither a preset"),
    (["run", "nano", "--batch-size", "0"], "train.batch_size"),
    (["show", "no-such-run"], "effiscope runs"),
])
def test_bad_input_exits_2_with_a_sentence(args, words):
    result = effiscope(*args)
    assert result.returncode == 2
    assert words in result.stderr


def test_help_for_every_command():
    for command in ("run", "runs", "show", "worker", "gui"):
        result = effiscope(command, "--help")
        assert result.returncode == 0 and "usage: effiscope" in result.stdout


@pytest.mark.slow
def test_run_with_profile_captures_steps_after_the_warmup():
    from profiler.store import RunStore

    result = effiscope("run", "nano", "--steps", "30", "--batch-size", "2", "--seq-len", "32",
                       "--warmup", "2", "--profile", "3", "--json", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "profile of steps" in result.stderr
    run = RunStore().open_run(json.loads(result.stdout)["run_id"])
    lines = [json.loads(line) for line in run.stream_path.read_text().splitlines()]
    profiles = [m for m in lines if m.get("type") == "profile"]
    assert len(profiles) == 1 and profiles[0]["steps"] == 3
    assert profiles[0]["step"] > 2  # after the warmup, not on it
    assert profiles[0]["operators"] and profiles[0]["trace_path"].startswith(str(run.path))


def test_profile_outside_a_train_run_is_refused_with_a_sentence(tmp_path):
    config = tmp_path / "infer.toml"
    config.write_text('workload = "infer"\n[model]\npreset = "gpt-nano"\n')
    for args in ((str(config), "--profile", "2"), ("nano", "--profile", "0")):
        result = effiscope("run", *args)
        assert result.returncode == 2, result.stderr
        assert "--profile" in result.stderr and "train" in result.stderr
