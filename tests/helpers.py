"""Helpers for tests that talk to a real worker process."""

from __future__ import annotations

import random

from profiler.config import RunConfig
from profiler.wire.client import WorkerProcess, read_messages


def nano_config(steps: int = 20, **train) -> RunConfig:
    config = RunConfig(name="test")
    config.model.preset = "gpt-nano"
    config.device = "cpu"
    config.limits.steps = steps
    config.limits.warmup_steps = min(2, steps - 1)
    config.train.batch_size = train.pop("batch_size", 8)
    config.train.seq_len = train.pop("seq_len", 64)
    config.train.eval_interval = train.pop("eval_interval", 10)
    config.train.eval_batches = 2
    config.data.max_train_bytes = 400_000
    for key, value in train.items():
        setattr(config.train, key, value)
    return config


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

