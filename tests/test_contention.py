"""The contention meter: other processes' CPU and GPU use beside a run, from fake readings and
beside a real CPU hog, and the one sentence every front end shows for it."""

from __future__ import annotations

import itertools
import os
import statistics
import sys
import time

import psutil
import pytest

from profiler.figures.busy import CONTENDED_CORES, live_text
from profiler.measure.contention import ContentionMeter, tree_cpu_seconds
from tests.helpers import CONTENDED


def _meter(busy_steps, own_steps, cores=2):
    clock = itertools.count(0.0)
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


def _worker_run(tmp_path, name: str,
                hogs: list[psutil.Process]) -> tuple[dict, float, float, list[float]]:
    """A real worker (a process tree of its own) trains gpt-nano for 4 s. Returns its summary
    (decoded and validated on receipt) and, measured here from outside between its `started`
    and `done` messages, the cores its own tree used and the cores the hogs used; and the live
    readings of other processes' CPU its samples carried."""
    from profiler.wire import protocol
    from profiler.wire.client import WorkerProcess
    from tests.helpers import collect, run_config

    config = run_config(steps=100_000, batch_size=2, seq_len=16, eval_interval=0)
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
    live = [m["metrics"]["other_cpu_cores"] for m in messages if m["type"] == "sample"
            and m["metrics"].get("other_cpu_cores") is not None]
    return (done["summary"], (end[1] - start[1]) / wall, (end[2] - start[2]) / wall, live)


@pytest.mark.slow
def test_a_run_beside_a_cpu_hog_is_flagged_and_the_same_run_alone_is_not(tmp_path):
    # The machine may be shared (other users' work is contention too, and is reported as such),
    # so each run is checked against what is measured here from outside: the meter must count
    # the hogs as other processes and never the worker's own tree.
    alone, worker_alone, _, live_alone = _worker_run(tmp_path, "alone", [])
    hogs = [psutil.Popen([sys.executable, "-c", HOG]) for _ in range(2)]  # both cores busy
    try:
        beside, _, hog_cores, live_beside = _worker_run(tmp_path, "beside", hogs)
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
    # While it ran, its samples said so too (the live reading the app's status bar shows).
    assert len(live_beside) >= 2 and statistics.median(live_beside) >= hog_cores - 0.3
    assert live_text(statistics.median(live_beside), cores)[1] is True

    # Alone: the worker's own CPU (about a core) is never counted as another process's, so a
    # quiet machine gives a quiet run; what is left is the rest of the machine.
    machine = alone["contention_machine_cpu_percent"] / 100 * cores
    outside = machine - worker_alone
    assert worker_alone > 0.3
    assert alone["contention_other_cpu_cores_mean"] <= outside + 0.2, (alone, worker_alone)
    if outside < CONTENDED_CORES - 0.1:  # the machine was quiet, as on an idle workstation
        assert alone["contended"] is False and alone["contention_sentence"] == ""
        assert len(live_alone) >= 2 and statistics.median(live_alone) < CONTENDED_CORES
    else:  # someone else was busy: that is contention too, and reported
        assert alone["contended"] is True


# --- NVML's other processes, torchrun's tree, the wire and the front ends ----------------------
def test_other_gpu_processes_count_only_when_nvml_pids_are_comparable():
    meter = ContentionMeter(10, busy=lambda: 0.0, own=lambda pid: 0.0, cores=2,
                            pids=lambda root: {10, 11})  # the worker and its child
    meter.note_gpu([(99, 5 * 2**30), (10, 2**30)])  # our rank and someone else's job
    meter.note_gpu([(99, 6 * 2**30), (98, 2**20), (11, 2**30)])
    s = meter.summary()
    assert s["contention_gpu_other_processes"] == 2
    assert s["contention_gpu_other_memory_bytes"] == 6 * 2**30 + 2**20
    assert s["contended"] and s["contention_sentence"] == (
        "2 other processes ran on the GPU during this run: its speed figures are unreliable")
    # NVML in a container may list the host's pids: none is ours, nothing can be told apart.
    blind = ContentionMeter(10, busy=lambda: 0.0, own=lambda pid: 0.0, cores=2,
                            pids=lambda root: {10})
    blind.note_gpu([(4242, 2**30)])
    assert blind.summary()["contention_gpu_other_processes"] is None
    assert not blind.summary()["contended"]


def test_cpu_and_gpu_contention_share_one_sentence():
    m = _meter([0, 1.5, 3.0], [0, 0.5, 1.0])
    m._pids = lambda root: {1}
    m.sample(), m.sample(), m.sample()
    m.note_gpu([(1, None), (7, None)])
    assert m.summary()["contention_sentence"] == (
        "other processes used 1.0 of 2 cores and 1 other process ran on the GPU during this "
        "run: its speed figures are unreliable")


def test_the_meter_reads_at_most_once_a_second_but_always_at_the_end():
    times = iter([0.0, 0.2, 0.4, 1.1, 1.3])
    readings = []
    meter = ContentionMeter(1, busy=lambda: readings.append(1) or 0.0, own=lambda pid: 0.0,
                            clock=lambda: next(times), cores=2)
    for _ in range(4):
        meter.sample()  # 0.2 and 0.4 come too soon after 0.0
    meter.sample(force=True)  # the sampler stopping: the last 0.2 s count
    assert len(readings) == 3 and meter.walls == [pytest.approx(1.1), pytest.approx(0.2)]


def test_mean_is_weighted_by_time():
    m = _meter([0, 3.0, 3.0], [0, 1.0, 1.0])  # 2 cores for a second...
    m._clock = iter([0.0, 1.0, 4.0]).__next__  # ... then none for 3 s
    m.sample(), m.sample(), m.sample()
    assert m.summary()["contention_other_cpu_cores_mean"] == pytest.approx(0.5)


def test_under_torchrun_the_own_tree_is_the_launchers(monkeypatch):
    from profiler.measure.contention import own_root

    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert own_root(False) == os.getpid()
    assert own_root(True) == os.getppid()
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job")
    assert own_root(False) == os.getppid()


def test_the_sampler_samples_the_meter_and_its_stop_reads_the_last_stretch():
    from profiler.measure.system import SystemSampler

    calls = []
    meter = ContentionMeter(os.getpid(), busy=lambda: calls.append("busy") or float(len(calls)),
                            min_interval_s=0.0)
    sampler = SystemSampler(period_s=0.1, contention=meter)  # reads once at creation
    sampler.read_now()
    sampler.stop()
    assert len(calls) == 3 and meter.summary()["contention_samples"] == 2


def test_contention_keys_are_checked_on_receipt():
    import json

    from profiler.wire import protocol

    done = {"type": "done", "status": "completed", "summary": dict(CONTENDED)}
    assert protocol.decode(protocol.encode(done), "worker")["summary"]["contended"] is True
    for key, bad in (("contended", "yes"), ("contention_other_cpu_cores_mean", "1.4"),
                     ("contention_samples", True)):
        line = json.dumps({**done, "summary": {**CONTENDED, key: bad}})  # a peer's bad line
        with pytest.raises(protocol.ProtocolError, match=key):
            protocol.decode(line, "worker")


def test_load_line_states_units_and_spread_and_old_runs_show_nothing():
    from profiler.figures.busy import load_text, sentence

    assert load_text(CONTENDED) == ("other processes 1.42 cores (p90 1.90 cores) of 2, machine "
                                    "CPU 97.5 %, 12 samples")
    assert load_text({}) == "" and sentence({}) == ""
    assert sentence({**CONTENDED, "contended": False}) == ""


def test_the_cli_progress_line_says_when_other_processes_use_the_machine_now():
    """The live line of `effiscope run`: three significant digits (1.81 tokens/s, never "2"),
    and, only while a sample's reading is contended, the meter's live reading beside it."""
    import io

    from profiler.cli.progress import Progress

    stream = io.StringIO()
    progress = Progress(2, stream)
    progress.update({"type": "hello", "environment": {"cpu_cores_logical": 2}})
    for step, other in ((1, 0.02), (2, 1.3)):
        progress.last_print = 0.0  # a line per sample: the throttle is not what is tested
        progress.update({"type": "sample", "step": step, "metrics": {
            "tokens_per_s": 1.81, "loss_train": 3.0, "other_cpu_cores": other}})
    quiet, busy = stream.getvalue().splitlines()
    assert "| 1.81 tokens/s |" in quiet and "other processes" not in quiet
    assert busy.endswith("| other processes: 1.30 cores of 2 now: speeds unreliable")
    assert live_text(None, 2) == ("", False)
    # Without the machine's size, only the absolute rule (a quarter of a core) is applied.
    assert live_text(0.3, None) == ("other processes: 0.300 cores now: speeds unreliable", True)
    assert live_text(0.2, None) == ("other processes: 0.200 cores now", False)
    assert live_text(0.2, 1) == ("other processes: 0.200 cores of 1 now: speeds unreliable", True)


def test_cli_prints_the_warning_beside_the_figures(capsys):
    from profiler.cli.show import print_summary as _print_summary
    from profiler.figures.stats import timed_figure

    figures = {"tokens_per_s": timed_figure([100.0, 101.0, 99.0] * 4, "tokens/s", "median")}
    _print_summary("r1", {}, {"status": "completed", **CONTENDED, "figures": figures})
    out = capsys.readouterr().out.splitlines()
    warning = next(i for i, line in enumerate(out) if line.startswith("warning  other processes"))
    assert out[warning - 1].startswith("load     other processes 1.42 cores")
    assert out[warning + 1].lstrip().startswith("tokens_per_s")  # right above the speed figures
    _print_summary("r2", {}, {"status": "completed", **CONTENDED, "contended": False,
                              "contention_sentence": "", "figures": figures})
    assert "warning" not in capsys.readouterr().out


def test_reports_say_so_beside_the_headline_figures(tmp_path):
    import json

    import jsonschema

    from profiler.report import export
    from profiler.report.tidy import SCHEMA_PATH
    from profiler.store import RunStore
    from tests.helpers import synth_run

    store = RunStore()
    busy = synth_run(store, name="busy", extra_summary=CONTENDED)
    quiet = synth_run(store, name="quiet")
    html = export([busy], "html", tmp_path / "r.html", store=store).read_text(encoding="utf-8")
    head = html[html.index("Headline figures"):]
    assert head.index(CONTENDED["contention_sentence"]) < head.index("Throughput")
    assert "Machine load during the run: other processes 1.42 cores" in html
    md = export([busy], "md", tmp_path / "r.md", store=store).read_text(encoding="utf-8")
    assert f"**Contended machine:** {CONTENDED['contention_sentence']}" in md
    assert md.index("Contended machine") < md.index("| Throughput |")
    quiet_md = export([quiet], "md", tmp_path / "q.md", store=store).read_text(encoding="utf-8")
    assert "Contended" not in quiet_md and "Machine load" not in quiet_md
    doc = json.loads(export([busy], "json", tmp_path / "r.json", store=store).read_text("utf-8"))
    jsonschema.validate(doc, json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))
    assert doc["runs"][0]["summary"]["contended"] is True
    bad = {**doc, "runs": [{**doc["runs"][0], "summary": {**doc["runs"][0]["summary"],
                                                          "contended": "yes"}}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))


def test_the_front_end_is_reported_on_its_own_and_not_counted_as_other_processes():
    from profiler.figures.busy import load_text

    busy, own, front = iter([0, 1.5, 3.0]), iter([0, 1.0, 2.0]), iter([0, 0.3, 0.6])
    clock = itertools.count(0.0)
    m = ContentionMeter(1, busy=lambda: next(busy), own=lambda pid: next(own),
                        clock=lambda: next(clock), cores=2, front_pid=2,
                        front=lambda pid: next(front))  # the app drawing its charts: 0.3 core
    m.sample(), m.sample(), m.sample()
    s = m.summary()
    assert s["contention_other_cpu_cores_mean"] == pytest.approx(0.2)
    assert s["contention_front_end_cpu_cores_mean"] == pytest.approx(0.3)
    assert not s["contended"]
    assert load_text(s).endswith(", front end 0.300 cores (not counted)")


def test_the_front_end_is_the_process_that_started_the_run():
    from profiler.measure.contention import front_end_pid

    assert front_end_pid(os.getpid()) == os.getppid()
