"""The worker's on-demand torch.profiler capture: a `profile` command mid-run gives a `profile`
message with an operator table, a step-time breakdown and a gzipped Chrome trace."""

from __future__ import annotations

import gzip
import json

import pytest

from profiler.wire import protocol
from profiler.wire.client import WorkerProcess
from tests.helpers import collect, run_config


@pytest.mark.slow
def test_profile_command_captures_steps_and_writes_a_trace(tmp_path):
    config = run_config(steps=400, batch_size=4, seq_len=32, eval_interval=0)
    config.output_dir = str(tmp_path / "run")
    worker = WorkerProcess(log_path=tmp_path / "worker.log")
    try:
        worker.send(protocol.start(config.to_dict()))
        collect(worker, until="sample")
        worker.send(protocol.profile_request(3))
        before = collect(worker, until="profile", timeout=120)
        worker.send(protocol.stop())
        rest = collect(worker, until="done", timeout=60)
    finally:
        worker.shutdown()
    profile = before[-1]
    assert profile["type"] == "profile" and profile["steps"] == 3
    notice = [m for m in before if m["type"] == "event" and "profiling steps" in m["message"]]
    assert notice and notice[0]["step"] == profile["step"]
    assert len(profile["step_time_s"]) == 3 and all(t > 0 for t in profile["step_time_s"])
    operators = profile["operators"]
    assert operators, "the operator table is empty"
    names = {op["name"] for op in operators}
    assert any(name.startswith("aten::") for name in names)
    assert not any(name.startswith("ProfilerStep#") for name in names)
    for op in operators:
        assert op["calls"] >= 1 and op["total_cpu_s"] >= op["self_cpu_s"] >= 0
        assert op["self_cuda_s"] is None  # CPU run: no CUDA column
    selfs = [op["self_cpu_s"] for op in operators]
    assert selfs == sorted(selfs, reverse=True)
    parts = profile["breakdown"]
    assert parts["forward_s"] > 0 and parts["backward_s"] > 0 and parts["optimizer_s"] > 0
    mean_step = sum(profile["step_time_s"]) / 3
    assert sum(parts.values()) <= mean_step * 1.05
    trace = profile["trace_path"]
    assert trace.startswith(config.output_dir) and trace.endswith(".json.gz")
    with gzip.open(trace, "rt", encoding="utf-8") as fh:
        data = json.load(fh)
    assert data["traceEvents"]
    assert rest[-1]["type"] == "done" and rest[-1]["status"] in ("stopped", "completed")
