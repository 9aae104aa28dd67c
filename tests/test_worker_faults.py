"""The worker under hostile commands: a start it cannot read is answered with an error and done,
the reader's internal commands cannot be sent on the wire, a bad start during a run is a warning,
and a SIGTERM ends a worker still building its model. Never a hang."""

from __future__ import annotations

import queue
import signal

import pytest

from profiler.engine import channel as worker_io
from profiler.wire import protocol
from profiler.wire.client import WorkerProcess
from tests.faults import worker_in_an_endless_build

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _until(worker_process: WorkerProcess, kind: str, timeout: float = 60) -> list[dict]:
    messages: list[dict] = []
    while not messages or messages[-1]["type"] != kind:
        messages.append(protocol.decode(worker_process.lines.get(timeout=timeout)))
    return messages


@pytest.mark.parametrize("line", [
    b'{"type":"start","config":[1,2,3]}\n',
    b'{"type":"start","config":{"limits":{"steps":' + b"7" * 5000 + b"}}}\n",
    b'{"type":"start"}\n',
], ids=["config-a-list", "5000-digit-integer", "no-config"])
def test_a_start_the_worker_cannot_read_is_answered_with_done(line, tmp_path):
    worker_process = WorkerProcess(log_path=tmp_path / "worker.log")
    try:
        worker_process.send(line)
        messages = _until(worker_process, "done")  # hang guard: it used to wait forever
        assert messages[-1]["status"] == "failed"
        error = next(m for m in messages if m["type"] == "error")
        assert error["kind"] == "config" and error["message"].startswith(
            "the start command was refused")
        assert "started" not in [m["type"] for m in messages]
    finally:
        worker_process.shutdown()


def test_internal_commands_cannot_be_sent_on_the_wire(tmp_path):
    """`_eof` and `_bad_start` are the reader's own; sent by a front end they are refused as
    unknown, and the worker keeps reading (a profile request is still answered)."""
    worker_process = WorkerProcess(log_path=tmp_path / "worker.log")
    try:
        worker_process.send(b'{"type":"_eof"}\n')
        worker_process.send(b'{"type":"_bad_start","reason":"spoofed"}\n')
        worker_process.send(protocol.profile_request(1))
        messages = _until(worker_process, "event")
        while messages[-1].get("kind") != "refused":
            messages += _until(worker_process, "event")
        warnings = [m["message"] for m in messages if m.get("kind") == "warning"]
        assert len(warnings) == 2 and all("unknown front message type" in w for w in warnings)
        assert "done" not in [m["type"] for m in messages] and not worker_process.exited()
    finally:
        worker_process.shutdown()


def test_a_bad_start_during_a_run_is_a_warning_and_the_run_goes_on():
    sent: list[dict] = []
    channel = type("Channel", (), {"alive": True, "send": lambda self, m: sent.append(m)})()
    commands: queue.Queue = queue.Queue()
    control = worker_io.Control(commands, channel)
    commands.put({"type": "_bad_start", "reason": "an integer of 20 digits is out of range"})
    commands.put({"type": "profile", "steps": 2})
    assert control.poll() == [{"type": "profile", "steps": 2}]
    assert not control.should_stop
    assert sent == [{"type": "event", "kind": "warning",
                     "message": "ignored a bad command: an integer of 20 digits is out of range"}]


def test_sigterm_ends_a_worker_busy_building_a_model(tmp_path):
    """A SIGTERM asks for the end of the run at the next step; a worker in a model build that
    never reaches one still exits within its grace (it used to build on)."""
    log = tmp_path / "worker.log"
    worker_process = worker_in_an_endless_build(log)
    try:
        worker_process.proc.send_signal(signal.SIGTERM)  # stdin stays open
        code = worker_process.wait(worker_io.STDIN_GRACE_S + 30)  # hang guard
    finally:
        worker_process.shutdown(0)
    assert code is not None and code != 0
    assert "still busy" in log.read_text(errors="replace")
