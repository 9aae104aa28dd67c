#!/usr/bin/env bash
# Creates (once) and updates the project's virtual environment; sourced by ./effiscope.sh and
# ./test.sh. Re-installs only when pyproject.toml changed since the last install.
#   EFFISCOPE_VENV    where the venv lives (default: .venv in the repository)
#   EFFISCOPE_TORCH   the torch requirement to install (default "torch>=2.4"; pip then picks the
#                     build for this platform, a CUDA build on Linux x86_64)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EFFISCOPE_VENV:-$ROOT/.venv}"
EXTRAS="${1:-}"

pick_python() {
    for candidate in python3.13 python3.12 python3.11 python3.10 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys, venv; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
            echo "$candidate"; return 0
        fi
    done
    echo "EffiScope needs Python 3.10 or newer with the venv module; install it (e.g. apt-get install python3-venv) and try again" >&2
    return 1
}

if [ ! -x "$VENV/bin/python" ]; then
    PY="$(pick_python)"
    echo "effiscope: creating the environment in $VENV (first run only)" >&2
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
fi

STAMP="$VENV/.effiscope-installed"
WANT="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)-${EXTRAS}-${EFFISCOPE_TORCH:-}"
if [ ! -f "$STAMP" ] || ! grep -qx -- "$WANT" "$STAMP" 2>/dev/null; then
    if ! "$VENV/bin/python" -c 'import torch' >/dev/null 2>&1; then
        echo "effiscope: installing ${EFFISCOPE_TORCH:-torch>=2.4} (large download on first run)" >&2
        "$VENV/bin/python" -m pip install --quiet "${EFFISCOPE_TORCH:-torch>=2.4}" >&2
    fi
    TARGET="$ROOT"
    [ -n "$EXTRAS" ] && TARGET="$ROOT[$EXTRAS]"
    echo "effiscope: installing EffiScope and its dependencies" >&2
    "$VENV/bin/python" -m pip install --quiet -e "$TARGET" >&2
    echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
