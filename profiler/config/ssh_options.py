"""The ssh settings of a run config (launch.ssh, ssh_options, remote_command), checked: only
options that shape the connection, never ones that run a local command; a remote command of
plain words. Torch-free; the config validates with it and the launcher builds on it."""

from __future__ import annotations

import re
from typing import Any

from profiler.errors import ConfigError

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



def validate_ssh(config: Any) -> None:
    """Check the ssh settings of a run config; ConfigError names the field and the fix."""
    launch = config.launch
    if not launch.ssh:
        if launch.ssh_options:
            raise ConfigError("launch.ssh_options", "is set but launch.ssh is empty; give the "
                              "remote host in launch.ssh or remove the options")
        return
    if not _SSH_HOST.match(launch.ssh):
        raise ConfigError("launch.ssh", f"{launch.ssh!r} is not a host; give user@host, host or "
                          "a Host alias from ~/.ssh/config (set the port in launch.ssh_options)")
    if launch.nproc_per_node * launch.nnodes > 1:
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
