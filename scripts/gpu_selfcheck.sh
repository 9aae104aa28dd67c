#!/usr/bin/env bash
# The one prepared command for a session that is lent a GPU machine (Python 3.12 with torch, no
# package registry). Before it, here: scripts/fetch_gpu_wheels.sh (fills .whl/).
# Then one device call, run from the repository root:
#     run(command="bash scripts/gpu_selfcheck.sh", carry=[".whl"], timeout_s=600)
# It installs the carried wheels into /tmp/site, runs `effiscope doctor --json` on the GPU and
# the suite's GPU tests, and leaves in $OUT: the doctor's JSON + Markdown, its log, its stdout
# JSON, nvidia-smi's view and the GPU tests' output (6 files; the device returns at most 8).
# Keep the doctor's files under docs/selfcheck/ with the date and device afterwards.
#
#   bash scripts/gpu_selfcheck.sh --rehearse [doctor args]
# runs the same script on a CPU (CI does, tests/test_selfcheck.py): the CPU checks run and every
# GPU-only check says what it would prove on a GPU, so the plumbing is exercised before a GPU
# is ever lent. Other arguments go to the doctor, e.g. `--quick`.
set -uo pipefail
cd "$(dirname "$0")/.."
REHEARSE=0
if [ "${1:-}" = "--rehearse" ]; then
    REHEARSE=1
    shift
fi
OUT=${OUT:-$PWD/doctor-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { echo "selfcheck: installing .whl/ failed" >&2; exit 3; }
    export PYTHONPATH="/tmp/site:$PWD"
else
    [ "$REHEARSE" = 1 ] || echo "selfcheck: no .whl/ carried (run scripts/fetch_gpu_wheels.sh" \
        "here first and carry .whl); tomli-w is required, torchao optional" >&2
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 EFFISCOPE_HOME=${EFFISCOPE_HOME:-/tmp/effiscope-home}
DOCTOR_ARGS=(--json --out "$OUT")
if [ "$REHEARSE" = 1 ]; then
    DOCTOR_ARGS+=(--rehearse)
    echo "selfcheck: rehearsal on the CPU (no GPU is used)" > "$OUT/nvidia-smi.txt"
else
    nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || echo "selfcheck: nvidia-smi failed" >&2
fi

# The doctor: ~5-8 minutes on one H100/H200 (torch.compile of GPT-2 small and the 2-GPU energy
# check, where there are 2 GPUs, are the longest parts).
timeout "${DOCTOR_TIMEOUT_S:-420}" "$PY" -m profiler.cli doctor "${DOCTOR_ARGS[@]}" "$@" \
    > "$OUT/doctor-stdout.json" 2> >(tee "$OUT/doctor-log.txt" >&2)
rc=$?
echo "selfcheck: doctor exit code $rc (0 = every check passed or skipped; 1 = a check failed;" \
     "124 = stopped at the time limit)"

# The suite's GPU tests (marked `gpu`), in what time is left; none run in a rehearsal.
if [ "$REHEARSE" = 1 ]; then
    echo "selfcheck: rehearsal: the GPU tests are not run on a CPU" > "$OUT/pytest-gpu.txt"
else
    timeout "${TESTS_TIMEOUT_S:-120}" "$PY" -m pytest -q -p no:cacheprovider -m gpu \
        tests/test_doctor.py tests/test_measurement.py tests/test_memory_snapshot.py \
        > "$OUT/pytest-gpu.txt" 2>&1
    echo "selfcheck: GPU tests exit code $? (output in pytest-gpu.txt)"
fi
exit $rc
