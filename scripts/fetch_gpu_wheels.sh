#!/usr/bin/env bash
# Download, here, the wheels `effiscope doctor` needs on a GPU machine that has no registry
# (the lent H200: Python 3.12, torch 2.11, x86-64). They land in .whl/ at the repo root, which
# git ignores through .git/info/exclude; scripts/gpu_selfcheck.sh installs them there.
#
# Already on that machine (its image's package list): torch, psutil, nvidia-ml-py, safetensors,
# transformers, tokenizers, numpy. Missing, and fetched here:
#   tomli-w       profiler.config writes TOML with it (imported by RunConfig)
#   platformdirs  profiler.store's data-dir helper (only used when EFFISCOPE_HOME is unset)
#   torchao       the torchao check; 0.18.x is the release built against torch 2.11
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
# Keep the wheels out of git (the device README's way: the repository's info/exclude).
if ! git check-ignore -q .whl/probe.whl; then
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    echo '/.whl/' >> "$exclude"
fi
PY=${PYTHON:-python3}
mkdir -p .whl
for spec in "tomli-w==1.2.0" "platformdirs==4.14.9" "torchao==${TORCHAO_VERSION:-0.18.0}"; do
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$spec"
done
ls -l .whl
du -sh .whl
