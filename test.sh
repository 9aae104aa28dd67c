#!/usr/bin/env bash
# Run the test suite. The first run creates .venv and installs everything, test tools included.
# Extra arguments go to pytest (e.g. ./test.sh -k protocol).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$ROOT/scripts/bootstrap.sh" "test"
cd "$ROOT"
export QT_QPA_PLATFORM=offscreen
bash "$ROOT/scripts/install_chromium.sh"  # headless Chromium opens the HTML reports
bash "$ROOT/scripts/install_sshd.sh"      # a private sshd on 127.0.0.1 for the remote-worker test
bash "$ROOT/scripts/install_xvfb.sh"      # Xvfb + xdotool for the real-X-server GUI test
"$VENV/bin/python" -m ruff check app profiler techniques tests
set +e
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
code=$?
set -e
if [ $code -eq 5 ]; then
    echo "test.sh: pytest collected no tests; that is a failure here" >&2
    exit 1
fi
exit $code
