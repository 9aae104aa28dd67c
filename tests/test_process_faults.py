"""Faults of the processes themselves: a worker killed, a stop, a front end killed.

Nothing received may be lost and nothing may be left running: each test checks the store and the
process tree, with real processes (the CLI as the front end, a real worker, tiny runs).
"""

from __future__ import annotations

import json
import shlex
import signal
import sys
import threading
import time

import psutil
import pytest

from profiler.store import RunStore, StoredRun
from profiler.store.recorder import RunRecorder
from profiler.wire.client import run_to_completion
from tests.faults import (
    cli,
    gone,
    listening_ports,
    only_run_dir,
    stored_samples,
    wait_for,
    worker_child,
    worker_in_an_endless_build,
    write_config,
)
from tests.helpers import run_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _timed_lines(stream, out: list[tuple[float, str]]) -> threading.Thread:
    def read():
        for line in stream:
            out.append((time.monotonic(), line))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_worker_killed_mid_run_is_reported_and_nothing_is_lost(
        tmp_path, effiscope_home):
    toml = write_config(tmp_path / "run.toml", run_config(100_000, data="random"))
    proc = cli("run", str(toml))
    out: list[tuple[float, str]] = []
    readers = [_timed_lines(proc.stdout, out), _timed_lines(proc.stderr, [])]
    try:
        worker = worker_child(proc.pid)
        run_dir = wait_for(lambda: only_run_dir(effiscope_home), 60, "the run folder")
        wait_for(lambda: len(stored_samples(run_dir)) >= 5, 120, "five stored samples")
        # EffiScope opens no listening port of its own, in the front end or the worker.
        assert listening_ports(worker.pid) == [] and listening_ports(proc.pid) == []
        worker.kill()  # SIGKILL, mid-run
        # Hang guard, not a stopwatch: the CLI must notice and say so, however loaded the machine.
        wait_for(lambda: any("killed" in line for _, line in out), 30,
                 "the CLI to say the worker was killed")
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for reader in readers:
        reader.join(5)
    assert proc.returncode == 3  # the worker crashed or was killed
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "killed" and "killed" in summary["end"]
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "killed"
    # Every sample the front end received is in the store, in order, and in the report.
    samples = stored_samples(run_dir)
    assert len(samples) == summary["samples_received"] >= 5
    assert [s["step"] for s in samples] == list(range(1, len(samples) + 1))
    report = pytest.importorskip("profiler.report")
    path = report.export([run_dir.name], "json", str(tmp_path / "report.json"))
    exported = json.loads(open(path, encoding="utf-8").read())["runs"][0]
    assert exported["status"] == "killed" and exported["samples"] == len(samples)
    assert exported["series"]["loss_train"]["step"] == [s["step"] for s in samples]


@pytest.mark.slow
def test_stop_ends_the_worker_and_all_its_children_within_3_s(effiscope_home):
    """The worker leaves a child holding its stdout (as a compile worker pool would): the stop
    still completes and the whole tree is gone within 3 s of the request."""
    store = RunStore()
    config = run_config(100_000, data="random")
    run = store.create_run(config)
    recorder = RunRecorder(store, run)
    command = ["/bin/sh", "-c",
               f"sleep 300 & exec {shlex.quote(sys.executable)} -m profiler.engine.worker"]
    interrupt = threading.Event()
    tree: dict = {}

    def on_message(message: dict) -> None:
        if message["type"] == "sample" and message["step"] >= 3 and not interrupt.is_set():
            tree["pids"] = [p.pid for p in psutil.Process().children(recursive=True)]
            tree["at"] = time.monotonic()
            interrupt.set()  # what Ctrl-C in the CLI and Stop in the app do

    status = run_to_completion(config.to_dict(), recorder, on_message=on_message,
                               interrupt=interrupt, command=command)
    wait_for(lambda: all(gone(pid) for pid in tree["pids"]),
             max(0.05, tree["at"] + 3.0 - time.monotonic()), "the worker's process tree to end")
    assert len(tree["pids"]) >= 2  # the worker and the child it started
    assert status == "stopped"
    assert run.summary()["status"] == "stopped"


@pytest.mark.slow
def test_front_end_killed_the_worker_exits_and_the_run_is_marked(tmp_path, effiscope_home):
    from profiler.engine.worker import STDIN_GRACE_S

    toml = write_config(tmp_path / "run.toml", run_config(100_000, data="random"))
    proc = cli("run", str(toml))
    worker = None
    try:
        worker = worker_child(proc.pid)
        run_dir = wait_for(lambda: only_run_dir(effiscope_home), 60, "the run folder")
        wait_for(lambda: len(stored_samples(run_dir)) >= 3, 120, "three stored samples")
        proc.kill()  # SIGKILL the front end: it cannot close the run
        proc.communicate(timeout=30)
        # The worker notices its stdin closed, ends the run and exits.
        wait_for(lambda: gone(worker.pid), STDIN_GRACE_S + 30, "the orphaned worker to exit",
                 step_s=0.02)  # a hang guard, not a latency figure
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if worker is not None and not gone(worker.pid):
            worker.kill()
    run = StoredRun(run_dir.name, run_dir)
    warnings: list[str] = []
    messages = list(run.messages(warnings))
    assert messages[0]["type"] == "hello" and messages[1]["type"] == "started"
    assert len([m for m in messages if m["type"] == "sample"]) >= 3
    assert len(warnings) <= 1  # at most the line being written when the CLI died
    assert run.meta()["status"] == "running"  # nobody closed it...
    row = next(r for r in RunStore().list_runs() if r["id"] == run.run_id)
    assert row["status"] == "crashed"  # ...until the history looked at it
    summary = run.summary()
    assert summary["end"] == "the front end ended without closing the run"
    assert summary["samples_received"] == len([m for m in messages if m["type"] == "sample"])


def _cli_run_until_samples(tmp_path, home, samples: int = 3):
    toml = write_config(tmp_path / "run.toml", run_config(100_000, data="random"))
    proc = cli("run", str(toml))
    err: list[tuple[float, str]] = []
    readers = [_timed_lines(proc.stdout, []), _timed_lines(proc.stderr, err)]
    worker = worker_child(proc.pid)
    run_dir = wait_for(lambda: only_run_dir(home), 60, "the run folder")
    wait_for(lambda: len(stored_samples(run_dir)) >= samples, 120, f"{samples} stored samples")
    return proc, worker, run_dir, err, readers


def _said(err: list[tuple[float, str]], text: str) -> bool:
    return any(text in line for _, line in err)


@pytest.mark.slow
def test_sigterm_to_the_cli_stops_the_run_keeps_the_summary_and_exits_143(tmp_path, effiscope_home):
    proc, worker, run_dir, err, readers = _cli_run_until_samples(tmp_path, effiscope_home)
    try:
        proc.terminate()  # SIGTERM, as a service manager or `kill` sends it
        assert proc.wait(60) == 143  # hang guard; 143 = 128 + SIGTERM, not -15
        wait_for(lambda: gone(worker.pid), 10, "the worker to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for reader in readers:
        reader.join(5)
    assert _said(err, "stopping after this step (SIGTERM again to kill the worker)")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["end"] == "stopped on request"
    assert summary["steps_completed"] >= 3  # the worker's own summary, not a stand-in
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "stopped"


@pytest.mark.slow
def test_a_stopped_worker_is_said_within_seconds_and_again_when_it_resumes(
        tmp_path, effiscope_home):
    proc, worker, run_dir, err, readers = _cli_run_until_samples(tmp_path, effiscope_home)
    try:
        worker.suspend()  # SIGSTOP: alive, silent
        wait_for(lambda: _said(err, "the worker has sent nothing for"), 30,
                 "the CLI to say the worker is silent")
        worker.resume()
        wait_for(lambda: _said(err, "the worker is sending again"), 30,
                 "the CLI to say the worker is back")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if not gone(worker.pid):
            worker.resume()
    for reader in readers:
        reader.join(5)
    notes = [m["message"] for m in RunStore().open_run(run_dir.name).messages()
             if m.get("origin") == "front" and m.get("kind") == "warning"]
    assert any("may be stopped (SIGSTOP)" in n for n in notes)  # kept in the run's stream
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "stopped"


def test_a_silent_hostile_worker_is_noted_and_the_run_still_closes(tmp_path, effiscope_home):
    """The CLI's loop (run_to_completion) with a worker that says hello, then nothing."""
    from profiler.wire import protocol
    from tests.faults import run_hostile

    said: list[str] = []

    def on_message(message):
        if message.get("origin") == "front":
            said.append(message["message"])
            for child in psutil.Process().children(recursive=True):
                if "hostile_lines" in " ".join(child.cmdline()):
                    child.kill()  # the user gives up on it

    status, recorder, run = run_hostile(tmp_path, ["garbage"], mode="hang",
                                        on_message=on_message,
                                        silence=protocol.SilenceWatch(quiet_after_s=1.0))
    assert status == "killed"
    assert said and said[0].startswith("the worker has sent nothing for")
    assert run.meta()["status"] == "killed"


# --- a start that cannot run ends the run; a worker dies with its front end -------------------
TWENTY_DIGITS = "10000000000000000000"


def test_a_start_the_worker_cannot_read_ends_as_a_failed_run(tmp_path):
    """A start line the worker refuses (a 20-digit step count) is answered with an
    error and `done`, so a front end waiting for the run is never left waiting."""
    from profiler.wire import protocol
    from profiler.wire.client import WorkerProcess

    worker = WorkerProcess(log_path=tmp_path / "worker.log")
    try:
        worker.send(b'{"type":"start","config":{"limits":{"steps":' + TWENTY_DIGITS.encode()
                    + b"}}}\n")
        messages = []
        while not messages or messages[-1]["type"] != "done":
            line = worker.lines.get(timeout=60)  # hang guard: it used to wait forever here
            messages.append(protocol.decode(line))
    finally:
        worker.shutdown()
    error = next(m for m in messages if m["type"] == "error")
    assert error["kind"] == "config" and "20 digits is out of range" in error["message"]
    assert messages[-1]["status"] == "failed"


def test_the_front_end_never_sends_what_the_worker_would_refuse():
    from profiler.wire import protocol
    from profiler.wire.client import StartRefused, start_line

    with pytest.raises(protocol.ProtocolError, match="20 digits"):
        protocol.encode(protocol.start({"limits": {"steps": int(TWENTY_DIGITS)}}), "front")
    with pytest.raises(StartRefused, match="out of range"):
        start_line({"limits": {"steps": -int(TWENTY_DIGITS)}})


def test_cli_run_with_a_20_digit_step_count_is_refused_before_a_run_exists(effiscope_home):
    proc = cli("run", "nano", "--steps", TWENTY_DIGITS)
    try:
        out, err = proc.communicate(timeout=60)  # hang guard: it used to wait forever
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 2, err
    assert "--steps" in err and "limits.steps" in err and "2**63" in err
    assert not (effiscope_home / "runs").exists() or not any((effiscope_home / "runs").iterdir())


# A front end that starts a worker whose stdin stays open elsewhere (the test holds the pipe),
# then waits: SIGKILLing it leaves the worker no closed stdin to notice.
INTERMEDIATE = r"""
import subprocess, sys
stdin_fd, log = int(sys.argv[1]), open(sys.argv[2], "ab")
worker = subprocess.Popen([sys.executable, "-m", "profiler.engine.worker"], stdin=stdin_fd,
                          stdout=subprocess.DEVNULL, stderr=log, pass_fds=(stdin_fd,))
print(worker.pid, flush=True)
worker.wait()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_worker_dies_with_the_front_end_that_started_it(tmp_path):
    """SIGKILL of the front end ends its worker even while the worker's stdin is still
    open (held here), as when a child of the front end keeps the pipe: the kernel's
    parent-death signal, not the stdin watch."""
    import os
    import subprocess

    from profiler.wire.client import worker_env

    read_end, write_end = os.pipe()
    log = tmp_path / "worker.log"
    front = subprocess.Popen([sys.executable, "-c", INTERMEDIATE, str(read_end), str(log)],
                             stdout=subprocess.PIPE, text=True, env=worker_env(),
                             pass_fds=(read_end,))
    os.close(read_end)
    worker_pid = None
    try:
        worker_pid = int(front.stdout.readline())
        wait_for(lambda: "ready in" in log.read_text(errors="replace"), 60, "the worker's hello")
        front.kill()
        front.wait(30)
        wait_for(lambda: gone(worker_pid), 10, "the orphaned worker to die", step_s=0.02)
    finally:
        os.close(write_end)
        if front.poll() is None:
            front.kill()
            front.wait()
        if worker_pid is not None and not gone(worker_pid):
            os.kill(worker_pid, signal.SIGKILL)


def test_a_worker_whose_stdin_closes_while_it_builds_a_model_exits(tmp_path):
    """The stdin watch holds during set-up too: a worker busy building a model (here a
    build that never ends) exits within its grace once its front end has gone."""
    from profiler.engine.worker import STDIN_GRACE_S

    log = tmp_path / "worker.log"
    worker = worker_in_an_endless_build(log)
    try:
        worker.close_stdin()
        code = worker.wait(STDIN_GRACE_S + 30)  # hang guard: it used to build for 600 s
    finally:
        worker.shutdown(0)
    assert code is not None and code != 0
    assert "still busy" in log.read_text(errors="replace")


def test_a_stop_a_worker_never_answers_still_ends_the_run(tmp_path, effiscope_home):
    """The other half: whatever a worker does with a start (an older worker that ignores
    it), Ctrl-C or SIGTERM in the CLI (the `interrupt` here) ends the wait: the stop goes out,
    and a worker that does not answer it is killed; the run is marked, never left waiting."""
    from tests.faults import run_hostile

    interrupt = threading.Event()
    interrupt.set()  # the user pressed Ctrl-C (or sent SIGTERM) while the worker stays silent
    status, recorder, run = run_hostile(tmp_path, [], mode="hang", interrupt=interrupt)
    assert status == "killed" and recorder.stop_requested
    assert run.meta()["status"] == "killed"
    assert "killed" in run.summary()["end"]
