#!/usr/bin/env bash
# The remote-worker test (tests/test_ssh.py) starts a private sshd on 127.0.0.1 and runs the
# worker through `ssh`. As root with apt-get, install Debian's openssh-server quietly when
# missing; otherwise say how. Never fails the caller: the test itself fails in CI (CI=true) when
# sshd is missing, and skips locally.
set -uo pipefail
[ -x /usr/sbin/sshd ] && command -v ssh >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "effiscope: installing Debian's openssh-server for the remote-worker test" >&2
    export DEBIAN_FRONTEND=noninteractive
    # Only the binaries are wanted: policy-rc.d keeps the package from starting a system sshd.
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && made_policy=1
    fi
    if ! apt-get install -y -qq --no-install-recommends openssh-server openssh-client >/dev/null 2>&1; then
        (apt-get update -qq && apt-get install -y -qq --no-install-recommends openssh-server \
            openssh-client) >/dev/null 2>&1 || echo "effiscope: could not install openssh-server with apt-get" >&2
    fi
    [ "$made_policy" = 1 ] && rm -f "$policy"
else
    echo "effiscope: sshd is missing; the remote-worker test needs it (sudo apt-get install openssh-server)" >&2
fi
exit 0
