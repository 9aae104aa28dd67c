"""`effiscope bench overhead`: the reference loop does exactly the worker's work (the same loss
at every step and every validation), and each cost is reported as a ratio with its verdict."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from profiler.bench import overhead
from tests.helpers import nano_config


@pytest.mark.slow
def test_reference_loop_and_worker_train_the_same_curve(tmp_path, capsys):
    from profiler.cli import main

    config = nano_config(steps=6, batch_size=2, seq_len=16, eval_interval=3)
    config.techniques = {"grad_clip": {"max_norm": 1.0}}  # a technique: the engine is shared too
    path = tmp_path / "tiny.toml"
    config.save(path)
    code = main(["bench", "overhead", str(path), "--steps", "6", "--warmup", "2", "--repeats", "1",
                 "--warmup-rounds", "0", "--profile-steps", "2", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    candidates = {**report["comparison"]["candidates"], **report["costs"]["candidates"]}
    reference = candidates["reference loop"]["measurements"][0]
    worker = candidates["EffiScope worker"]["measurements"][0]
    assert len(reference["losses"]) == 6 and reference["losses"] == worker["losses"]
    assert [s for s, _ in reference["val_losses"]] == [0, 3, 6]
    assert reference["val_losses"] == worker["val_losses"]
    # 2 in the worker's comparison, 4 in the costs' (the reference measured in both)
    assert report["loss_curves"]["equal"] is True and report["loss_curves"]["compared"] == 2
    assert report["cost_loss_curves"]["equal"] is True
    assert report["cost_loss_curves"]["compared"] == 4
    assert report["threads"]["worker"] == report["threads"]["reference"]
    cores = len(os.sched_getaffinity(0))
    assert report["threads"]["worker"] == max(1, cores - 1)  # the default leaves the front end one
    for key in ("worker_vs_reference", "sampler_default_vs_reference",
                "sampler_10hz_vs_reference", "profile_capture_window_vs_reference"):
        assert report[key]["ratio"] > 0
        assert report[key]["verdict"].startswith("n/a")  # one round: no interval claimed
    assert "0.2 s, default" in " ".join(candidates)
    for paired in report["paired"].values():  # one round: a paired ratio, no interval
        assert paired["n"] == 1 and paired["ratio"] > 0 and paired["verdict"].startswith("n/a")
    assert report["overhead"]["resolves_1_percent"] is False


def test_pairing_within_rounds_resolves_one_percent_under_drift():
    """A planted 1 % cost under a drift of 2 % a round: the paired ratio resolves it, the ratio
    of medians cannot; the overhead figure says which."""
    from profiler.bench import loop

    calls = {"n": 0}

    def speed(cost: float) -> dict:
        drift = 1.02 ** (calls["n"] // 2)  # both candidates of a round see the same moment
        calls["n"] += 1
        return {"tokens_per_s": 100 * drift * (1 - cost)}

    result = loop.compare([loop.Candidate("reference loop", lambda: speed(0.0)),
                           loop.Candidate("EffiScope worker", lambda: speed(0.01))],
                          ["tokens_per_s"], repeats=20, order="rotate", log=lambda text: None)
    assert [m["round"] for m in result["candidates"]["EffiScope worker"]["measurements"]] == \
        list(range(20))
    paired = loop.paired_ratio(result, "EffiScope worker", "tokens_per_s")
    unpaired = loop.metric(result, "EffiScope worker", "tokens_per_s")["vs_baseline"]
    assert paired["n"] == 20 and paired["significant"]
    assert paired["ci_high"] - paired["ci_low"] < 0.01
    assert unpaired["verdict"] == "no significant difference"
    over = overhead.overhead_figure(paired)
    assert over["resolves_1_percent"] and over["ci_low"] > 0


def test_a_different_curve_is_reported_as_unequal():
    first = {"losses": [3.0, 2.9], "val_losses": [[0, 3.1]]}
    other = {"losses": [3.0, 2.8], "val_losses": [[0, 3.1]]}
    result = {"baseline": "reference loop", "candidates": {
        "reference loop": {"measurements": [first]},
        "EffiScope worker": {"measurements": [other]}}}
    check = overhead.loss_check([result])
    assert check["equal"] is False and check["unequal"] == ["EffiScope worker #1"]


def test_placement_leaves_the_front_end_a_core(monkeypatch):
    from profiler.bench import workers

    monkeypatch.setattr(workers, "available_cores", lambda: [0, 1])
    where = workers.placement()
    assert where.threads == 1 and where.measured == {1} and where.front_end == {0}
    assert where.env()["OMP_NUM_THREADS"] == "1"
    assert "pinned to core 1; the bench's front end on core 0" in where.describe()
    crowded = workers.placement(threads=2)  # no core left over: not pinned, and it says why
    assert crowded.measured is None and "use --threads 1" in crowded.describe()
    assert workers.placement(pin=False).measured is None
    monkeypatch.setattr(workers, "available_cores", lambda: [0, 1, 2, 3])
    assert workers.placement().measured == {1, 2, 3}


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning needs 2 or more cores")
def test_a_pinned_process_and_its_later_threads_run_on_the_measured_cores():
    """pin() right after start: the threads the child starts later inherit the cores; the front
    end's mask is the left-over core inside front_end_on and restored after it."""
    from profiler.bench import workers

    where = workers.placement()
    before = os.sched_getaffinity(0)
    with workers.front_end_on(where):
        assert os.sched_getaffinity(0) == where.front_end
        child = subprocess.Popen(
            [sys.executable, "-c", "import os, sys, threading, time\n"
             "time.sleep(0.5)\n"  # pinned meanwhile, then a thread of its own
             "seen = []\n"
             "t = threading.Thread(target=lambda: seen.append(sorted(os.sched_getaffinity(0))))\n"
             "t.start(); t.join()\n"
             "print(sorted(os.sched_getaffinity(0)), '|', seen[0])"],
            stdout=subprocess.PIPE, text=True)
        where.pin(child.pid)
        out, _ = child.communicate(timeout=30)
    assert os.sched_getaffinity(0) == before
    main_mask, thread_mask = _masks(out)
    assert main_mask == thread_mask == sorted(where.measured)


def _masks(out: str) -> tuple[list[int], list[int]]:
    first, second = out.strip().split("|")
    return json.loads(first), json.loads(second)
