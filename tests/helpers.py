"""Helpers shared by the tests: the one run-config factory, a worker's messages collected, runs
put into the store, and the stand-ins for a workload's control and a worker's channel."""

from __future__ import annotations

import random

from profiler.config import RunConfig, validate
from profiler.models.presets import GPTShape
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
    from profiler.config import RunConfig
    from profiler.store.recorder import RunRecorder

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
