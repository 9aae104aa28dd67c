"""How a front end starts the worker for a config: here, under torchrun, or over ssh.

Torch-free: the app uses it too. Parallel jobs use PyTorch's own launcher (`python -m
torch.distributed.run`, i.e. torchrun) — no home-made process group or launcher. A remote worker
is `ssh HOST effiscope worker`: the protocol runs over ssh's stdin/stdout, ssh does the
authentication, and EffiScope opens no port of its own.
"""

from __future__ import annotations

import errno
import re
import shutil
import socket
import sys

from profiler.config import RunConfig


class LaunchError(ValueError):
    """A launch that cannot start; the text names the setting and the fix."""


def world_size(config: RunConfig) -> int:
    return config.launch.nproc_per_node * config.launch.nnodes


def worker_command(config: RunConfig | None = None) -> list[str]:
    """The one command line that starts the worker (or the whole local part of a job) for
    config; None: a local worker on this interpreter, so it sees the same packages. Every
    launcher (CLI, app, tests, benchmarks) asks here."""
    local = [sys.executable, "-m", "profiler.engine.worker"]
    if config is not None and config.launch.ssh:
        return ssh_command(config)
    if config is None or world_size(config) == 1:
        return local
    launch = config.launch
    cmd = [sys.executable, "-m", "torch.distributed.run",
           f"--nproc-per-node={launch.nproc_per_node}", f"--nnodes={launch.nnodes}",
           "--max-restarts=0",
           # Notice a dead rank within 0.1 s instead of the default 5 s.
           "--monitor-interval=0.1"]
    if launch.nnodes == 1 and not launch.rdzv_endpoint:
        cmd.append("--standalone")  # one machine: torchrun picks a free port itself
    else:
        # Static rendezvous: every node states its rank; node 0 hosts the store at the endpoint.
        cmd += ["--rdzv-backend=static", f"--rdzv-endpoint={launch.rdzv_endpoint}",
                f"--node-rank={launch.node_rank}", f"--rdzv-conf=timeout={launch.rdzv_timeout_s}"]
    return cmd + ["-m", "profiler.engine.worker"]


# --- ssh -------------------------------------------------------------------------------------------
# BatchMode: never prompt (there is no terminal to answer on); a dead link is noticed within ~15 s.
SSH_BASE_OPTIONS = ("-T", "-o", "BatchMode=yes", "-o", "ServerAliveInterval=5",
                    "-o", "ServerAliveCountMax=3")
def ssh_command(config: RunConfig) -> list[str]:
    """`ssh [options] -- HOST <remote command>`: the remote worker speaks on ssh's pipes."""
    launch = config.launch
    return ["ssh", *SSH_BASE_OPTIONS, *launch.ssh_options, "--", launch.ssh,
            launch.remote_command]


def preflight(config: RunConfig) -> None:
    """Checks that can fail before anything starts: no ssh client, a rendezvous port taken here."""
    launch = config.launch
    if launch.ssh and shutil.which("ssh") is None:
        raise LaunchError("launch.ssh: this machine has no ssh client; install OpenSSH's client "
                          "(e.g. apt-get install openssh-client) or leave launch.ssh empty")
    if world_size(config) == 1 or not launch.rdzv_endpoint or launch.node_rank != 0:
        return
    host, _, port = launch.rdzv_endpoint.rpartition(":")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise LaunchError(f"launch.rdzv_endpoint: cannot resolve {host!r}; give node 0's IP "
                          "address or a host name this machine knows") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise LaunchError(
                    f"launch.rdzv_endpoint: port {port} on {host} is already in use; choose a "
                    "free port (the same on every node)") from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise LaunchError(
                    f"launch.rdzv_endpoint: {host} is not an address of this machine, but "
                    "node_rank 0 hosts the rendezvous; run node 0 on that host or change the "
                    "endpoint to node 0's address") from None
            raise


_ROOT_CAUSE = re.compile(
    r"rank\s*:\s*(?P<rank>\d+)\s*\(local_rank:\s*(?P<local>\d+)\).*?"
    r"exitcode\s*:\s*(?P<code>-?\d+).*?traceback\s*:\s*(?P<trace>[^\n]*)", re.S)


def explain_failure(log_text: str, config: RunConfig | None = None) -> str | None:
    """A sentence for how a torchrun job or an ssh link ended, read from its log; None if unknown."""
    remote = explain_ssh_failure(log_text) if config is None or config.launch.ssh else None
    if remote:
        return remote
    joined = re.search(r"waiting for clients\. (\d+)/(\d+) clients joined", log_text)
    if joined or "RendezvousTimeoutError" in log_text:
        count = f"only {joined[1]} of {joined[2]}" if joined else "not all"
        return (f"{count} nodes joined the job within launch.rdzv_timeout_s; start the same "
                "config on every node with its own launch.node_rank and check that "
                "launch.rdzv_endpoint is reachable from each")
    if re.search(r"DistNetworkError|DistStoreError|Connection refused", log_text) and "Root Cause" not in log_text:
        return ("could not reach the rendezvous at launch.rdzv_endpoint; start node 0 first "
                "(it hosts the rendezvous) and check the address and port from this machine")
    if "EADDRINUSE" in log_text or "address already in use" in log_text.lower():
        return ("the rendezvous port is already in use; choose another port in "
                "launch.rdzv_endpoint")
    marker = log_text.rfind("Failures:")
    if marker < 0:
        marker = log_text.rfind("Root Cause")
    if marker < 0:
        return None
    failures = [(int(m["rank"]), int(m["code"]), m["trace"].strip())
                for m in _ROOT_CAUSE.finditer(log_text, marker)]
    if not failures:
        return None
    # A rank killed by a signal is the cause; ranks that then failed in a collective
    # ("connection closed by peer") or that torchrun itself ended with SIGTERM once the job was
    # lost are its consequence.
    failures.sort(key=lambda f: (f[1] >= 0, f[1] == -15, f[0]))
    rank, code, trace = failures[0]
    last_error = _last_exception_line(log_text[:marker])
    detail = trace if trace and trace != "<N/A>" else (last_error or f"exit code {code}")
    return f"rank {rank} failed (exit code {code}): {detail}; the other ranks were stopped"


_SSH_FAILURES = (
    (r"ssh: Could not resolve hostname (\S+?):", "launch.ssh: cannot resolve {0}; check the host "
     "name or use its IP address"),
    (r"ssh: connect to host (\S+) port (\d+): ([^\n]+)", "launch.ssh: cannot connect to {0} port "
     "{1} ({2}); check that sshd runs there and the port in launch.ssh_options"),
    (r"Host key verification failed", "launch.ssh: the remote host key is unknown or changed; run "
     "`ssh HOST` once in a terminal to check and accept it"),
    (r"Permission denied \(([^)]*)\)", "launch.ssh: the remote host refused the login ({0}); set up "
     "key authentication so that `ssh -o BatchMode=yes HOST` works without a password"),
    (r"sh: (?:line )?\d*:? ?(\S+): (?:command )?not found", "launch.remote_command: {0} was not found on the remote "
     "machine; install EffiScope there or set launch.remote_command to its full path"),
)


def explain_ssh_failure(log_text: str) -> str | None:
    """A sentence for an ssh link that failed (connection, host key, login, remote command)."""
    for pattern, sentence in _SSH_FAILURES:
        match = re.search(pattern, log_text)
        if match:
            return sentence.format(*match.groups())
    return None


def _last_exception_line(text: str) -> str | None:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if re.match(r"^[A-Za-z_.]+(Error|Exception)\b.*:", line):
            return line
    return None
