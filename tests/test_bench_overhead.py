"""`effiscope bench overhead`: the reference loop does exactly the worker's work (the same loss
at every step and every validation), and each cost is reported as a ratio with its verdict."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from profiler.bench import overhead, overhead_report, reference
from tests.helpers import run_config


@pytest.mark.slow
def test_reference_loop_and_worker_train_the_same_curve(tmp_path, capsys):
    from profiler.cli import main

    config = run_config(steps=6, batch_size=2, seq_len=16, eval_interval=3)
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
    over = overhead_report.overhead_figure(paired)
    assert over["resolves_1_percent"] and over["ci_low"] > 0


def test_a_different_curve_is_reported_as_unequal():
    first = {"losses": [3.0, 2.9], "val_losses": [[0, 3.1]]}
    other = {"losses": [3.0, 2.8], "val_losses": [[0, 3.1]]}
    result = {"baseline": "reference loop", "candidates": {
        "reference loop": {"measurements": [first]},
        "EffiScope worker": {"measurements": [other]}}}
    check = overhead_report.loss_check([result])
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


def _clock(first: float, start: float, end: float, last: float) -> dict:
    return {"first": first, "start": start, "end": end, "last": last}


def test_a_concurrent_round_counts_only_when_each_window_overlaps_the_others_run():
    """A side that measures steps while the other has already stopped runs them alone (faster):
    such a round is dropped and counted, and the error says the fix; overlapping ones are kept,
    paired round by round."""
    from profiler.bench import pairs

    both = _clock(0.0, 1.0, 9.0, 10.0)
    assert pairs.overlaps(both, _clock(0.1, 1.1, 9.1, 10.1))
    assert not pairs.overlaps(both, _clock(0.1, 1.1, 10.5, 11.0))  # its tail after the other's end
    assert not pairs.overlaps(both, _clock(1.5, 2.0, 9.5, 9.9))  # the other began inside its window

    def measure(index: int) -> tuple[dict, dict]:
        late = 11.0 if index == 2 else 9.1  # round 3: the worker's window ends alone
        return ({"tokens_per_s": 100.0, "clock": both},
                {"tokens_per_s": 99.0, "clock": _clock(0.1, 1.1, late, late + 1)})

    result = pairs.compare(["reference loop", "EffiScope worker"], measure, ["tokens_per_s"],
                           repeats=7, warmup=1, log=lambda text: None)
    worker = result["candidates"]["EffiScope worker"]
    assert result["not_overlapping"] == 1 and len(worker["measurements"]) == 6
    assert "raise --pad-steps" in worker["errors"][0]
    paired = loop_paired(result)
    assert paired["n"] == 6 and paired["ratio"] == pytest.approx(0.99)
    assert result["order"] == "concurrent" and "rounds with both running at once" in \
        overhead.loop.header(result)


def test_concurrent_blocks_restart_the_processes_and_drop_each_blocks_warmup():
    """--restart-every 2: the kept rounds run in blocks of fresh processes, each block opened by
    its warmup round, whose measurement (planted far off here) is never kept."""
    from profiler.bench import pairs

    assert pairs.schedule(5, 1, 2) == [("warmup", 0), ("repeat", 0), ("repeat", 0),
                                       ("warmup", 1), ("repeat", 1), ("repeat", 1),
                                       ("warmup", 2), ("repeat", 2)]
    assert pairs.schedule(3, 1) == [("warmup", 0)] + [("repeat", 0)] * 3
    events: list[str] = []
    kinds = [kind for kind, _ in pairs.schedule(5, 1, 2)]

    def measure(index: int) -> tuple[dict, dict]:
        events.append(f"round {index}")
        worker = 50.0 if kinds[index] == "warmup" else 99.0
        return ({"tokens_per_s": 100.0, "clock": _clock(0.0, 1.0, 9.0, 10.0)},
                {"tokens_per_s": worker, "clock": _clock(0.1, 1.1, 9.1, 10.1)})

    result = pairs.compare(["reference loop", "EffiScope worker"], measure, ["tokens_per_s"],
                           repeats=5, warmup=1, log=lambda text: None, restart_every=2,
                           restart=lambda: events.append("restart"))
    assert events == ["round 0", "round 1", "round 2", "restart", "round 3", "round 4",
                      "round 5", "restart", "round 6", "round 7"]
    kept = result["candidates"]["EffiScope worker"]["measurements"]
    assert [m["tokens_per_s"] for m in kept] == [99.0] * 5
    assert [m["round"] for m in kept] == [0, 1, 2, 3, 4]
    assert [m["block"] for m in kept] == [0, 0, 1, 1, 2]
    assert result["blocks"] == 3 and "in 3 blocks of 2 by fresh processes" in \
        overhead.loop.header(result)
    with pytest.raises(ValueError, match="restart"):
        pairs.compare(["a", "b"], measure, ["tokens_per_s"], repeats=2, restart_every=1)


def test_rounds_whose_drift_carries_over_do_not_resolve_one_percent():
    """A worker whose cost wanders slowly from round to round (each round carrying the last
    one's state): the interval of 40 rounds is narrower than 1 %, but the rounds are not
    independent, so the figure does not claim to resolve 1 %, and says why."""
    from profiler.bench import loop

    def result_of(costs: list[float]) -> dict:
        rounds = iter(costs)

        def speed_pair(index: int) -> tuple[dict, dict]:
            clock = _clock(0.0, 1.0, 9.0, 10.0)
            return ({"tokens_per_s": 100.0, "clock": clock},
                    {"tokens_per_s": 100.0 * (1 - next(rounds)), "clock": clock})

        from profiler.bench import pairs
        return pairs.compare(["reference loop", "EffiScope worker"], speed_pair,
                             ["tokens_per_s"], repeats=len(costs), log=lambda text: None)

    wandering = [0.01 + 0.003 * math.sin(i / 4) for i in range(40)]
    shuffled = wandering[::2] + wandering[1::2][::-1]  # the same values, the drift broken up
    shuffled = [shuffled[(i * 17) % 40] for i in range(40)]
    carried = loop.paired_ratio(result_of(wandering), "EffiScope worker", "tokens_per_s")
    apart = loop.paired_ratio(result_of(shuffled), "EffiScope worker", "tokens_per_s")
    assert carried["lag1_autocorrelation"] > 0.8 and carried["rounds_independent"] is False
    assert apart["rounds_independent"] is True
    over, fine = overhead_report.overhead_figure(carried), overhead_report.overhead_figure(apart)
    assert over["width_percent"] < 1 and not over["resolves_1_percent"]
    assert fine["resolves_1_percent"] and 0.9 < fine["percent"] < 1.1
    assert over["percent"] == pytest.approx(fine["percent"])  # the same values: the same centre
    text = overhead_report._overhead_text({"overhead": over})
    assert "rounds are not independent" in text and "--restart-every" in text


def loop_paired(result: dict) -> dict:
    return overhead.loop.paired_ratio(result, "EffiScope worker", "tokens_per_s")


def test_pair_placement_swaps_the_cores_every_round_and_says_what_it_cannot_do(monkeypatch):
    from profiler.bench import pairs

    monkeypatch.setattr(pairs, "available_cores", lambda: [0, 1])
    pair = pairs.pair_placement()
    assert pair.threads == 1 and pair.env()["OMP_NUM_THREADS"] == "1"
    assert pair.round_cores(0) == ({0}, {1}, {0})  # the front end with the worker, side a
    assert pair.round_cores(1) == ({1}, {0}, {1})
    assert "its cost counts against the worker" in pair.describe()
    assert pairs.pair_placement(threads=2) == ("running both at once needs two sets of 2 cores "
                                               "and this machine lets the bench use 2: use "
                                               "--threads 1")
    monkeypatch.setattr(pairs, "available_cores", lambda: [0, 1, 2])
    spare = pairs.pair_placement()
    assert spare.round_cores(1) == ({1}, {0}, {2}) and "front end on core 2" in spare.describe()
    monkeypatch.setattr(pairs, "available_cores", lambda: [0])
    assert "needs 2 cores" in pairs.pair_placement()


def test_pair_swaps_the_cores_within_a_round_and_restores_the_rounds_placement(monkeypatch):
    """swap_s: while a round runs, the two sides trade cores every swap_s seconds (always on
    different cores, the front end with side a), and the round's placement comes back after."""
    import threading
    import time

    from profiler.bench import pairs

    monkeypatch.setattr(pairs, "available_cores", lambda: [0, 1])
    calls: list[tuple[int, frozenset]] = []
    lock = threading.Lock()

    def record(pid: int, cores: set[int]) -> None:
        with lock:
            calls.append((pid, frozenset(cores)))

    monkeypatch.setattr(pairs, "pin_process", record)
    pair = pairs.pair_placement(swap_s=0.01)
    assert "every 0.01 s within it" in pair.describe()
    with pair.swapping(1, 101, 202):  # round 1: side a (101) starts on core 1
        deadline = time.monotonic() + 5.0
        while len(calls) < 3 * 4 and time.monotonic() < deadline:
            time.sleep(0.005)
    applies = [dict(calls[i:i + 3]) for i in range(0, len(calls) - len(calls) % 3, 3)]
    assert len(applies) >= 4 and len(calls) % 3 == 0
    a_cores = [apply[101] for apply in applies]
    for apply in applies:
        assert apply[101].isdisjoint(apply[202]) and apply[os.getpid()] == apply[101]
    assert a_cores[:-1] == [frozenset({0}), frozenset({1})] * (len(a_cores[:-1]) // 2) \
        + [frozenset({0})] * (len(a_cores[:-1]) % 2)  # swapped from round 1's {1}, in turn
    assert a_cores[-1] == frozenset({1})  # round 1's placement restored on leaving
    calls.clear()
    with pairs.pair_placement().swapping(0, 101, 202):  # swap_s 0: nothing moves
        time.sleep(0.05)
    assert calls == []


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="running both at once needs 2 cores")
def test_concurrent_pairs_train_the_same_curve_at_the_same_time(tmp_path, capsys):
    """--concurrent: the worker and the reference run at once (their measured windows inside each
    other's run), both train the same curve including the padding steps, in fresh processes each
    round with --restart-every 1, and the bench's process gets its own cores back afterwards."""
    from profiler.cli import main

    # steps long enough (tens of ms) that the reference's go, a pipe's latency after the
    # worker's first sample, lands within the warmup; 15 padding steps keep each window inside
    # the other's run even when a busy machine slows one side to half speed (such a round would
    # be dropped, rightly, and the test would have nothing to compare)
    config = run_config(steps=10, batch_size=8, seq_len=64, eval_interval=4)
    path = tmp_path / "tiny.toml"
    config.save(path)
    before = os.sched_getaffinity(0)
    code = main(["bench", "overhead", str(path), "--steps", "10", "--warmup", "5", "--repeats", "2",
                 "--warmup-rounds", "0", "--profile-steps", "2", "--concurrent", "--pad-steps",
                 "15", "--cost-repeats", "1", "--restart-every", "1", "--json"])
    assert code == 0
    assert os.sched_getaffinity(0) == before
    report = json.loads(capsys.readouterr().out)
    assert report["pairing"] == "concurrent" and report["pad_steps"] == 15
    main_pair = report["comparison"]["candidates"]
    references = main_pair["reference loop"]["measurements"]
    workers_ = main_pair["EffiScope worker"]["measurements"]
    assert len(references) == len(workers_) == 2
    assert [m["block"] for m in workers_] == [0, 1] and report["restart_every"] == 1
    for ref, work in zip(references, workers_, strict=True):
        assert len(ref["losses"]) == 25 and ref["losses"] == work["losses"]
        assert [s for s, _ in ref["val_losses"]] == [0, 4, 8, 12, 16, 20, 24, 25]
        a, b = ref["clock"], work["clock"]
        assert b["first"] <= a["start"] < a["end"] <= b["last"]
        assert a["first"] <= b["start"] < b["end"] <= a["last"]
        for side in (ref, work):  # the measured window's steps, and nothing outside it
            assert len(side["step_s"]) == 10 - 5
            assert sum(side["step_s"]) == pytest.approx(side["clock"]["end"] - side["clock"]["start"])
    assert report["loss_curves"]["equal"] is True and report["loss_curves"]["compared"] == 4
    assert "swapped every round" in report["placement"]
    assert report["cost_loss_curves"]["equal"] is True


def test_the_reference_pipe_is_checked_on_both_sides():
    """A malformed request gets an error result and the process serves the next line; a result
    whose fields are wrong reaches the bench as an error sentence, never as a speed."""
    from profiler.wire.client import worker_env

    proc = subprocess.run(
        [sys.executable, "-m", "profiler.bench.reference", "--serve"], capture_output=True,
        text=True, timeout=120, env=worker_env(),
        input='{"config": {}, "window_steps": "3"}\nnot json\n[1, 2]\n')
    results = [reference.received(line) for line in proc.stdout.splitlines()
               if line.startswith(reference.RESULT_PREFIX)]
    assert proc.returncode == 0 and len(results) == 3  # one answer per line, the process lived
    assert "window_steps must be an integer" in results[0]["error"]
    assert "JSONDecodeError" in results[1]["error"]
    assert "must be a table" in results[2]["error"]

    good = {"tokens_per_s": 900.0, "capture_window_s": 0.5,
            "clock": {"first": 1.0, "start": 2.0, "end": 3.0, "last": 3.5},
            "step_s": [0.1, 0.1], "losses": [4.2, 4.1], "val_losses": [[0, 4.3]],
            "torch_threads": 1}
    line = reference.RESULT_PREFIX + json.dumps(good)
    assert reference.received(line) == good
    for broken, says in (({**good, "tokens_per_s": "fast"}, "tokens_per_s must be a number"),
                         ({**good, "tokens_per_s": -1.0}, "tokens_per_s is -1.0"),
                         ({k: v for k, v in good.items() if k != "clock"}, "lacks its field"),
                         ({**good, "step_s": [0.1, None]}, "step_s[1] must be a number"),
                         ({"error": 3}, "error must be a string")):
        error = reference.received(reference.RESULT_PREFIX + json.dumps(broken))["error"]
        assert error.startswith("the reference process sent a malformed result") and says in error
    assert "malformed" in reference.received(reference.RESULT_PREFIX + "{")["error"]


def test_restarting_needs_the_concurrent_pairs_and_says_so(capsys):
    from profiler.cli import main

    assert main(["bench", "overhead", "--restart-every", "4"]) == 2
    assert "add --concurrent" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # the parser's bound (issue 34)
        main(["bench", "overhead", "--concurrent", "--restart-every", "-1"])
    assert refused.value.code == 2
    assert "argument --restart-every: must be 0 or more, got -1" in capsys.readouterr().err
