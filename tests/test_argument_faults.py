"""Hostile arguments: CLI and bench arguments, validation after overrides, the worker's answer
to starts it cannot read, and its lifetime. Each case is a sentence (exit 2, nothing run) or a
worker that answers and ends, never a hang or a traceback."""

from __future__ import annotations

import json
import queue
import signal
import sys

import psutil
import pytest

from profiler.config import ConfigError, RunConfig, resolve, validate
from profiler.engine import channel as worker_io
from profiler.wire import protocol
from profiler.wire.client import WorkerProcess
from tests.faults import assert_fix_sentence, wait_for
from tests.helpers import cli_in_process, run_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TWENTY = "9" * 20

# (id, argv, words the one-line refusal must hold)
CLI_CASES = [
    ("lr-nan", ["run", "nano", "--lr", "nan"], "--lr nan: train.learning_rate: must be a finite"),
    ("lr-inf", ["run", "nano", "--lr", "inf"], "--lr inf: train.learning_rate: must be a finite"),
    ("seq-len-20-digits", ["run", "nano", "--seq-len", TWENTY],
     "train.seq_len: must be an integer below 2**63"),
    ("nproc-2000", ["run", "nano", "--nproc", "2000"], "must be between 1 and 1024, got 2000"),
    ("device-unicode-digit", ["run", "nano", "--device", "cuda:\u0663"], "is not a device"),
    ("device-huge-index", ["run", "nano", "--device", "cuda:99999"], "is not a device"),
    ("warmup-negative", ["run", "nano", "--warmup", "-3"], "--warmup -3: limits.warmup_steps"),
    ("bench-steps-20-digits", ["bench", "overhead", "--steps", TWENTY],
     "argument --steps: must be between 2 and 100000"),
    ("bench-repeats-a-million", ["bench", "startup", "--repeats", "1000000"],
     "argument --repeats: must be between 1 and 1000, got 1000000"),
    ("bench-repeats-float", ["bench", "techniques", "--repeats", "1e3"],
     "argument --repeats: must be a whole number, got '1e3'"),
    ("bench-only-blank", ["bench", "compress", "--only", " , "], "--only ' , ' names nothing"),
    ("tune-space-semicolons", ["tune", "nano", "--space", ";;;"], "names no dimension"),
]


@pytest.mark.parametrize("argv, words", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_a_hostile_argument_is_one_sentence_and_nothing_runs(argv, words, capsys,
                                                             effiscope_home):
    code, err = cli_in_process(argv, capsys)
    assert code == 2, err
    assert words in err.strip().splitlines()[-1], err  # the parser's usage may come first
    assert "Traceback" not in err
    assert not (effiscope_home / "runs").exists()
    assert psutil.Process().children(recursive=True) == []


def test_terminal_escapes_in_a_refused_flag_are_not_printed_raw(capsys):
    code, err = cli_in_process(["run", "nano", "--device", "\x1b]0;owned\x07\x1b[2J"], capsys)
    assert code == 2
    assert "\x1b" not in err and "\x07" not in err and "is not a device" in err


def test_a_file_setting_the_flags_replace_is_judged_after_them(tmp_path):
    """Two processes in the file without ddp, --nproc 1 on the command line: a valid run (the
    file alone would be refused); the flags are applied first, then the whole is checked."""
    toml = tmp_path / "two.toml"
    toml.write_text("[launch]\nnproc_per_node = 2\n")
    assert resolve(str(toml), {"launch.nproc_per_node": 1}).launch.nproc_per_node == 1
    with pytest.raises(ConfigError, match="neither ddp nor fsdp"):
        resolve(str(toml))


@pytest.mark.parametrize("text", [
    "[limits]\nsteps = 20\n[techniques.lr_schedule]\nwarmup_steps = 20\n",  # equal: allowed
    "workload = 'infer'\n[limits]\nsteps = 5\nwarmup_steps = 1\n"
    "[techniques.lr_schedule]\nwarmup_steps = 500\n",  # no training: the schedule is unused
    "[techniques.lora]\nrank = 128\n",  # exactly gpt-nano's width
], ids=["warmup-equal-to-run", "warmup-in-infer", "lora-rank-equal-to-width"])
def test_the_new_rules_are_not_stricter_than_they_say(text):
    validate(RunConfig.from_toml(text))


def test_a_checkpoint_claiming_zero_heads_is_a_sentence(tmp_path):
    from tests.helpers import lying_checkpoint

    path = lying_checkpoint(tmp_path / "model.safetensors", n_head=0)
    with pytest.raises(ConfigError) as info:
        validate(RunConfig.from_toml(f"workload = 'infer'\n[model]\nsource = 'checkpoint'\n"
                                     f"path = '{path}'"))
    assert "n_head = 0 does not divide n_embd = 128" in str(info.value)
    assert_fix_sentence(str(info.value), "model.path")


# --- the worker: starts it cannot read, internal commands it must not take from the wire -------
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
    script = ("import sys, time, profiler.engine.weights as weights, profiler.engine.worker as worker\n"
              "def endless_build(*args, **kwargs):\n"
              "    print('building the model', file=sys.stderr, flush=True)\n"
              "    time.sleep(600)\n"
              "weights.load_model = endless_build\n"
              "worker.main()\n")
    worker_process = WorkerProcess(log_path=log, command=[sys.executable, "-c", script])
    try:
        worker_process.send(protocol.start(run_config(steps=5, data="random").to_dict()))
        wait_for(lambda: "building the model" in log.read_text(errors="replace"), 120,
                 "the model build to start")
        worker_process.proc.send_signal(signal.SIGTERM)  # stdin stays open
        code = worker_process.wait(worker_io.STDIN_GRACE_S + 30)  # hang guard
    finally:
        worker_process.shutdown(0)
    assert code is not None and code != 0
    assert "still busy" in log.read_text(errors="replace")


def test_the_protocol_refuses_to_send_what_json_cannot_hold_in_range():
    for value in (10**19, -(10**19), 10**5000):
        with pytest.raises(protocol.ProtocolError, match="out of range"):
            protocol.encode({"type": "sample", "step": value, "time": 0.0, "metrics": {}})
    line = protocol.encode({"type": "sample", "step": 10**19 - 1, "time": 0.0, "metrics": {}})
    assert json.loads(line)["step"] == 10**19 - 1
