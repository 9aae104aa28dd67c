"""Protocol v1: every message type round-trips; bad lines are rejected with a reason, never a crash."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from profiler.wire import protocol
from profiler.wire.protocol import ProtocolError

WORKER_EXAMPLES = [
    {"type": "hello", "protocol": 1, "versions": {"torch": "2.13"}, "device": {"cuda": False},
     "environment": {"cpu": "x"}},
    {"type": "started", "run": {"device": "cpu", "steps": 10}},
    {"type": "sample", "step": 3, "time": 0.5, "metrics": {"loss_train": 2.5, "gpu_power_w": None}},
    {"type": "event", "kind": "toggle", "message": "precision bf16", "step": 4},
    {"type": "profile", "step": 7, "operators": [{"name": "aten::mm", "calls": 3}]},
    {"type": "error", "kind": "oom", "message": "out of memory", "hint": "lower the batch"},
    {"type": "done", "status": "completed", "summary": {"figures": {}}},
    {"type": "heartbeat", "time": 1700000000.5},
]
FRONT_EXAMPLES = [
    protocol.start({"model": {"preset": "gpt-nano"}}),
    protocol.set_technique("precision", {"dtype": "bf16"}),
    protocol.profile_request(5),
    protocol.stop(),
]


def test_every_message_type_is_covered():
    assert {m["type"] for m in WORKER_EXAMPLES} == set(protocol.WORKER_MESSAGES)
    assert {m["type"] for m in FRONT_EXAMPLES} == set(protocol.FRONT_MESSAGES)


@pytest.mark.parametrize("message", WORKER_EXAMPLES, ids=lambda m: m["type"])
def test_worker_messages_round_trip(message):
    line = protocol.encode(message, "worker")
    assert line.endswith("\n") and line.count("\n") == 1
    assert protocol.decode(line, "worker") == message
    assert protocol.decode(line.encode(), "worker") == message


@pytest.mark.parametrize("message", FRONT_EXAMPLES, ids=lambda m: m["type"])
def test_front_messages_round_trip(message):
    assert protocol.decode(protocol.encode(message, "front"), "front") == message


def test_non_finite_numbers_travel_as_null():
    line = protocol.encode({"type": "sample", "step": 1, "time": 0.0,
                            "metrics": {"loss_train": float("nan"), "x": float("inf")}})
    assert protocol.decode(line)["metrics"] == {"loss_train": None, "x": None}


@pytest.mark.parametrize("line, reason", [
    ("", "empty"),
    ("not json at all", "not JSON"),
    ('{"type": "sample", "step": 1, "time": 0.0, "metr', "not JSON"),  # truncated
    ("[1, 2, 3]", "JSON object"),
    ('{"step": 1}', "'type'"),
    ('{"type": "launch_missiles"}', "unknown"),
    ('{"type": "sample", "step": "1", "time": 0, "metrics": {}}', "step"),
    ('{"type": "sample", "step": true, "time": 0, "metrics": {}}', "true or false"),
    ('{"type": "sample", "step": 1, "time": 0, "metrics": {"a": "b"}}', "number or null"),
    ('{"type": "sample", "step": 1, "time": NaN, "metrics": {}}', "NaN"),
    ('{"type": "hello", "protocol": 2, "versions": {}, "device": {}, "environment": {}}', "protocol 2"),
    ('{"type": "error", "kind": "meltdown", "message": "m", "hint": "h"}', "'error'.kind"),
    ('{"type": "done", "status": "exploded", "summary": {}}', "'done'.status"),
    ("[" * 100000 + "]" * 100000, "deeply"),
])
def test_bad_lines_are_rejected_with_a_reason(line, reason):
    with pytest.raises(ProtocolError, match=reason):
        protocol.decode(line, "worker")


def test_oversize_line_is_rejected():
    big = json.dumps({"type": "event", "kind": "info", "message": "x" * protocol.MAX_LINE_BYTES})
    with pytest.raises(ProtocolError, match="limit"):
        protocol.decode(big.encode())
    with pytest.raises(ProtocolError, match="limit"):
        protocol.encode({"type": "event", "kind": "info", "message": "x" * protocol.MAX_LINE_BYTES})


def test_invalid_utf8_is_rejected():
    with pytest.raises(ProtocolError, match="UTF-8"):
        protocol.decode(b'{"type": "stop"}\xff\xfe', "front")


def test_front_commands_are_checked_in_their_direction():
    with pytest.raises(ProtocolError, match="unknown front message"):
        protocol.decode('{"type": "sample", "step": 1, "time": 0, "metrics": {}}', "front")
    with pytest.raises(ProtocolError, match="steps >= 1"):
        protocol.decode('{"type": "profile", "steps": 0}', "front")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_fuzzed_lines_never_raise_anything_but_protocol_error(line):
    for direction in ("worker", "front"):
        try:
            protocol.decode(line, direction)
        except ProtocolError:
            pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["type", "step", "time", "metrics", "kind", "message",
                                        "hint", "status", "summary", "config", "protocol"]),
                       json_values, max_size=6))
def test_fuzzed_objects_are_either_valid_or_rejected(obj):
    line = json.dumps(obj)
    for direction in ("worker", "front"):
        try:
            message = protocol.decode(line, direction)
        except ProtocolError:
            continue
        assert message["type"] in (protocol.WORKER_MESSAGES if direction == "worker"
                                   else protocol.FRONT_MESSAGES)


def test_the_protocol_refuses_to_send_what_json_cannot_hold_in_range():
    for value in (10**19, -(10**19), 10**5000):
        with pytest.raises(protocol.ProtocolError, match="out of range"):
            protocol.encode({"type": "sample", "step": value, "time": 0.0, "metrics": {}})
    line = protocol.encode({"type": "sample", "step": 10**19 - 1, "time": 0.0, "metrics": {}})
    assert json.loads(line)["step"] == 10**19 - 1
