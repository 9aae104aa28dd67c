#!/usr/bin/env bash
# Qt's X11 platform plugin needs a few system libraries that minimal Linux images lack. Lists the
# missing ones and, as root with apt-get, installs them; otherwise prints the command to run.
set -uo pipefail
PY="$1"
PLUGIN="$("$PY" - <<'PY' 2>/dev/null
import pathlib, PySide6
p = pathlib.Path(PySide6.__file__).parent / "Qt" / "plugins" / "platforms" / "libqxcb.so"
print(p if p.exists() else "")
PY
)"
[ -z "$PLUGIN" ] && exit 0
MISSING="$(ldd "$PLUGIN" 2>/dev/null | awk '/not found/ {print $1}' | sort -u)"
LIBQT="$(dirname "$(dirname "$(dirname "$PLUGIN")")")/lib"
for lib in "$LIBQT"/libQt6XcbQpa.so.6 "$LIBQT"/libQt6Gui.so.6; do
    [ -f "$lib" ] && MISSING="$MISSING $(LD_LIBRARY_PATH="$LIBQT" ldd "$lib" 2>/dev/null | awk '/not found/ {print $1}')"
done
MISSING="$(echo $MISSING | tr ' ' '\n' | sort -u | tr '\n' ' ')"
[ -z "${MISSING// }" ] && exit 0
PKGS="libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-shape0 libxcb-xkb1 libxkbcommon-x11-0 libegl1 libgl1 libfontconfig1 libdbus-1-3"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "effiscope: installing system libraries Qt needs for a window: $MISSING" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $PKGS) >&2 || true
else
    echo "effiscope: Qt needs system libraries that are missing ($MISSING)." >&2
    echo "  On Debian/Ubuntu: sudo apt-get install $PKGS" >&2
fi
