"""The remote worker: `launch.ssh` runs `ssh HOST <remote_command>` and the run streams exactly as
with a local worker. Tested against a real sshd (Debian's openssh-server) that the test starts
on 127.0.0.1 with its own host key, config and client key in a temp folder; the remote command
is this checkout's worker. In CI (CI=true) a missing sshd fails the test; elsewhere it skips."""

from __future__ import annotations

import getpass
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from profiler.config import RunConfig, validate
from profiler.engine.channel import STDIN_GRACE_S
from profiler.wire import protocol
from profiler.wire.client import EOF, WorkerProcess, worker_env
from profiler.wire.launch import worker_command
from tests.faults import (
    gone,
    listening_ports,
    only_run_dir,
    wait_for,
    write_config,
)
from tests.helpers import run_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parent.parent
SSHD = "/usr/sbin/sshd"


def _missing_tools() -> list[str]:
    missing = [] if os.access(SSHD, os.X_OK) else [SSHD]
    return missing + [tool for tool in ("ssh", "ssh-keygen") if shutil.which(tool) is None]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A private sshd on a free port of 127.0.0.1 that lets this user in with a fresh key."""
    missing = _missing_tools()
    if missing:
        message = (f"the remote-worker test needs OpenSSH's server and client ({', '.join(missing)} "
                   "missing); install Debian's openssh-server (scripts/install_sshd.sh does it as root)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    folder = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)],
                       check=True)
    shutil.copy(folder / "client_key.pub", folder / "authorized_keys")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPidFile {folder / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation needs it
    log = open(folder / "sshd.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(folder / "sshd_config")],
                              stdout=log, stderr=subprocess.STDOUT)

    def listening() -> bool:
        assert server.poll() is None, (folder / "sshd.log").read_text()
        with socket.socket() as client:
            return client.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(listening, 20, "sshd to listen")
        yield {"port": port, "key": folder / "client_key", "user": getpass.getuser(),
               "pid": server.pid, "log": folder / "sshd.log"}
    finally:
        server.terminate()
        server.wait(10)
        log.close()


def remote_config(sshd: dict, steps: int = 100_000, **train) -> RunConfig:
    """A tiny run whose worker runs through ssh on the test's sshd."""
    config = run_config(steps, data="random", **train)
    config.launch.ssh = f"{sshd['user']}@127.0.0.1"
    config.launch.ssh_options = [
        "-p", str(sshd["port"]), "-i", str(sshd["key"]), "-o", "IdentitiesOnly=yes",
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR"]
    # The remote machine is this one: its worker is this checkout's, with this venv's python.
    config.launch.remote_command = (f"OMP_NUM_THREADS=1 PYTHONPATH={ROOT} {sys.executable} "
                                    "-m profiler.engine.worker")
    return validate(config)


def _run_cli(config_path: Path, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "profiler.cli", "run", str(config_path)],
                          capture_output=True, text=True, timeout=300,
                          env={**worker_env(), **os.environ, "EFFISCOPE_HOME": str(home)})


def _shape(run_dir: Path) -> list[tuple]:
    """What a stream carries, without the values: message types, steps, metric names."""
    out = []
    for line in (run_dir / "stream.jsonl").read_text().splitlines():
        message = json.loads(line)
        if message.get("origin") == "front":
            continue
        out.append((message["type"], message.get("step"), message.get("status"),
                    tuple(sorted(message.get("metrics", {})))))
    return out


def test_the_command_line_is_ssh_in_batch_mode(sshd):
    config = remote_config(sshd)
    command = worker_command(config)
    assert command[0] == "ssh" and "BatchMode=yes" in command
    assert command[-3:] == ["--", config.launch.ssh, config.launch.remote_command]
    assert worker_command(run_config(100_000, data="random"))[1:] == ["-m", "profiler.engine.worker"]  # local: no ssh
    default = RunConfig()
    default.launch.ssh = "lab"
    assert worker_command(validate(default))[-2:] == ["lab", "effiscope worker"]


@pytest.mark.slow
def test_a_remote_run_streams_exactly_as_a_local_one(sshd, tmp_path):
    remote = _run_cli(write_config(tmp_path / "remote.toml", remote_config(sshd, steps=5)),
                      tmp_path / "remote-home")
    assert remote.returncode == 0, remote.stderr
    local = _run_cli(write_config(tmp_path / "local.toml", run_config(steps=5, data="random")),
                     tmp_path / "local-home")
    assert local.returncode == 0, local.stderr
    remote_dir = only_run_dir(tmp_path / "remote-home")
    assert _shape(remote_dir) == _shape(only_run_dir(tmp_path / "local-home"))
    assert [m[1] for m in _shape(remote_dir) if m[0] == "sample"] == [1, 2, 3, 4, 5]
    summary = json.loads((remote_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps_completed"] == 5
    assert f"Accepted publickey for {sshd['user']}" in sshd["log"].read_text()


def _next(worker: WorkerProcess, kind: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            item = worker.lines.get(timeout=0.2)
        except queue.Empty:
            continue
        assert item is not EOF, "the ssh link closed"
        message = protocol.decode(item, "worker")
        if message["type"] == kind:
            return message
    raise AssertionError(f"no {kind!r} within {timeout_s} s")


def _remote_worker(sshd_pid: int) -> psutil.Process:
    def find():
        return next((p for p in psutil.Process(sshd_pid).children(recursive=True)
                     if "profiler.engine.worker" in " ".join(p.cmdline())), None)
    return wait_for(find, 30, "the remote worker under sshd")


@pytest.mark.slow
def test_stop_works_and_killing_the_ssh_client_ends_the_remote_worker(sshd, tmp_path):
    config = remote_config(sshd)
    worker = WorkerProcess(log_path=tmp_path / "worker.log", command=worker_command(config))
    try:
        assert _next(worker, "hello")["protocol"] == protocol.PROTOCOL_VERSION
        worker.send(protocol.start(config.to_dict()))
        _next(worker, "sample")
        remote = _remote_worker(sshd["pid"])
        # Our worker listens on nothing: ssh carries the protocol on its stdin and stdout.
        assert listening_ports(remote.pid) == [] and listening_ports(worker.pid) == []
        worker.send(protocol.stop())
        done = _next(worker, "done", 30)
        assert done["status"] == "stopped"
        worker.send(protocol.start(config.to_dict()))  # the same remote worker runs again
        _next(worker, "sample")
        worker.kill()  # SIGKILL the ssh client: the remote stdin closes
        wait_for(lambda: gone(remote.pid), STDIN_GRACE_S + 30, "the remote worker to exit",
                 step_s=0.02)  # a hang guard, not a latency figure
    finally:
        worker.shutdown()


@pytest.mark.parametrize("change, words", [
    ({"port": "closed"}, "launch.ssh: cannot connect to 127.0.0.1 port"),
    ({"remote_command": "no-such-effiscope worker"}, "launch.remote_command: no-such-effiscope "
                                                     "was not found on the remote machine"),
])
def test_a_failed_link_is_explained(sshd, tmp_path, change, words):
    config = remote_config(sshd, steps=2)
    if change.get("port") == "closed":
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed = probe.getsockname()[1]
        config.launch.ssh_options[1] = str(closed)
    config.launch.remote_command = change.get("remote_command", config.launch.remote_command)
    result = _run_cli(write_config(tmp_path / "bad.toml", config), tmp_path / "home")
    assert result.returncode == 1, result.stderr
    assert words in result.stdout, result.stdout + result.stderr
    summary = json.loads((only_run_dir(tmp_path / "home") / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["end"].startswith(words)
