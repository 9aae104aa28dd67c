"""The protocol under fuzzing against a REAL worker: garbage, huge, truncated and wrong-version
lines on its stdin are each rejected with a message, and the stream goes on (the same worker
then runs a start to the end). tests/test_protocol.py fuzzes the codec itself in-process."""

from __future__ import annotations

import json
import queue
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profiler.wire import protocol
from profiler.wire.client import EOF, WorkerProcess
from profiler.wire.protocol import ProtocolError
from tests.helpers import run_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VALID_LINES = [protocol.encode(m, "front").encode() for m in (
    protocol.start(run_config(steps=3, data="random").to_dict()), protocol.set_technique("optimizer", {}),
    protocol.profile_request(2), protocol.stop())]
# Answered at once when no run is in progress: marks the end of one batch of fuzzed lines.
SENTINEL = protocol.encode(protocol.profile_request(1), "front").encode()


def rejected(line: bytes) -> bool:
    """Whether the worker must answer this line (blank lines are skipped): with a warning, or,
    for a start it cannot take, with an error and done (issue 34: a front end waiting for that
    run is never left waiting)."""
    if not line.strip():
        return False
    try:
        command = protocol.decode(line, "front")
    except ProtocolError:
        return True
    return command.get("protocol", protocol.PROTOCOL_VERSION) != protocol.PROTOCOL_VERSION


def no_newline(data: bytes) -> bytes:
    return data.replace(b"\n", b"")


garbage = st.binary(max_size=300).map(no_newline)
text = st.text(max_size=300).map(lambda s: no_newline(s.encode("utf-8")))
truncated = st.tuples(st.sampled_from(VALID_LINES), st.floats(0, 0.98)).map(
    lambda pair: pair[0][: int((len(pair[0]) - 1) * pair[1])])
wrong_version = st.tuples(st.sampled_from(["start", "stop", "set", "profile"]),
                          st.integers().filter(lambda v: v != protocol.PROTOCOL_VERSION)).map(
    lambda pair: json.dumps({"type": pair[0], "protocol": pair[1], "config": {}, "steps": 1,
                             "technique": "optimizer", "params": {}}).encode())
json_objects = st.dictionaries(
    st.sampled_from(["type", "config", "technique", "params", "steps", "protocol"]),
    st.one_of(st.none(), st.integers(), st.text(max_size=8), st.sampled_from(
        ["start", "set", "profile", "stop", "hello", "sample"]), st.lists(st.integers(), max_size=3)),
    max_size=4).map(lambda d: json.dumps(d).encode())
fuzzed_line = st.one_of(garbage, text, truncated, wrong_version, json_objects)


@pytest.fixture(scope="module")
def live_worker(tmp_path_factory):
    worker = WorkerProcess(log_path=tmp_path_factory.mktemp("fuzz") / "worker.log")
    try:
        first = _next_message(worker, 120)
        assert first["type"] == "hello"
        yield worker
    finally:
        worker.shutdown()


def _next_message(worker: WorkerProcess, timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            item = worker.lines.get(timeout=0.2)
        except queue.Empty:
            continue
        assert item is not EOF, "the worker exited"
        return protocol.decode(item, "worker")
    raise AssertionError(f"no message from the worker within {timeout_s} s")


def _send_and_collect(worker: WorkerProcess, lines: list[bytes]) -> list[dict]:
    """Write the lines, then the sentinel; every message up to the sentinel's answer."""
    worker.proc.stdin.write(b"".join(line + b"\n" for line in lines) + SENTINEL)
    worker.proc.stdin.flush()
    replies = []
    while True:
        message = _next_message(worker)
        if message["type"] == "event" and message["kind"] == "refused" and "'profile'" in message["message"]:
            return replies
        replies.append(message)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(fuzzed_line, min_size=1, max_size=6))
def test_fuzzed_lines_are_each_rejected_with_a_message(live_worker, lines):
    from profiler.engine.channel import _command_type

    lines = [line for line in lines if rejected(line) or not line.strip()]  # no real commands
    replies = _send_and_collect(live_worker, lines)
    starts = sum(rejected(line) and _command_type(line) == "start" for line in lines)
    warnings = [m for m in replies if m["type"] == "event"]
    assert all(m["kind"] == "warning" and m["message"].startswith("ignored a bad command: ")
               for m in warnings), replies
    errors = [m for m in replies if m["type"] == "error"]
    assert len(errors) == starts and all(
        m["message"].startswith("the start command was refused: ") for m in errors), replies
    assert [m["status"] for m in replies if m["type"] == "done"] == ["failed"] * starts
    assert len(warnings) + 2 * starts == len(replies) == sum(
        (2 if _command_type(line) == "start" else 1) for line in lines if rejected(line))


def test_huge_and_wrong_version_lines_are_rejected_and_a_run_still_starts(live_worker):
    worker = live_worker
    huge = b"x" * (protocol.MAX_LINE_BYTES + 100)
    deep = b"[" * 50_000 + b"]" * 50_000
    wrong = json.dumps({**protocol.start(run_config(steps=3, data="random").to_dict()), "protocol": 2}).encode()
    replies = _send_and_collect(worker, [huge, deep, wrong])
    assert [m.get("kind") for m in replies] == ["warning", "warning", "config", None]
    assert f"over {protocol.MAX_LINE_BYTES} bytes" in replies[0]["message"]
    assert "nested too deeply" in replies[1]["message"]
    # A start of another version is answered with its reason and the end of that run.
    assert "protocol 2, this worker speaks 1" in replies[2]["message"]
    assert replies[3] == {"type": "done", "status": "failed", "summary": {}}
    # The stream goes on: the same worker runs a real start to the end.
    worker.send(protocol.start(run_config(steps=3, data="random").to_dict()))
    messages = [_next_message(worker, 120)]
    while messages[-1]["type"] != "done":
        messages.append(_next_message(worker, 120))
    assert messages[-1]["status"] == "completed", messages[-2:]
    assert [m["step"] for m in messages if m["type"] == "sample"] == [1, 2, 3]
