"""Tools for the fault suite (the hostile cases of each subject: tests/test_*_faults.py): the CLI
in a subprocess, process-tree checks, a hostile worker, and the plain-words check."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from profiler.config import RunConfig
from profiler.wire.client import worker_env
from tests.helpers import run_config

ENDLESS_BUILD = (
    "import sys, time, profiler.engine.weights as weights, profiler.engine.worker as worker\n"
    "def endless_build(*args, **kwargs):\n"
    "    print('building the model', file=sys.stderr, flush=True)\n"
    "    time.sleep(600)\n"
    "weights.load_model = endless_build\n"
    "worker.main()\n")


def worker_in_an_endless_build(log: Path):
    """A real worker whose model build never ends, started and sent a run: it returns once the
    log says the build began (a WorkerProcess; the caller ends it)."""
    from profiler.wire import protocol
    from profiler.wire.client import WorkerProcess

    worker = WorkerProcess(log_path=log, command=[sys.executable, "-c", ENDLESS_BUILD])
    try:
        worker.send(protocol.start(run_config(steps=5, data="random").to_dict()))
        wait_for(lambda: "building the model" in log.read_text(errors="replace"), 120,
                 "the model build to start")
    except BaseException:
        worker.shutdown(0)
        raise
    return worker


def write_config(path: Path, config: RunConfig) -> Path:
    config.save(path)
    return path


def cli(*args: str, **popen) -> subprocess.Popen:
    """`effiscope ARGS` in a child process (text pipes), with this checkout importable."""
    return subprocess.Popen([sys.executable, "-m", "profiler.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**worker_env(), **os.environ}, **popen)


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str, step_s: float = 0.05):
    """Poll predicate until it returns something truthy; fail with `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def only_run_dir(home: Path) -> Path | None:
    runs = sorted((home / "runs").glob("*")) if (home / "runs").exists() else []
    return runs[0] if len(runs) == 1 else None


def stored_samples(run_dir: Path) -> list[dict]:
    """Sample messages in a run's stream.jsonl (complete lines only)."""
    out = []
    try:
        text = (run_dir / "stream.jsonl").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("type") == "sample":
            out.append(message)
    return out


def gone(pid: int) -> bool:
    """A process that no longer runs (a zombie waiting for its parent counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def worker_child(front_pid: int, timeout_s: float = 60) -> psutil.Process:
    """The worker process a front end (the CLI) started."""
    def find():
        try:
            children = psutil.Process(front_pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return None
        return next((c for c in children if "profiler.engine.worker" in " ".join(_cmdline(c))), None)

    return wait_for(find, timeout_s, "the worker process")


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def listening_ports(pid: int) -> list:
    """Listening sockets owned by a process (EffiScope must open none)."""
    try:
        connections = psutil.Process(pid).net_connections(kind="inet")
    except psutil.NoSuchProcess:
        return []
    return [c for c in connections if c.status == psutil.CONN_LISTEN]


# A worker that is not ours to trust (what `launch.ssh` may reach): it answers a start with the
# lines in the file named by argv[1] (one per line, sent as they are), then does what argv[2]
# says: "exit" (ends), "hang" (stays silent until killed) or "beat" (heartbeats, then done).
HOSTILE_WORKER = r"""
import json, sys, time
lines = open(sys.argv[1], encoding="utf-8").read().split("\n")
mode = sys.argv[2] if len(sys.argv) > 2 else "exit"
out = sys.stdout.buffer
out.write(b'{"type":"hello","protocol":1,"versions":{},"device":{},"environment":{}}\n')
out.flush()
sys.stdin.buffer.readline()
for line in lines:
    if line:
        out.write(line.encode("utf-8") + b"\n")
        out.flush()
if mode == "hang":
    time.sleep(600)
"""


def hostile_worker(tmp_path: Path, lines: list[str], mode: str = "exit") -> list[str]:
    """The command that starts HOSTILE_WORKER with these lines."""
    script = tmp_path / "hostile_lines.txt"
    script.write_text("\n".join(lines), encoding="utf-8")
    return [sys.executable, "-c", HOSTILE_WORKER, str(script), mode]


def run_hostile(tmp_path: Path, lines: list[str], mode: str = "exit", **kwargs):
    """Record a run against HOSTILE_WORKER; (status, recorder, run)."""
    from profiler.store import RunStore
    from profiler.store.recorder import RunRecorder
    from profiler.wire.client import run_to_completion

    store = RunStore()
    config = run_config(steps=2, data="random")
    run = store.create_run(config)
    recorder = RunRecorder(store, run)
    status = run_to_completion(config.to_dict(), recorder,
                               command=hostile_worker(tmp_path, lines, mode), **kwargs)
    return status, recorder, run


def assert_sentence(text: str) -> None:
    """Said in words: one line or a few, never a traceback or a bare exception name."""
    assert text.strip(), "nothing was said"
    assert "Traceback (most recent call last)" not in text, text
    assert len(text) < 2000, text[:300]


# A fix is said with a verb (give, set, choose...), as the rule the value must follow, or as the
# list of what is valid.
FIX = re.compile(r"\b(give|set|choose|use|fix|remove|add|check|lower|keep|put|install|start|"
                 r"shorten|leave|enable|switch|train|pick|must be|must have|one of|"
                 r"valid \w+ are|known \w+ are|lists them)\b")


def assert_fix_sentence(text: str, field: str) -> None:
    """One sentence (one line, no traceback) that names the field and says how to fix it."""
    assert "\n" not in text.strip() and "Traceback" not in text, text
    assert field in text, f"{field!r} not named in: {text}"
    assert FIX.search(text), f"no fix in: {text}"
    assert len(text) < 600, text
