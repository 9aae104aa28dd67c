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

from profiler.config import ConfigError, RunConfig


class LaunchError(ValueError):
    """A launch that cannot start; the text names the setting and the fix."""


def world_size(config: RunConfig) -> int:
    return config.launch.nproc_per_node * config.launch.nnodes


def worker_command(config: RunConfig | None = None) -> list[str]:
    """The command line that starts the worker (or the whole local part of a job) for config."""
    local = [sys.executable, "-m", "profiler.worker"]
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
    return cmd + ["-m", "profiler.worker"]


# --- ssh -------------------------------------------------------------------------------------------
# BatchMode: never prompt (there is no terminal to answer on); a dead link is noticed within ~15 s.
SSH_BASE_OPTIONS = ("-T", "-o", "BatchMode=yes", "-o", "ServerAliveInterval=5",
                    "-o", "ServerAliveCountMax=3")
_SSH_HOST = re.compile(r"^(?:[A-Za-z0-9._][A-Za-z0-9._-]*@)?"
                       r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])$")
# Options that only shape the connection. ProxyCommand, LocalCommand, -F (another config file)
# and the like would run a command on this machine, so a shared config cannot carry them: they
# belong in the user's own ~/.ssh/config.
_SSH_FLAGS = {"-4", "-6", "-C", "-q", "-v"}
_SSH_VALUE_FLAGS = {"-p", "-i", "-l", "-J", "-c", "-m", "-b"}
_SSH_SAFE_O = {"port", "user", "identityfile", "identitiesonly", "stricthostkeychecking",
               "userknownhostsfile", "connecttimeout", "connectionattempts", "serveraliveinterval",
               "serveralivecountmax", "compression", "loglevel", "addressfamily", "ciphers",
               "hostkeyalias", "checkhostip", "batchmode", "proxyjump", "preferredauthentications",
               "pubkeyauthentication", "tcpkeepalive", "globalknownhostsfile", "ipqos"}
# The remote command is run by the remote user's shell: plain words, paths and VAR=value
# assignments only, no operators, substitutions or redirections.
_REMOTE_WORD = re.compile(r"^[A-Za-z0-9_./:=@%+,~-]+$")


def ssh_command(config: RunConfig) -> list[str]:
    """`ssh [options] -- HOST <remote command>`: the remote worker speaks on ssh's pipes."""
    launch = config.launch
    return ["ssh", *SSH_BASE_OPTIONS, *launch.ssh_options, "--", launch.ssh,
            launch.remote_command]


def validate_ssh(config: RunConfig) -> None:
    """Check the ssh settings of a config; ConfigError names the field and the fix."""
    launch = config.launch
    if not launch.ssh:
        if launch.ssh_options:
            raise ConfigError("launch.ssh_options", "is set but launch.ssh is empty; give the "
                              "remote host in launch.ssh or remove the options")
        return
    if not _SSH_HOST.match(launch.ssh):
        raise ConfigError("launch.ssh", f"{launch.ssh!r} is not a host; give user@host, host or "
                          "a Host alias from ~/.ssh/config (set the port in launch.ssh_options)")
    if world_size(config) > 1:
        raise ConfigError("launch.ssh", "a remote worker runs one process in this version; set "
                          "launch.nproc_per_node and launch.nnodes to 1, or run the parallel job "
                          "with `effiscope run` on the remote machine itself")
    _check_ssh_options(launch.ssh_options)
    words = launch.remote_command.split()
    bad = [w for w in words if not _REMOTE_WORD.match(w)]
    if not words or bad:
        raise ConfigError("launch.remote_command", f"{launch.remote_command!r} is not a plain "
                          "command; give words, paths and VAR=value only (no ; | & $ ` < > "
                          "quotes or brackets), e.g. \"effiscope worker\"")


def _check_ssh_options(options: list[str]) -> None:
    index = 0
    while index < len(options):
        option = options[index]
        value = None
        if option in _SSH_VALUE_FLAGS or option == "-o":
            if index + 1 >= len(options):
                raise ConfigError("launch.ssh_options", f"{option} needs a value after it; "
                                  f"add it as the next list item, e.g. [\"{option}\", \"...\"]")
            value = options[index + 1]
            index += 2
        elif option[:2] in _SSH_VALUE_FLAGS | {"-o"} and len(option) > 2:
            option, value = option[:2], option[2:]
            index += 1
        elif option in _SSH_FLAGS:
            index += 1
            continue
        else:
            raise ConfigError("launch.ssh_options", f"{option!r} is not allowed here; use -p, -i, "
                              "-l, -J, -4, -6, -C, -q, -v or -o KEY=VALUE, and put anything else "
                              "in your own ~/.ssh/config")
        if option in ("-J", "-l") and not all(_SSH_HOST.match(part) for part in value.split(",")):
            raise ConfigError("launch.ssh_options", f"{option} {value!r} is not a user or host "
                              "list; give e.g. -J user@jumphost or -l user")
        if option == "-o":
            key = re.split(r"[=\s]", value.strip(), maxsplit=1)[0].lower()
            if key not in _SSH_SAFE_O:
                raise ConfigError("launch.ssh_options", f"-o {value!r} is not allowed here (only "
                                  "options that shape the connection, never ones that run a local "
                                  "command); put it in your own ~/.ssh/config")


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
    # ("connection closed by peer") are its consequence.
    failures.sort(key=lambda f: (f[1] >= 0, f[0]))
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
