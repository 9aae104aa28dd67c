"""Hostile lines on the wire, both ways: one schema (profiler/wire/protocol.py) checks every field of
every message on the sending and on the receiving side, reads are bounded, and no line a peer
sends can crash a front end, hang a worker or leave a run "running".

Most cases run in-process against the codec and the recorder; the front end's own loop runs
against a hostile worker (tests/faults.py, no torch: it starts in a fraction of a second); one
real worker takes the hostile commands.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys

import psutil
import pytest

from profiler import cli
from profiler.store import RunStore
from profiler.store.recorder import RunRecorder
from profiler.wire import client, protocol
from profiler.wire.client import (
    EOF,
    StartRefused,
    WorkerProcess,
    run_to_completion,
    start_line,
    worker_env,
)
from profiler.wire.protocol import ProtocolError
from tests.faults import (
    assert_sentence,
    run_hostile,
    wait_for,
    write_config,
)
from tests.helpers import run_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NINES = "9" * 5000
HELLO = '{"type":"hello","protocol":1,"versions":{},"device":{},"environment":{}}'
DONE = '{"type":"done","status":"completed","summary":{}}'

# (case id, direction, line, what the refusal must name). Each is refused with ProtocolError
# on receipt; the worker-direction ones also by the sending side (see the next test).
HOSTILE = [
    # Integer literals Python will not convert (more than 4,300 digits).
    ("huge-int-command", "front", '{"type":"profile","steps":' + NINES + '}', "5,000 digits"),
    ("huge-int-sample", "worker", '{"type":"sample","step":' + NINES + ',"time":0,"metrics":{}}',
     "5,000 digits"),
    ("huge-negative-int", "worker", '{"type":"sample","step":-' + NINES + ',"time":0,"metrics":{}}',
     "digits"),
    ("huge-int-in-config", "front", '{"type":"start","config":{"seed":' + NINES + '}}', "digits"),
    ("int-beyond-int64", "worker", '{"type":"sample","step":123456789012345678901,"time":0,'
     '"metrics":{}}', "21 digits"),
    ("float-overflow", "worker", '{"type":"sample","step":1,"time":1e999,"metrics":{}}',
     "out of range"),
    ("metric-overflow", "worker", '{"type":"sample","step":1,"time":0,"metrics":{"x":-1e400}}',
     "out of range"),
    # Fields the front ends read, of the wrong shape.
    ("started-run-not-table", "worker", '{"type":"started","run":[1]}', "'started'.run"),
    ("started-model-not-table", "worker", '{"type":"started","run":{"model":"gpt"}}',
     "run.model"),
    ("started-parameters-string", "worker",
     '{"type":"started","run":{"model":{"preset":"x","parameters":"many"}}}', "parameters"),
    ("started-device-number", "worker", '{"type":"started","run":{"device":3}}', "run.device"),
    ("figure-value-string", "worker", '{"type":"done","status":"completed","summary":'
     '{"figures":{"tokens_per_s":{"value":"fast"}}}}', "'tokens_per_s'"),
    ("figures-list", "worker", '{"type":"done","status":"completed","summary":{"figures":[]}}',
     "summary.figures"),
    ("figure-not-table", "worker", '{"type":"done","status":"completed","summary":'
     '{"figures":{"loss":3}}}', "'loss'"),
    ("summary-error-string", "worker", '{"type":"done","status":"failed","summary":'
     '{"error":"boom"}}', "summary.error"),
    ("summary-steps-string", "worker", '{"type":"done","status":"completed","summary":'
     '{"steps_completed":"3"}}', "steps_completed"),
    ("summary-not-table", "worker", '{"type":"done","status":"completed","summary":"ok"}',
     "'done'.summary"),
    ("metrics-list", "worker", '{"type":"sample","step":1,"time":0,"metrics":[1]}', "metrics"),
    ("metric-table", "worker", '{"type":"sample","step":1,"time":0,"metrics":{"a":{}}}',
     "metrics['a']"),
    ("event-message-number", "worker", '{"type":"event","kind":"info","message":5}',
     "'event'.message"),
    ("event-step-string", "worker", '{"type":"event","kind":"info","message":"m","step":"1"}',
     "'event'.step"),
    ("operators-not-tables", "worker", '{"type":"profile","step":1,"operators":[1,2]}',
     "operators[0]"),
    ("error-without-hint", "worker", '{"type":"error","kind":"crash","message":"m"}', "'hint'"),
    ("error-traceback-list", "worker", '{"type":"error","kind":"crash","message":"m",'
     '"hint":"h","traceback":[]}', "traceback"),
    ("hello-versions-list", "worker", '{"type":"hello","protocol":1,"versions":[],"device":{},'
     '"environment":{}}', "versions"),
    ("set-params-list", "front", '{"type":"set","technique":"optimizer","params":[]}', "params"),
    ("start-config-list", "front", '{"type":"start","config":[]}', "config"),
    ("profile-steps-float", "front", '{"type":"profile","steps":2.5}', "steps"),
    ("type-number", "worker", '{"type":5}', "'type'"),
    ("long-unknown-type", "worker", '{"type":"' + "x" * 10_000 + '"}', "unknown"),
]


@pytest.mark.parametrize("direction, line, reason", [c[1:] for c in HOSTILE],
                         ids=[c[0] for c in HOSTILE])
def test_hostile_lines_are_refused_with_a_reason(direction, line, reason):
    with pytest.raises(ProtocolError, match=reason.replace("[", r"\[").replace("(", r"\(")) as info:
        protocol.decode(line, direction)
    assert_sentence(str(info.value))
    assert len(str(info.value)) < 600  # a 10,000-character type is not echoed back whole


@pytest.mark.parametrize("line", [c[2] for c in HOSTILE if c[1] == "worker" and "digits" not in c[3]
                                  and "range" not in c[3]],
                         ids=[c[0] for c in HOSTILE if c[1] == "worker" and "digits" not in c[3]
                              and "range" not in c[3]])
def test_the_sending_side_refuses_what_the_receiving_side_refuses(line):
    """One schema both ways: a worker cannot send what a front end would refuse."""
    with pytest.raises(ProtocolError):
        protocol.encode(json.loads(line), "worker")


def test_a_huge_integer_cannot_be_sent_either():
    with pytest.raises(ProtocolError, match="digits|cannot be written"):
        protocol.encode({"type": "sample", "step": 10 ** 5000, "time": 0.0, "metrics": {}})


@pytest.mark.parametrize("line", [c[2] for c in HOSTILE if c[1] == "worker"],
                         ids=[c[0] for c in HOSTILE if c[1] == "worker"])
def test_the_recorder_keeps_going_after_each_hostile_line(line, effiscope_home):
    store = RunStore()
    run = store.create_run(run_config(steps=2, data="random"))
    recorder = RunRecorder(store, run)
    assert recorder.handle_line(line.encode()) is None
    assert recorder.handle_line(DONE.encode())["type"] == "done"
    assert recorder.finish(0) == "completed"
    assert recorder.warnings and recorder.warnings[0].startswith("rejected a line from the worker")
    assert run.meta()["status"] == "completed"


# --- the front end's loop against a hostile worker --------------------------------------------
@pytest.mark.parametrize("lines, status", [
    (['{"type":"started","run":{"workload":"train"}}', DONE], "completed"),  # no model: fine
    (['{"type":"started","run":{"model":3}}', DONE], "completed"),  # refused line, run goes on
    (['{"type":"done","status":"completed","summary":{"figures":{"x":{"value":"1"}}}}'],
     "crashed"),
    (['{"type":"done","status":"completed","summary":{"figures":[]}}'], "crashed"),
    (['{"type":"done","status":"failed","summary":{"error":"boom"}}'], "crashed"),
    (['{"type":"sample","step":' + NINES + ',"time":0,"metrics":{}}', DONE], "completed"),
    (["\x1b[2J\x1b]0;pwned\x07", DONE], "completed"),
], ids=["started-without-model", "started-model-number", "figure-string", "figures-list",
        "summary-error-string", "huge-int-sample", "terminal-escapes"])
def test_a_hostile_worker_never_crashes_the_front_end_nor_leaves_the_run_running(
        tmp_path, lines, status, effiscope_home):
    got, recorder, run = run_hostile(tmp_path, lines)
    assert got == status
    assert run.meta()["status"] == status  # closed, never left "running"
    assert run.summary()["status"] == status
    kinds = [m["type"] for m in run.messages()]
    assert kinds[0] == "hello" and "heartbeat" not in kinds


def test_the_cli_prints_a_hostile_started_message_without_a_traceback(
        tmp_path, monkeypatch, capsys, effiscope_home):
    from profiler.wire import launch

    lines = ['{"type":"started","run":{"workload":"train","device":"\\u001b[31mred"}}',
             '{"type":"event","kind":"warning","message":"\\u001b]0;title\\u0007"}', DONE]
    monkeypatch.setattr(launch, "worker_command",
                        lambda config=None: __import__("tests.faults", fromlist=["x"])
                        .hostile_worker(tmp_path, lines))
    code = cli.main(["run", str(write_config(tmp_path / "run.toml", run_config(steps=2, data="random")))])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "\x1b" not in err and "\\x1b[31mred" in err and "\\x1b]0;title\\x07" in err
    assert_sentence(err)


def test_an_oversize_line_is_dropped_with_bounded_memory(tmp_path, effiscope_home):
    huge = '{"type":"event","kind":"info","message":"' + "x" * (protocol.MAX_LINE_BYTES + 10) + '"}'
    status, recorder, run = run_hostile(tmp_path, [huge, huge.replace('"}', ""), DONE])
    assert status == "completed"
    dropped = [w for w in recorder.warnings if "over the" in w and "limit" in w]
    assert len(dropped) == 2, recorder.warnings
    # The reader never holds more than one line's limit: nothing that big reached the stream.
    assert run.stream_path.stat().st_size < protocol.MAX_LINE_BYTES


def test_the_reader_holds_at_most_one_line_limit(tmp_path):
    """A worker writing 3 line limits with no newline: the queue gets one OVERSIZE marker."""
    from profiler.wire.client import OVERSIZE

    command = [sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'x' * "
               f"(3 * {protocol.MAX_LINE_BYTES} + 5))"]
    worker = WorkerProcess(command=command)
    items = []
    try:
        while True:
            item = worker.lines.get(timeout=30)  # hang guard
            items.append(item)
            if item is EOF:
                break
    finally:
        worker.shutdown(1)
    assert items == [OVERSIZE, EOF]


# --- a start the protocol cannot carry --------------------------------------------------------
def test_an_oversize_start_is_refused_before_the_worker_starts(tmp_path, capsys, effiscope_home):
    toml = write_config(tmp_path / "run.toml", run_config(steps=2, data="random"))
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    code = cli.main(["run", str(toml), "--name", "n" * 5_000_000])
    err = capsys.readouterr().err
    assert code == 2
    # The flag's value is checked like the same setting in a file (issue 34), before any send.
    assert "--name nnnnnnnnnnnnnnnnnnnn...: name: is 5,000,000 characters long" in err
    assert_sentence(err)
    assert not (effiscope_home / "runs").exists() or not any((effiscope_home / "runs").iterdir())
    assert {p.pid for p in psutil.Process().children(recursive=True)} == before


def test_an_oversize_name_in_a_config_file_is_a_config_error(tmp_path):
    from profiler.config import ConfigError, RunConfig

    with pytest.raises(ConfigError, match="name: is 5,000,000 characters long"):
        RunConfig.from_toml(f'name = "{"n" * 5_000_000}"')


def test_start_line_names_the_longest_setting():
    config = run_config(steps=2, data="random").to_dict()
    config["techniques"] = {"optimizer": {"note": "z" * protocol.MAX_LINE_BYTES}}
    with pytest.raises(StartRefused, match=r"techniques\.optimizer\.note"):
        start_line(config)


def test_a_start_that_cannot_be_sent_fails_the_run_with_a_sentence(monkeypatch, effiscope_home):
    monkeypatch.setattr(client, "SEND_FAILURE_GRACE_S", 0.5)  # it lingers: killed after this
    monkeypatch.setattr(WorkerProcess, "send", lambda self, message: (
        setattr(self, "send_error", "the worker stopped reading its input (Broken pipe)"), False)[1])
    store = RunStore()
    config = run_config(steps=2, data="random")
    run = store.create_run(config)
    recorder = RunRecorder(store, run)
    status = run_to_completion(config.to_dict(), recorder,
                               command=[sys.executable, "-c", "import time; time.sleep(30)"])
    assert status == "failed"
    assert "start command could not be sent" in run.summary()["end"]
    assert "Broken pipe" in run.summary()["end"]


def test_a_link_that_ends_before_the_start_is_sent_says_why_in_its_words(monkeypatch,
                                                                        effiscope_home):
    """ssh that cannot connect closes its input and exits: the start command meets a broken
    pipe, but the run's sentence is ssh's reason (from the log), not the pipe."""
    monkeypatch.setattr(WorkerProcess, "send", lambda self, message: (
        setattr(self, "send_error", "the worker stopped reading its input (Broken pipe)"), False)[1])
    store = RunStore()
    config = run_config(steps=2, data="random")
    config.launch.ssh = "user@127.0.0.1"
    run = store.create_run(config)
    refused = "ssh: connect to host 127.0.0.1 port 1: Connection refused"
    status = run_to_completion(config.to_dict(), RunRecorder(store, run), command=[
        "/bin/sh", "-c", f"exec 0<&-; sleep 0.2; echo '{refused}' >&2; exit 255"])
    assert status == "failed"
    assert run.summary()["end"].startswith("launch.ssh: cannot connect to 127.0.0.1 port 1")


def test_send_to_a_worker_that_closed_its_input_says_why():
    worker = WorkerProcess(command=["/bin/sh", "-c", "exec 0<&-; sleep 30"])
    try:
        wait_for(lambda: not os.path.exists(f"/proc/{worker.pid}/fd/0"), 10, "stdin closed")
        sent = [worker.send(protocol.stop()) for _ in range(3)]
    finally:
        worker.shutdown(0)
    assert sent[-1] is False and "stopped reading its input" in worker.send_error


# --- a real worker takes the hostile commands -------------------------------------------------
def _messages_until(worker: WorkerProcess, predicate, timeout_s: float = 60) -> list[dict]:
    out = []
    while True:
        item = worker.lines.get(timeout=timeout_s)  # hang guard: queue.Empty fails the test
        if item is EOF:
            return out
        out.append(protocol.decode(item, "worker"))
        if predicate(out[-1]):
            return out


@pytest.mark.slow
def test_a_worker_survives_a_huge_integer_and_still_exits_on_sigterm_and_eof(tmp_path):
    workers = [WorkerProcess(log_path=tmp_path / f"worker{i}.log") for i in range(2)]
    try:
        for worker in workers:
            assert _messages_until(worker, lambda m: m["type"] == "hello")[-1]["type"] == "hello"
            worker.send(b'{"type":"profile","steps":' + NINES.encode() + b"}\n")
            worker.send(b'{"type":"set","technique":"x","params":{"a":' + NINES.encode() + b"}}\n")
            worker.send(protocol.profile_request(1))  # answered only if the reader still runs
            replies = _messages_until(worker, lambda m: m.get("kind") == "refused")
            warnings = [m["message"] for m in replies if m.get("kind") == "warning"]
            assert len(warnings) == 2 and all("5,000 digits" in w for w in warnings), replies
        first, second = workers
        first.close_stdin()  # the front end went away
        assert first.wait(30) == 0  # hang guard: it used to wait forever here
        os.kill(second.pid, signal.SIGTERM)  # stdin still open, nothing running
        assert second.wait(30) == 0
    finally:
        for worker in workers:
            worker.shutdown(1)


def test_sigterm_ends_an_idle_worker_whose_stdin_stays_open(tmp_path):
    """The worker's main loop waits for commands in slices, so a signal is acted on."""
    script = ("import sys, profiler.engine.worker as w; sys.modules['torch'] = None\n"
              "w.hello_message = lambda: {'type': 'hello', 'protocol': 1, 'versions': {},"
              " 'device': {}, 'environment': {}}\nw.main()")
    worker = WorkerProcess(command=[sys.executable, "-c", script])
    try:
        assert _messages_until(worker, lambda m: m["type"] == "hello", 30)
        os.kill(worker.pid, signal.SIGTERM)
        assert worker.wait(20) == 0  # hang guard
    finally:
        worker.shutdown(0)


def test_worker_stdin_reader_always_ends_with_eof(monkeypatch):
    """Whatever a line does inside the reader, `_eof` still reaches the main loop."""
    from profiler.engine import channel as worker_io

    class Boom:
        def readline(self, limit):
            raise RuntimeError("unexpected")

    sent, armed = [], []
    monkeypatch.setattr(worker_io.sys, "stdin", type("S", (), {"buffer": Boom()})())
    # The reader arms the orphan exit (os._exit after STDIN_GRACE_S): here it would end pytest.
    monkeypatch.setattr(worker_io, "leave_if_still_running", armed.append)
    commands: queue.Queue = queue.Queue()
    with pytest.raises(RuntimeError):
        worker_io.read_stdin(commands, type("C", (), {"send": lambda self, m: sent.append(m)})())
    assert commands.get_nowait() == {"type": "_eof"}
    assert armed == [worker_io.STDIN_GRACE_S]


def test_a_cli_subprocess_given_a_huge_integer_config_says_so(tmp_path, effiscope_home):
    toml = tmp_path / "run.toml"
    toml.write_text(f"seed = {NINES}\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "profiler.cli", "run", str(toml)],
                            capture_output=True, text=True, timeout=60,
                            env={**worker_env(), **os.environ})
    assert result.returncode == 2, result.stderr
    assert "usable TOML" in result.stderr and "digits" in result.stderr
    assert_sentence(result.stderr)
