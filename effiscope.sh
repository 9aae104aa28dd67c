#!/usr/bin/env bash
# Launch EffiScope. The first run creates .venv and installs everything; later runs start at once.
#   ./effiscope.sh             opens the desktop app
#   ./effiscope.sh run nano    any CLI command (see ./effiscope.sh --help)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$ROOT/scripts/bootstrap.sh" ""
if [ $# -eq 0 ] || [ "${1:-}" = gui ]; then
    if [ "${QT_QPA_PLATFORM:-}" != offscreen ]; then
        bash "$ROOT/scripts/qt_system_libs.sh" "$VENV/bin/python"
    fi
fi
exec "$VENV/bin/python" -m profiler.cli "$@"
