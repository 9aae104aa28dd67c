"""The CUDA memory snapshot as a profile option (issue 39): recorded over the profiled steps with
torch.cuda.memory._record_memory_history, saved with _dump_snapshot in the run folder for
pytorch.org/memory_viz, said as n/a on a CPU. torch.cuda is faked here (no GPU on CI); the last test
runs torch's real recording on a GPU (marked gpu: scripts/gpu_selfcheck.sh runs it)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from profiler.measure import memory_snapshot
from profiler.measure.capture import ProfileCapture
from profiler.measure.memory_snapshot import MemorySnapshot
from profiler.wire import protocol
from profiler.wire.protocol import ProtocolError


class FakeCudaMemory:
    """torch.cuda's memory history, as a GPU build with a device answers it."""

    def __init__(self):
        self.calls: list[dict] = []
        self.dumped: list[str] = []

    def record(self, enabled="all", **kwargs) -> None:
        self.calls.append({"enabled": enabled, **kwargs})

    def dump(self, filename: str = "dump_snapshot.pickle", **_kwargs) -> None:
        self.dumped.append(filename)
        with open(filename, "wb") as fh:
            fh.write(b"snapshot of the allocator")


@pytest.fixture
def fake_cuda(monkeypatch) -> FakeCudaMemory:
    fake = FakeCudaMemory()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda.memory, "_record_memory_history", fake.record)
    monkeypatch.setattr(torch.cuda.memory, "_dump_snapshot", fake.dump)
    return fake


def test_on_a_cpu_the_snapshot_is_na_and_nothing_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda.memory, "_record_memory_history",
                        lambda *a, **k: pytest.fail("recorded on a CPU"))
    snapshot = MemorySnapshot(torch.device("cpu"))
    why = snapshot.start()
    assert why is not None and "n/a on CPU" in why and "run on a GPU" in why
    assert snapshot.save(tmp_path, "step3") == (None, "")
    assert list(tmp_path.iterdir()) == []


def test_a_cuda_device_without_cuda_is_na(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "CUDA is not available" in MemorySnapshot(torch.device("cuda")).start()


def test_on_cuda_the_history_is_recorded_bounded_then_dumped_and_switched_off(fake_cuda,
                                                                               tmp_path):
    device = torch.device("cuda", 0)
    snapshot = MemorySnapshot(device)
    assert snapshot.start() is None and snapshot.recording
    assert fake_cuda.calls == [{"enabled": "all", "max_entries": memory_snapshot.MAX_ENTRIES,
                                "device": device}]
    path, note = snapshot.save(tmp_path / "traces", "step7-120000")
    assert note == "" and path == str(tmp_path / "traces" / "step7-120000.memory_snapshot.pickle")
    assert fake_cuda.dumped == [path]
    assert fake_cuda.calls[-1] == {"enabled": None, "device": device}  # recording stopped
    assert not snapshot.recording
    assert snapshot.save(tmp_path, "again") == (None, "")  # one recording, one file


def test_a_snapshot_that_cannot_be_written_is_said_and_recording_still_stops(fake_cuda,
                                                                             tmp_path):
    import os

    snapshot = MemorySnapshot(torch.device("cuda"))
    snapshot.start()
    os.mkfifo(tmp_path / "s.memory_snapshot.pickle")  # something else by that name
    path, note = snapshot.save(tmp_path, "s")
    assert path is None and "could not be written" in note and "not a regular file" in note
    assert fake_cuda.dumped == []
    assert fake_cuda.calls[-1]["enabled"] is None


def _captured(capture: ProfileCapture, memory: bool) -> dict:
    """Two profiled steps of a tiny model; the profile message the capture sends."""
    model = capture.model
    assert capture.request(2, step=5, memory=memory) is None
    for _ in range(2):
        model(torch.ones(2, 4)).sum().backward()
        capture.step_done(0.01)
    (message,) = capture.emit.sent
    return protocol.decode(protocol.encode(message))  # what the front end accepts


class Sent(list):
    def __call__(self, message: dict) -> None:
        self.append(message)

    @property
    def sent(self) -> list:
        return self


def _capture(tmp_path) -> ProfileCapture:
    return ProfileCapture(str(tmp_path / "run"), torch.nn.Linear(4, 4), torch.device("cpu"),
                          Sent())


def test_a_cpu_profile_asked_for_a_snapshot_says_na(tmp_path):
    capture = _capture(tmp_path)
    message = _captured(capture, memory=True)
    assert "n/a on CPU" in message["memory_snapshot_note"]
    assert "memory_snapshot_path" not in message
    assert message["trace_path"].endswith(".pt.trace.json.gz")
    assert not list((tmp_path / "run" / "traces").glob("*.pickle"))


def test_a_profile_without_the_option_has_no_snapshot_fields(tmp_path):
    message = _captured(_capture(tmp_path), memory=False)
    assert "memory_snapshot_note" not in message and "memory_snapshot_path" not in message


def test_the_snapshot_is_saved_in_the_run_folder_beside_the_trace(fake_cuda, tmp_path):
    capture = _capture(tmp_path)
    capture.memory = MemorySnapshot(torch.device("cuda"))  # the allocator's side on a GPU
    message = _captured(capture, memory=True)
    path = message["memory_snapshot_path"]
    assert path == fake_cuda.dumped[0]
    assert path.startswith(str(tmp_path / "run" / "traces"))
    assert Path(path).name.startswith("step5-") and path.endswith(".memory_snapshot.pickle")
    assert message["trace_path"] == path.replace(".memory_snapshot.pickle", ".pt.trace.json.gz")
    assert [c["enabled"] for c in fake_cuda.calls] == ["all", None]


def test_the_profile_command_carries_the_option_and_the_worker_says_na(tmp_path):
    from profiler.engine.workloads.loop import handle_command

    command = protocol.decode(json.dumps(protocol.profile_request(3, memory=True)), "front")
    assert command == {"type": "profile", "steps": 3, "memory": True}
    assert protocol.profile_request(3) == {"type": "profile", "steps": 3}
    with pytest.raises(ProtocolError):
        protocol.decode('{"type": "profile", "steps": 3, "memory": "yes"}', "front")
    sent = Sent()
    capture = _capture(tmp_path)
    assert handle_command(command, None, 4, sent, capture) == 0
    (info,) = sent
    assert info["kind"] == "info" and info["step"] == 4
    assert "profiling steps 4..6" in info["message"] and "n/a on CPU" in info["message"]
    capture.finish()


def test_the_cli_line_of_a_profile_says_the_snapshot_or_why_not():
    from profiler.cli.progress import Progress

    stream = io.StringIO()
    progress = Progress(10, stream)
    base = {"type": "profile", "step": 3, "steps": 2, "operators": [], "trace_path": "t.gz"}
    progress.update({**base, "memory_snapshot_path": "/runs/x/traces/s.memory_snapshot.pickle"})
    progress.update({**base, "memory_snapshot_note": "memory snapshot: n/a on CPU: why"})
    lines = stream.getvalue().splitlines()
    assert "CUDA memory snapshot /runs/x/traces/s.memory_snapshot.pickle" in lines[0]
    assert "pytorch.org/memory_viz" in lines[0]
    assert lines[1].endswith("memory snapshot: n/a on CPU: why")


def test_memory_snapshot_without_profile_is_refused_before_a_run(capsys):
    from profiler.cli import main
    from profiler.store import RunStore

    assert main(["run", "nano", "--steps", "3", "--warmup", "1", "--memory-snapshot"]) == 2
    assert "give --profile STEPS with it" in capsys.readouterr().err
    assert RunStore().list_runs() == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_real_cuda_capture_saves_a_snapshot_for_memory_viz(tmp_path):
    """On a GPU: torch's own recording and dump, the file in the run folder (never read back:
    it is a pickle for pytorch.org/memory_viz; its size and pickle header are checked)."""
    device = torch.device("cuda")
    capture = ProfileCapture(str(tmp_path / "run"), torch.nn.Linear(64, 64).to(device), device,
                             Sent())
    assert capture.request(2, step=1, memory=True) is None and capture.memory_note == ""
    for _ in range(2):
        capture.model(torch.ones(8, 64, device=device)).sum().backward()
        torch.cuda.synchronize()
        capture.step_done(0.01)
    (message,) = capture.emit
    path = Path(message["memory_snapshot_path"])
    assert path.parent == tmp_path / "run" / "traces" and path.stat().st_size > 1000
    assert path.read_bytes()[:1] == b"\x80"  # a pickle's protocol opcode: a torch dump
    assert not capture.memory.recording


def test_the_html_report_says_where_the_snapshot_is_or_why_there_is_none(tmp_path):
    from profiler.report import export
    from profiler.store import RunStore
    from tests.helpers import stored_run

    op = [{"name": "aten::mm", "calls": 3, "self_cpu_s": 0.01}]
    messages = [{"type": "sample", "step": 1, "time": 0.1, "metrics": {"loss_train": 1.0}},
                {"type": "profile", "step": 2, "steps": 1, "operators": op,
                 "memory_snapshot_path": "/runs/r/traces/step2-1.memory_snapshot.pickle"},
                {"type": "profile", "step": 3, "steps": 1, "operators": op,
                 "memory_snapshot_note": "memory snapshot: n/a on CPU: <why>"},
                {"type": "profile", "step": 4, "steps": 1, "operators": op}]
    store = RunStore()
    run_id = stored_run(store, "snap", messages)
    page = export([run_id], "html", tmp_path / "r.html", store=store).read_text("utf-8")
    assert ("CUDA memory snapshot of these steps: <code>/runs/r/traces/step2-1.memory_snapshot"
            ".pickle</code>") in page
    assert "memory snapshot: n/a on CPU: &lt;why&gt;" in page  # escaped
    # one line for each capture that asked for a snapshot; none for the one that did not
    assert page.count("memory_viz") == 1 and page.count("memory snapshot") == 2
