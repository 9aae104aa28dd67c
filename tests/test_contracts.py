"""Explicit contracts (issue 36, item 3): one worker command line, technique hooks checked at
registration, typed technique parameters, one rule mechanism, a constructor per message."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _definitions(name: str) -> list[str]:
    """Modules of profiler/ and techniques/ that define a top-level function `name`."""
    found = []
    for package in ("profiler", "techniques"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            if any(isinstance(node, ast.FunctionDef) and node.name == name for node in tree.body):
                found.append(path.relative_to(ROOT).as_posix())
    return found


# --- one worker command --------------------------------------------------------------------------
def test_the_worker_command_has_one_home_that_every_launcher_uses(monkeypatch):
    """profiler.launch.worker_command is the only one; a WorkerProcess given no command starts
    what it names (before, profiler.client had a second copy that ignored launch settings)."""
    from profiler import client, launch

    assert _definitions("worker_command") == ["profiler/launch.py"]
    assert launch.worker_command() == [sys.executable, "-m", "profiler.worker"]
    monkeypatch.setattr(launch, "worker_command", lambda config=None: [
        sys.executable, "-c", "print('from the one worker command', flush=True)"])
    worker = client.WorkerProcess()
    try:
        assert worker.lines.get(timeout=30) == b"from the one worker command\n"
    finally:
        worker.shutdown(1)


# --- a constructor per message -------------------------------------------------------------------
def _every_constructed_message() -> list[tuple[str, dict]]:
    from profiler import protocol as p

    summary = {"figures": {"tokens_per_s": {"value": 1.0, "unit": "tokens/s", "how": "median"}},
               "steps_completed": 3}
    return [
        ("worker", p.hello({"effiscope": "1"}, {"cuda": False}, {"os": "linux"}, pid=7,
                           job={"world_size": 2})),
        ("worker", p.started({"workload": "train", "device": "cpu", "techniques": [],
                              "model": {"preset": "gpt-nano", "parameters": 10}})),
        ("worker", p.sample(3, 0.5, {"loss_train": 2.0, "tokens_per_s": None}, phase="measure")),
        ("worker", p.sample(0, 0.0, {"loss_val": 2.5})),
        ("worker", p.warning("disk nearly full", origin="front", received=1.0)),
        ("worker", p.info("AdamW: fused", step=0, technique="optimizer")),
        ("worker", p.phase("warmup over", step=2)),
        ("worker", p.toggle("precision off", step=4, technique="precision", params={})),
        ("worker", p.refused("no run in progress: 'set' ignored")),
        ("worker", p.event("info", "plain event")),
        ("worker", p.profile(5, [{"name": "aten::mm", "self_s": 0.1}], steps=2)),
        ("worker", p.error("oom", "out of memory at step 4", "lower train.batch_size",
                           traceback="Traceback ...")),
        ("worker", p.error("crash", "rank 1 failed", "see the log", origin="front")),
        ("worker", p.done("completed", summary)),
        ("worker", p.done("failed", {})),
        ("worker", p.heartbeat(12.5)),
        ("front", p.start({"workload": "train"})),
        ("front", p.set_technique("precision", {"enabled": False})),
        ("front", p.profile_request(3)),
        ("front", p.stop()),
    ]


def test_every_message_constructor_builds_a_message_the_protocol_accepts():
    """Each constructor's output passes protocol.validate and survives an encode/decode round
    trip; together they cover every message type of both directions and every event kind."""
    from profiler import protocol

    built = _every_constructed_message()
    for direction, message in built:
        assert protocol.validate(message, direction) is message
        line = protocol.encode(message, direction)
        assert protocol.decode(line, direction) == message
    worker_types = {m["type"] for d, m in built if d == "worker"}
    front_types = {m["type"] for d, m in built if d == "front"}
    assert worker_types == set(protocol.WORKER_MESSAGES)
    assert front_types == set(protocol.FRONT_MESSAGES)
    kinds = {m["kind"] for d, m in built if m["type"] == "event"}
    assert kinds == set(protocol.EVENT_KINDS)


def test_a_constructor_refuses_what_the_protocol_would_not_carry():
    from profiler import protocol

    with pytest.raises(ValueError, match="event kind 'shout' is not one of toggle"):
        protocol.event("shout", "loud")
    with pytest.raises(protocol.ProtocolError, match="not one of"):
        protocol.validate(protocol.error("fatal", "x", "y"), "worker")
    with pytest.raises(protocol.ProtocolError, match="not one of"):
        protocol.validate(protocol.done("finished", {}), "worker")


# Files that still build messages by hand while the one training loop is written (issue 36, item
# 1): the lead moves them onto the constructors; remove each entry when it does.
UNCONVERTED = {"profiler/workloads/train.py", "profiler/workloads/distill.py"}


def test_no_module_builds_a_protocol_message_as_a_raw_dict():
    """A dict literal whose "type" is a protocol message type is built only in protocol.py (the
    worker's internal `_eof` / `_bad_start` notes are no protocol types)."""
    from profiler import protocol

    types = set(protocol.WORKER_MESSAGES) | set(protocol.FRONT_MESSAGES)
    raw = []
    for package in ("profiler", "techniques"):
        for path in sorted((ROOT / package).rglob("*.py")):
            where = path.relative_to(ROOT).as_posix()
            if where == "profiler/protocol.py" or where in UNCONVERTED:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Dict):
                    continue
                for key, value in zip(node.keys, node.values, strict=True):
                    if (isinstance(key, ast.Constant) and key.value == "type"
                            and isinstance(value, ast.Constant) and value.value in types):
                        raw.append(f"{where}:{node.lineno}")
    assert raw == []

