import os

from profiler.contention import ContentionMeter, tree_cpu_seconds


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
