#!/usr/bin/env bash
# The real-X-server GUI test (tests/test_gui_x11.py) starts its own Xvfb and clicks with xdotool;
# the README screenshots are taken the same way (ImageMagick's `import`). As root with apt-get,
# install what is missing quietly; otherwise say how. Never fails the caller: the test itself
# fails in CI (CI=true) when a tool is missing, and skips locally.
set -uo pipefail
have() { command -v "$1" >/dev/null 2>&1; }
if have Xvfb && have xdotool && have import && [ -e /usr/lib/x86_64-linux-gnu/libxcb-cursor.so.0 ] \
        || { have Xvfb && have xdotool && have import && ldconfig -p 2>/dev/null | grep -q libxcb-cursor.so.0; }; then
    exit 0
fi
packages="xvfb xdotool libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 imagemagick"
if [ "$(id -u)" = 0 ] && have apt-get; then
    echo "effiscope: installing Xvfb, xdotool and ImageMagick for the real-X-server GUI test" >&2
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086 - the package list is meant to split
    if ! apt-get install -y -qq --no-install-recommends $packages >/dev/null 2>&1; then
        (apt-get update -qq && apt-get install -y -qq --no-install-recommends $packages) \
            >/dev/null 2>&1 || echo "effiscope: could not install $packages with apt-get" >&2
    fi
else
    echo "effiscope: Xvfb or xdotool is missing; the X11 GUI test needs them" \
         "(sudo apt-get install $packages)" >&2
fi
exit 0
