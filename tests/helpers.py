"""Helpers for tests that talk to a real worker process."""

from __future__ import annotations

import queue
import time

from profiler import protocol
from profiler.client import EOF, WorkerProcess
from profiler.config import RunConfig


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
    messages: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            item = worker.lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if item is EOF:
            return messages
        message = protocol.decode(item, "worker")
        messages.append(message)
        if message["type"] == until:
            return messages
    raise AssertionError(f"no {until!r} message within {timeout} s; got {[m['type'] for m in messages]}")
