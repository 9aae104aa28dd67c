"""Parallel training through torchrun on this machine: gloo, 2 processes (or 2 loopback nodes)."""

from __future__ import annotations

import os
import signal
import socket
import threading

import psutil
import pytest

from profiler.config import ConfigError, validate
from profiler.store import RunStore
from profiler.store.recorder import RunRecorder
from profiler.wire import protocol
from profiler.wire.client import WorkerProcess, run_to_completion
from profiler.wire.launch import LaunchError, preflight, worker_command
from tests.helpers import collect, free_port, run_config

pytestmark = pytest.mark.slow


# Every job here: gpt-nano, 32-token sequences, validation every 4 steps.
JOB = {"seq_len": 32, "eval_interval": 4}


def clipped(strategy: str) -> dict:
    """The job's techniques: STRATEGY (ddp, fsdp or none) and clipping far above any norm: it
    never clips, and every step reports the global norm."""
    return {"grad_clip": {"max_norm": 1e6}, **({strategy: {}} if strategy else {})}


def run_job(config, tmp_path, name: str) -> list[dict]:
    worker = WorkerProcess(log_path=tmp_path / f"{name}.log", command=worker_command(config))
    try:
        worker.send(protocol.start(config.to_dict()))
        return collect(worker, timeout=180)
    finally:
        worker.shutdown()


def grad_norms(messages: list[dict]) -> list[float]:
    norms = [m["metrics"]["grad_norm"] for m in messages if m["type"] == "sample" and m["step"] > 0
             and m.get("phase") != "eval"]
    assert norms and all(isinstance(n, float) and n > 0 for n in norms)
    return norms


def losses(messages: list[dict]) -> list[float]:
    return [m["metrics"]["loss_train"] for m in messages if m["type"] == "sample" and m["step"] > 0]


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> list[dict]:
    """The one-process reference run (1 x 8 sequences per step), shared by ddp and fsdp."""
    folder = tmp_path_factory.mktemp("single")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("EFFISCOPE_HOME", str(folder / "home"))
        config = run_config(8, batch_size=8, nproc=1, techniques=clipped(""), **JOB)
        messages = run_job(config, folder, "single")
    assert messages[-1]["type"] == "done" and messages[-1]["status"] == "completed", messages[-3:]
    return messages


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one_process_with_the_same_global_batch(strategy, single, tmp_path):
    config = run_config(8, batch_size=4, nproc=2, techniques=clipped(strategy), **JOB)
    job = run_job(config, tmp_path, strategy)
    done = job[-1]
    assert done["type"] == "done" and done["status"] == "completed", job[-3:]
    summary = done["summary"]
    assert summary["world_size"] == 2
    assert summary["figures"]["replica_param_spread"]["value"] < 1e-9  # replicas stay identical
    assert set(summary["per_rank"]) == {"0", "1"}
    sample = next(m for m in job if m["type"] == "sample" and m["step"] == 3)
    assert {"rank0_step_time_s", "rank1_step_time_s", "rank1_rss_bytes"} <= set(sample["metrics"])
    # 2 x 4 sequences per step against 1 x 8: the same global batch, the same losses.
    assert losses(job) == pytest.approx(losses(single), rel=2e-4)
    # ... and the same gradient norm: under FSDP each rank holds only its shards' gradients,
    # and the reported norm is the whole model's (reduced over the job), not one rank's part.
    assert grad_norms(job) == pytest.approx(grad_norms(single), rel=2e-4)
    job_val = [m["metrics"]["loss_val"] for m in job if "loss_val" in m.get("metrics", {})]
    single_val = [m["metrics"]["loss_val"] for m in single if "loss_val" in m.get("metrics", {})]
    assert job_val == pytest.approx(single_val, rel=2e-4)
    started = next(m for m in job if m["type"] == "started")["run"]
    assert started["tokens_per_step"] == 2 * 4 * 32
    # Each rank saves the activations of its 4 sequences for backward, half of what one process
    # saves for 8; FSDP's all-gathered weights are weights, not saved activations.
    one = single[-1]["summary"]["figures"]["saved_for_backward_bytes"]["value"]
    assert summary["figures"]["saved_for_backward_bytes"]["value"] == pytest.approx(one / 2,
                                                                                   rel=0.02)
    if strategy == "fsdp":
        # Each rank holds half of the optimizer state.
        full = single[-1]["summary"]["figures"]["optimizer_state_bytes"]["value"]
        assert summary["figures"]["optimizer_state_bytes"]["value"] < 0.6 * full


def test_two_nodes_on_loopback_train_together(tmp_path):
    port = free_port()
    nodes = []
    for rank in (0, 1):
        config = run_config(6, batch_size=4, nproc=1, techniques=clipped("ddp"), **JOB)
        config.launch.nnodes = 2
        config.launch.node_rank = rank
        config.launch.rdzv_endpoint = f"127.0.0.1:{port}"
        config.launch.rdzv_timeout_s = 60
        nodes.append(config)
    results: dict[int, list[dict]] = {}
    threads = [threading.Thread(target=lambda r=r: results.__setitem__(r, run_job(nodes[r], tmp_path, f"node{r}")))
               for r in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(240)
    for rank in (0, 1):
        done = results[rank][-1]
        assert done["type"] == "done" and done["status"] == "completed", results[rank][-3:]
        assert done["summary"]["world_size"] == 2
    hello = {r: next(m for m in results[r] if m["type"] == "hello")["job"] for r in (0, 1)}
    assert {hello[0]["node_rank"], hello[1]["node_rank"]} == {0, 1}
    assert losses(results[0]) == losses(results[1])  # one job, one model


def test_stop_ends_every_rank_and_torchrun(tmp_path):
    """A stop ends the job: the run stops by request, torchrun exits 0 and no process of
    the job is left. The timeouts only guard against a hang (how fast is a bench's question)."""
    config = run_config(100_000, batch_size=4, nproc=2, techniques=clipped("ddp"), **JOB)
    worker = WorkerProcess(log_path=tmp_path / "job.log", command=worker_command(config))
    try:
        worker.send(protocol.start(config.to_dict()))
        collect(worker, until="sample", timeout=120)
        job = [worker.proc.pid] + [p.pid for p in psutil.Process(worker.pid).children(recursive=True)]
        assert len(job) >= 3  # torchrun and its two ranks
        worker.send(protocol.stop())
        done = collect(worker, until="done", timeout=120)[-1]
        code = worker.wait(60)
    finally:
        worker.shutdown()
    assert done["status"] == "stopped"
    assert done["summary"]["stop_reason"] == "stopped by request"
    assert done["summary"]["steps_completed"] < 100_000
    assert code == 0
    assert not [pid for pid in job if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


def test_a_dead_rank_ends_the_job_with_an_error_naming_it(tmp_path):
    store = RunStore()
    config = run_config(100_000, batch_size=4, nproc=2, techniques=clipped("ddp"), **JOB)
    run = store.create_run(config)
    recorder = RunRecorder(store, run)
    killed: list[int] = []

    def kill_rank_one(message: dict) -> None:
        if message["type"] != "sample" or killed or message["step"] < 2:
            return
        for proc in psutil.Process().children(recursive=True):
            try:
                if proc.environ().get("RANK") == "1" and "profiler.engine.worker" in " ".join(proc.cmdline()):
                    os.kill(proc.pid, signal.SIGKILL)
                    killed.append(proc.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass

    status = run_to_completion(config.to_dict(), recorder, on_message=kill_rank_one,
                               command=worker_command(config))
    assert killed
    assert status == "failed"
    summary = run.summary()
    assert "rank 1" in summary["error"]["message"] and "SIGKILL" in summary["error"]["message"]
    warnings: list[str] = []
    samples = [m for m in run.messages(warnings) if m["type"] == "sample"]
    assert samples and not warnings  # every line received before the failure is kept and readable


def test_invalid_launch_settings_say_what_to_fix(tmp_path):
    lonely = run_config(8, batch_size=4, nproc=1, techniques=clipped("fsdp"), **JOB)
    with pytest.raises(ConfigError, match="needs 2 or more processes"):
        validate(lonely)
    unsynced = run_config(8, batch_size=4, nproc=2, techniques=clipped(""), **JOB)
    with pytest.raises(ConfigError, match="neither ddp nor fsdp"):
        validate(unsynced)
    no_endpoint = run_config(8, batch_size=4, nproc=1, techniques=clipped("ddp"), **JOB)
    no_endpoint.launch.nnodes = 2
    with pytest.raises(ConfigError, match="rdzv_endpoint"):
        validate(no_endpoint)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        taken = run_config(8, batch_size=4, nproc=1, techniques=clipped("ddp"), **JOB)
        taken.launch.nnodes = 2
        taken.launch.rdzv_endpoint = f"127.0.0.1:{busy.getsockname()[1]}"
        with pytest.raises(LaunchError, match="already in use"):
            preflight(validate(taken))
    finally:
        busy.close()


def test_nodes_that_never_arrive_time_out_with_a_sentence(tmp_path):
    store = RunStore()
    config = run_config(8, batch_size=4, nproc=1, techniques=clipped("ddp"), **JOB)
    config.launch.nnodes = 2
    config.launch.rdzv_endpoint = f"127.0.0.1:{free_port()}"
    config.launch.rdzv_timeout_s = 3
    run = store.create_run(config)
    recorder = RunRecorder(store, run)
    status = run_to_completion(config.to_dict(), recorder, command=worker_command(config))
    assert status == "failed"
    assert "only 1 of 2 nodes joined" in run.summary()["error"]["message"]
