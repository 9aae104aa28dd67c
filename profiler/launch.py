"""How a front end starts the worker for a config: here, under torchrun, (later) over ssh.

Torch-free: the app uses it too. Parallel jobs use PyTorch's own launcher (`python -m
torch.distributed.run`, i.e. torchrun) — no home-made process group or launcher.
"""

from __future__ import annotations

import errno
import re
import socket
import sys

from profiler.config import RunConfig


class LaunchError(ValueError):
    """A launch that cannot start; the text names the setting and the fix."""


def world_size(config: RunConfig) -> int:
    return config.launch.nproc_per_node * config.launch.nnodes


def worker_command(config: RunConfig | None = None) -> list[str]:
    """The command line that starts the worker (or the whole local part of a job) for config."""
    local = [sys.executable, "-m", "profiler.worker"]
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
    return cmd + ["-m", "profiler.worker"]


def preflight(config: RunConfig) -> None:
    """Checks that can fail before anything starts: a rendezvous port already taken here."""
    launch = config.launch
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
    """A sentence for how a torchrun job ended, read from the launcher's log; None if unknown."""
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
    # ("connection closed by peer") are its consequence.
    failures.sort(key=lambda f: (f[1] >= 0, f[0]))
    rank, code, trace = failures[0]
    last_error = _last_exception_line(log_text[:marker])
    detail = trace if trace and trace != "<N/A>" else (last_error or f"exit code {code}")
    return f"rank {rank} failed (exit code {code}): {detail}; the other ranks were stopped"


def _last_exception_line(text: str) -> str | None:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if re.match(r"^[A-Za-z_.]+(Error|Exception)\b.*:", line):
            return line
    return None
