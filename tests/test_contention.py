import os
import sys
import time

import psutil
import pytest

from profiler.contention import CONTENDED_CORES, ContentionMeter, tree_cpu_seconds


def _meter(busy_steps, own_steps, cores=2):
    clock = iter(float(i) for i in range(len(busy_steps)))
    busy = iter(busy_steps)
    own = iter(own_steps)
    return ContentionMeter(1, busy=lambda: next(busy), own=lambda pid: next(own),
                           clock=lambda: next(clock), cores=cores)


def test_other_processes_cores_from_fake_readings():
    # machine busy +1.5 s per second, own tree +0.5 s: others used 1.0 core of 2
    m = _meter([0, 1.5, 3.0, 4.5], [0, 0.5, 1.0, 1.5])
    for _ in range(4):
        m.sample()
    s = m.summary()
    assert s["contention_samples"] == 3
    assert abs(s["contention_other_cpu_cores_mean"] - 1.0) < 1e-9
    assert abs(s["contention_machine_cpu_percent"] - 75.0) < 1e-9
    assert s["contended"]
    assert s["contention_sentence"].startswith("other processes used 1.0 of 2 cores")


def test_alone_is_not_contended():
    m = _meter([0, 0.55, 1.1], [0, 0.5, 1.0])  # 0.05 core of noise
    for _ in range(3):
        m.sample()
    s = m.summary()
    assert not s["contended"] and s["contention_sentence"] == ""
    assert abs(s["contention_other_cpu_cores_p90"] - 0.05) < 1e-9


def test_no_samples_is_na():
    s = ContentionMeter(1, busy=lambda: 0.0, own=lambda pid: 0.0, cores=2).summary()
    assert s["contention_other_cpu_cores_mean"] is None and not s["contended"]


def test_own_tree_counts_this_process():
    assert tree_cpu_seconds(os.getpid()) > 0


# --- a real run beside a CPU hog ---------------------------------------------------------------
HOG = "while True:\n    pass\n"


def _cpu_seconds(procs: list[psutil.Process]) -> float:
    return sum(tree_cpu_seconds(proc.pid) for proc in procs)


def _worker_run(tmp_path, name: str, hogs: list[psutil.Process]) -> tuple[dict, float, float]:
    """A real worker (a process tree of its own) trains gpt-nano for 4 s. Returns its summary
    (decoded and validated on receipt) and, measured here from outside between its `started`
    and `done` messages, the cores its own tree used and the cores the hogs used."""
    from profiler import protocol
    from profiler.client import WorkerProcess
    from tests.helpers import collect, nano_config

    config = nano_config(steps=100_000, batch_size=2, seq_len=16, eval_interval=0)
    config.limits.time_s = 4.0
    config.data.max_train_bytes = 40_000
    worker = WorkerProcess(log_path=tmp_path / f"{name}.log")
    try:
        worker.send(protocol.start(config.to_dict()))
        collect(worker, until="started", timeout=120)
        start = (time.monotonic(), tree_cpu_seconds(worker.pid), _cpu_seconds(hogs))
        messages = collect(worker, until="done", timeout=120)
        end = (time.monotonic(), tree_cpu_seconds(worker.pid), _cpu_seconds(hogs))
    finally:
        worker.shutdown()
    done = messages[-1]
    assert done["type"] == "done" and done["status"] == "completed", done
    wall = end[0] - start[0]
    return done["summary"], (end[1] - start[1]) / wall, (end[2] - start[2]) / wall


@pytest.mark.slow
def test_a_run_beside_a_cpu_hog_is_flagged_and_the_same_run_alone_is_not(tmp_path):
    # The machine may be shared (other users' work is contention too, and is reported as such),
    # so each run is checked against what is measured here from outside: the meter must count
    # the hogs as other processes and never the worker's own tree.
    alone, worker_alone, _ = _worker_run(tmp_path, "alone", [])
    hogs = [psutil.Popen([sys.executable, "-c", HOG]) for _ in range(2)]  # both cores busy
    try:
        beside, _, hog_cores = _worker_run(tmp_path, "beside", hogs)
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait(timeout=10)
    cores = alone["contention_cores"]
    for summary in (alone, beside):
        assert summary["contention_samples"] >= 2
        assert 0 <= summary["contention_other_cpu_cores_mean"] <= cores
        assert summary["contention_gpu_other_processes"] is None  # no GPU here: n/a, not 0

    # Beside the hogs: they are other processes, seen as such, and the run says so.
    other = beside["contention_other_cpu_cores_mean"]
    assert hog_cores > 0.3  # the hogs ran during the measurement (~1.3 cores on a quiet machine)
    assert other >= hog_cores - 0.2, (other, hog_cores)
    assert beside["contended"] is True
    assert beside["contention_sentence"] == (
        f"other processes used {other:.1f} of {cores} cores during this run: "
        "its speed figures are unreliable")

    # Alone: the worker's own CPU (about a core) is never counted as another process's, so a
    # quiet machine gives a quiet run; what is left is the rest of the machine.
    machine = alone["contention_machine_cpu_percent"] / 100 * cores
    outside = machine - worker_alone
    assert worker_alone > 0.3
    assert alone["contention_other_cpu_cores_mean"] <= outside + 0.2, (alone, worker_alone)
    if outside < CONTENDED_CORES - 0.1:  # the machine was quiet, as on an idle workstation
        assert alone["contended"] is False and alone["contention_sentence"] == ""
    else:  # someone else was busy: that is contention too, and reported
        assert alone["contended"] is True
