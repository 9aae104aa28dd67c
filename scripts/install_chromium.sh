#!/usr/bin/env bash
# The report tests open HTML reports in headless Chromium (Debian's `chromium` package). As root
# with apt-get, install it quietly when missing; otherwise say how. Never fails the caller: the
# test itself fails in CI (CI=true) when Chromium is missing, and skips locally.
set -uo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "effiscope: installing Debian's chromium for the HTML report tests" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; then
        (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium) \
            >/dev/null 2>&1 || echo "effiscope: could not install chromium with apt-get" >&2
    fi
else
    echo "effiscope: chromium is missing; the HTML report test needs it (sudo apt-get install chromium)" >&2
fi
exit 0
