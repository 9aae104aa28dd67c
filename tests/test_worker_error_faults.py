"""Worker exceptions: an error message with the exception and a hint, the traceback in the run's
log; out of memory is its own kind that names the step and the memory at that moment."""

from __future__ import annotations

import queue
import sys
import types

import pytest

from profiler import errors
from profiler.engine import channel as worker_io
from profiler.engine import worker
from profiler.store import RunStore
from profiler.store.recorder import RunRecorder
from profiler.wire import protocol
from profiler.wire.client import run_to_completion
from tests.helpers import ListChannel, run_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run_in_process(config: dict) -> list[dict]:
    channel = ListChannel()
    worker.run_one(protocol.start(config), channel, worker_io.Control(queue.Queue(), channel))
    return channel.messages


def test_an_exception_becomes_an_error_with_a_hint_and_its_traceback(monkeypatch, capsys):
    def run(config, emit, control):
        raise RuntimeError("the flux capacitor is empty")

    monkeypatch.setitem(sys.modules, "profiler.engine.workloads.train",
                        types.SimpleNamespace(run=run))
    messages = _run_in_process(run_config(100_000, data="random").to_dict())
    error, done = messages
    assert error["kind"] == "crash"
    assert error["message"] == "RuntimeError: the flux capacitor is empty"
    assert "traceback is in the run's log" in error["hint"]
    assert "in run" in error["traceback"] and "flux capacitor" in error["traceback"]
    assert done == {"type": "done", "status": "failed", "summary": {}}
    # The worker's stderr is the run's worker.log: the traceback goes there too.
    assert "Traceback (most recent call last)" in capsys.readouterr().err


@pytest.mark.parametrize("exc", [
    MemoryError(),
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate "
                 "memory: you tried to allocate 4000000000 bytes. Error code 12"),
    RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
], ids=["MemoryError", "cpu-allocator", "cuda"])
def test_out_of_memory_names_the_step_and_the_memory(exc):
    oom = errors.out_of_memory(exc, "step 7")
    assert isinstance(oom, MemoryError)
    assert str(oom).startswith("out of memory at step 7 (worker RSS ")
    assert errors.classify(oom)[0] == "oom"
    assert "batch_size" in errors.classify(oom)[1]


def test_other_errors_are_not_taken_for_out_of_memory():
    assert errors.out_of_memory(RuntimeError("shape mismatch"), "step 1") is None
    assert errors.out_of_memory(ValueError("nan"), "step 1") is None


# The worker under an address-space limit: everything it needs is imported first, then the limit
# leaves it `headroom` bytes more than it already maps. A batch far larger than that fails inside
# the step (the test's own memory stays small: the allocation is refused, never made).
LIMITED_WORKER = """
import resource, sys
import profiler.engine.worker, profiler.engine.workloads.train, torch
with open("/proc/self/status") as fh:
    mapped = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
limit = mapped + int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
profiler.engine.worker.main()
"""


@pytest.mark.slow
def test_out_of_memory_under_a_memory_limit_is_its_own_error_kind(effiscope_home, monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")  # each thread's malloc arena maps 64 MB
    config = run_config(steps=5, batch_size=512, seq_len=256, data="random")  # several GB of activations
    store = RunStore()
    run = store.create_run(config)
    recorder = RunRecorder(store, run)
    command = [sys.executable, "-c", LIMITED_WORKER, str(768 * 2**20)]
    status = run_to_completion(config.to_dict(), recorder, command=command)
    assert status == "failed"
    assert "started" in [m["type"] for m in run.messages()]  # setup fitted; the step did not
    error = recorder.errors[-1]
    assert error["kind"] == "oom", error
    assert error["message"].startswith("out of memory at step 1 (worker RSS "), error
    assert "MiB" in error["message"] and "allocate" in error["message"]
    assert "batch_size" in error["hint"]
    log = run.log_path.read_text(encoding="utf-8", errors="replace")
    assert "Traceback (most recent call last)" in log and "StepOutOfMemory" in log
    summary = run.summary()
    assert summary["status"] == "failed" and summary["error"]["kind"] == "oom"
