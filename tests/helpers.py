"""Helpers shared by the tests: the one run-config factory, a worker's messages collected, runs
put into the store, and the stand-ins for a workload's control and a worker's channel."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from profiler.config import RunConfig, validate
from profiler.figures.stats import figure, percentile
from profiler.models.presets import GPTShape
from profiler.store import RunStore
from profiler.store.recorder import RunRecorder
from profiler.wire import protocol
from profiler.wire.client import WorkerProcess, read_messages


def run_config(steps: int = 20, *, data: str = "text", workload: str = "train", name: str = "test",
               batch_size: int | None = None, seq_len: int | None = None,
               eval_interval: int | None = None, eval_batches: int | None = None,
               warmup_steps: int | None = None, max_train_bytes: int | None = None,
               techniques: dict | None = None, nproc: int = 1, seed: int | None = None,
               validated: bool = False, model: dict | None = None, infer: dict | None = None,
               distill: dict | None = None, **train) -> RunConfig:
    """The tests' one run config: gpt-nano on the CPU for `steps` steps.

    data="text" (the default) trains on 400 kB of text, batches of 8 x 64 tokens, validation
    every 10 steps; data="random" is the fault suite's run, steps of a few milliseconds: random
    tokens, batches of 2 x 32, no validation. Any of these sizes can be given; other keywords
    set `config.train` fields, and `model`, `infer`, `distill` update those sections (a nested
    dict updates a nested section: distill={"teacher": {...}})."""
    fast = data == "random"
    config = RunConfig(name=name, workload=workload, device="cpu",
                       techniques=dict(techniques or {}))
    config.model.preset = "gpt-nano"
    if seed is not None:
        config.seed = seed
    if fast:
        config.data.source = "random"
    if max_train_bytes or not fast:
        config.data.max_train_bytes = max_train_bytes or 400_000
    config.limits.steps = steps
    config.limits.warmup_steps = warmup_steps if warmup_steps is not None else (
        1 if fast else min(2, steps - 1))
    config.train.batch_size = batch_size or (2 if fast else 8)
    config.train.seq_len = seq_len or (32 if fast else 64)
    config.train.eval_interval = eval_interval if eval_interval is not None else (
        0 if fast else 10)
    config.train.eval_batches = eval_batches or (1 if fast else 2)
    config.launch.nproc_per_node = nproc
    for key, value in train.items():
        _set(config.train, "train", key, value)
    for section, values in (("model", model), ("infer", infer), ("distill", distill)):
        _update(getattr(config, section), section, values or {})
    return validate(config) if validated else config


def _update(section, name: str, values: dict) -> None:
    for key, value in values.items():
        if isinstance(value, dict):
            _update(getattr(section, key), f"{name}.{key}", value)
        else:
            _set(section, name, key, value)


def _set(section, name: str, key: str, value) -> None:
    if not hasattr(section, key):  # a typo in a test would otherwise set nothing the run reads
        raise AttributeError(f"{name} has no setting {key!r}")
    setattr(section, key, value)


# A distillation pair: a 2-layer teacher and a 1-layer student of one vocabulary.
TEACHER = GPTShape(2, 4, 64, 64, 256, "tiny-teacher")
STUDENT = GPTShape(1, 2, 64, 64, 256, "tiny-student")


def distill_settings(folder, alpha: float) -> dict:
    """run_config's keywords for distilling folder/teacher.safetensors (TEACHER) into
    folder/student.safetensors (STUDENT): the student sees little text (20 kB), batches of
    16 x 64, seed 7, temperature 1, validated."""
    return dict(workload="distill", seed=7, max_train_bytes=20_000, batch_size=16, seq_len=64,
                learning_rate=3e-3, eval_interval=25, eval_batches=8, warmup_steps=1,
                validated=True,
                model={"source": "checkpoint", "path": str(folder / "student.safetensors")},
                distill={"alpha": alpha, "temperature": 1.0, "teacher": {
                    "source": "checkpoint", "path": str(folder / "teacher.safetensors")}})


def collect(worker: WorkerProcess, until: str = "done", timeout: float = 120.0) -> list[dict]:
    """Decode the worker's messages until one of type `until` (or EOF); fail on timeout."""
    try:
        return read_messages(worker, (until,), timeout)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


def stored_run(store, name: str, messages: list[dict], config=None, exit_code: int | None = 0,
               killed: bool = False) -> str:
    """A run in the store made of these messages (as if a worker had sent them)."""
    config = config or RunConfig(name=name, device="cpu")
    config.name = name
    run = store.create_run(config)
    recorder = RunRecorder(store, run)
    for message in messages:
        recorder.handle_message(message)
    recorder.finish(exit_code, killed_by_signal=killed)
    return run.run_id


def noisy_run(store, name: str, tokens: float, seed: int) -> str:
    """A stored train run of 40 measured steps whose throughput is lognormal (5 %) around
    `tokens` tokens/s, seeded: two runs of the same `tokens` differ by noise alone."""
    rng = random.Random(seed)
    messages = [{"type": "hello", "protocol": 1, "versions": {}, "device": {}, "environment": {}},
                {"type": "started", "run": {"workload": "train", "device": "cpu", "steps": 40}}]
    values = [tokens * rng.lognormvariate(0, 0.05) for _ in range(40)]
    for step, value in enumerate(values, 1):
        messages.append({"type": "sample", "step": step, "time": step * 0.1, "phase": "measure",
                         "metrics": {"tokens_per_s": value, "step_time_s": 256 / value}})
    median = sorted(values)[20]
    messages.append({"type": "done", "status": "completed", "summary": {"figures": {
        "tokens_per_s": {"value": median, "unit": "tokens/s", "how": "median"},
        "step_time_p50_s": {"value": 256 / median, "unit": "s", "how": "median"}}}})
    return stored_run(store, name, messages)


class SetAt:
    """A front end that sends one mid-run `set` (TECHNIQUE with PARAMS) at its `step`-th poll,
    i.e. before step `step` of a train or distill run."""

    should_stop = False
    dist = None

    def __init__(self, step: int, technique: str, params: dict):
        self.step, self.calls = step, 0
        self.command = {"type": "set", "technique": technique, "params": params}

    def poll(self) -> list:
        self.calls += 1
        return [dict(self.command)] if self.calls == self.step else []


class NullControl:
    """What a workload asks between steps, for in-process runs: no commands, never stop."""

    should_stop = False
    dist = None

    def poll(self) -> list:
        return []


class ListChannel:
    """The worker's write side, kept in a list; every message still goes through the protocol's
    encoder and its receiving side's check, as on the wire."""

    alive = True

    def __init__(self):
        self.messages: list[dict] = []

    def send(self, message: dict) -> None:
        self.messages.append(protocol.decode(protocol.encode(message, "worker"), "worker"))


def cli_in_process(argv: list[str], capsys) -> tuple[int, str]:
    """`effiscope ARGV` in this process: (exit code, stderr); argparse's refusals are exit 2 too."""
    from profiler import cli

    try:
        code = cli.main(argv)
    except SystemExit as exc:  # the parser refused an argument
        code = exc.code
    return code, capsys.readouterr().err


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on now (for a rendezvous)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def synth_run(store: RunStore, name: str = "synthetic", steps: int = 30, *, device: str = "cpu",
              tokens_per_s: float = 1000.0, val_gap_growth: float = 0.0, end: str = "done",
              toggle_at: int | None = None, profile: bool = False, stall_at: int | None = None,
              precision: str | None = None, extra_summary: dict | None = None) -> str:
    """A run written line by line as a worker would send it; returns its id.

    end: "done" (completed), "failed" (error then done failed), "killed" (no done, signal).
    """
    config = run_config(steps)
    config.name = name
    run = store.create_run(config)
    rec = RunRecorder(store, run)
    techniques = [{"name": "optimizer", "label": "Optimizer", "params": {"algorithm": "adamw"},
                   "report": "AdamW (foreach), 2 fp32 states per parameter, 6.6 MiB"}]
    if precision:
        techniques.append({"name": "precision", "label": "Mixed precision",
                           "params": {"dtype": precision}, "report": f"autocast {precision}"})
    gpus = [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_total_bytes": 80 * 2**30,
             "driver": "550.54"}] if device.startswith("cuda") else []
    lines = [
        {"type": "hello", "protocol": 1,
         "versions": {"effiscope": "0.1.0", "python": "3.11.7", "torch": "2.13.0", "cuda": None},
         "device": {"cuda": bool(gpus), "name": "Test CPU", "bf16": True, "torch_threads": 2},
         "environment": {"hostname": "testhost", "os": "Linux", "cpu": "Test CPU",
                         "cpu_cores_logical": 4, "cpu_cores_physical": 2,
                         "memory_total_bytes": 16 * 2**30, "gpus": gpus,
                         "gpu_note": "" if gpus else "no NVIDIA driver"}},
        {"type": "started", "run": {
            "workload": "train", "device": device,
            "model": {"preset": "gpt-nano", "parameters": 858880}, "data": "synthetic text",
            "batch_size": 8, "seq_len": 64, "micro_batches": 1, "tokens_per_step": 512,
            "warmup_steps": 2, "steps": steps, "techniques": techniques,
            "capabilities": {"device": device, "cuda": bool(gpus), "bf16": True, "fused": ["adamw"],
                             "packages": []},
            "theory": {"flops_per_token": 5.35e6}, "setup_time_s": 0.3}},
        {"type": "sample", "step": 0, "time": 0.0, "phase": "eval", "metrics": {"loss_val": 5.5}},
    ]
    step_times, train_losses, val_losses = [], [], [(0, 5.5)]
    for step in range(1, steps + 1):
        if step == 3:
            lines.append({"type": "event", "kind": "phase", "step": 3, "message": "warmup over"})
        if toggle_at == step:
            lines.append({"type": "event", "kind": "toggle", "step": step, "technique": "precision",
                          "params": {"dtype": "bf16"}, "message": "autocast now bf16"})
        step_time = 512 / tokens_per_s * (1 + 0.01 * (step % 3)) * (10 if step == stall_at else 1)
        loss = 5.0 * math.exp(-step / 20) + 1.0
        metrics = {"loss_train": loss, "lr": 1e-3, "grad_norm": None, "step_time_s": step_time,
                   "tokens_per_s": 512 / step_time, "rss_bytes": 300 * 2**20 + step * 2**16,
                   "cpu_percent": 90.0,
                   "gpu_memory_used_bytes": (2 * 2**30 if gpus else None) if step != 7 else None,
                   "gpu_process_memory_bytes": 2**30 if gpus else None,
                   "torch_allocated_bytes": 2**29 if gpus else None}
        if step % 10 == 0:
            metrics["loss_val"] = loss + 0.1 + val_gap_growth * step / 10
            val_losses.append((step, metrics["loss_val"]))
        phase = "warmup" if step <= 2 else "measure"
        if step > 2:
            step_times.append(step_time)
        train_losses.append(loss)
        lines.append({"type": "sample", "step": step, "time": step * step_time, "phase": phase,
                      "metrics": metrics})
        if profile and step == 5:
            lines.append({"type": "profile", "step": 5, "operators": [
                {"name": "aten::mm", "calls": 48, "self_cpu_s": 0.012, "total_cpu_s": 0.02},
                {"name": "aten::<lambda>&co", "calls": 2, "self_cpu_s": 0.001, "total_cpu_s": 0.004},
                {"name": "aten::softmax", "calls": 8, "self_cpu_s": 0.004, "total_cpu_s": 0.005}]})
        if step == 4:
            lines.append({"type": "event", "kind": "warning", "step": 4,
                          "message": "loss spiked at step 4 <b>check</b>"})
    if end == "failed":
        lines.append({"type": "error", "kind": "oom", "message": "CUDA out of memory at step 30",
                      "hint": "lower train.batch_size or enable activation checkpointing"})
    total = sum(step_times)
    summary = {
        "workload": "train", "stopped_early": False, "stop_reason": "step limit reached",
        "steps_completed": steps, "measured_steps": len(step_times), "device": device,
        "parameters": 858880, "techniques": techniques,
        "active_techniques": {t["name"]: t["params"] for t in techniques}, "mid_run_changes": 0,
        "figures": {} if not step_times else {
            "tokens_per_s": figure(512 * len(step_times) / total, "tokens/s", "measured steps"),
            "step_time_p50_s": figure(percentile(step_times, 50), "s", "median"),
            "step_time_p99_s": figure(percentile(step_times, 99), "s", "p99"),
            "loss_train_final": figure(sum(train_losses[-10:]) / 10, "nats/token", "last 10"),
            "loss_val_final": figure(val_losses[-1][1], "nats/token", "last eval"),
            "peak_rss_bytes": figure(300 * 2**20 + steps * 2**16, "bytes", "sampler"),
            "peak_torch_allocated_bytes": figure(2**29 if gpus else None, "bytes", "torch"),
            "optimizer_state_bytes": figure(2 * 858880 * 4, "bytes", "state tensors"),
            "flops_per_token": figure(5.35e6, "FLOP", "6N + 12LHQT"),
        }}
    summary.update(extra_summary or {})
    if end in ("done", "failed"):
        lines.append({"type": "done", "status": "completed" if end == "done" else "failed",
                      "summary": summary})
    for line in lines:
        assert rec.handle_line(json.dumps(line)) is not None, line
    rec.finish(-9 if end == "killed" else (1 if end == "failed" else 0),
               killed_by_signal=end == "killed")
    return run.run_id


# A contended run's summary keys: another process used 1.4 of 2 cores.
CONTENDED = {"contention_other_cpu_cores_mean": 1.42, "contention_other_cpu_cores_p90": 1.9,
             "contention_machine_cpu_percent": 97.5, "contention_cores": 2,
             "contention_samples": 12, "contention_gpu_other_processes": None,
             "contention_gpu_other_memory_bytes": None, "contended": True,
             "contention_sentence": "other processes used 1.4 of 2 cores during this run: its "
                                    "speed figures are unreliable"}


def run_train(techniques: dict | None = None, steps: int = 4) -> tuple[dict, list[dict]]:
    """A train run of gpt-nano in this process, 2 x 32 tokens a step: (summary, messages)."""
    from profiler.engine.workloads import train

    config = run_config(steps, eval_interval=0, batch_size=2, seq_len=32, warmup_steps=1,
                        max_train_bytes=40_000, techniques=techniques, validated=True)
    messages: list[dict] = []
    return train.run(config, messages.append, NullControl()), messages


def lying_checkpoint(path: Path, **lies) -> Path:
    """gpt-nano saved by EffiScope, its metadata's shape then edited by `lies`."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from profiler.engine.weights import save_model
    from profiler.models.gpt import GPT
    from profiler.models.presets import GPT_PRESETS

    save_model(GPT(GPT_PRESETS["gpt-nano"]), path, "gpt-nano")
    with safe_open(str(path), "pt") as fh:
        tensors = {name: fh.get_tensor(name) for name in fh.keys()}
        metadata = dict(fh.metadata())
    metadata["shape"] = json.dumps({**json.loads(metadata["shape"]), **lies})
    save_file(tensors, str(path), metadata=metadata)
    return path
