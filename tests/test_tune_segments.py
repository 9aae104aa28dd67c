"""Segment trials of the tuner: the worker's mid-run micro-batch change, the grouping of
candidates into warm runs, the driver of a warm run's windows, and the search over rounds."""

from __future__ import annotations

from profiler.config import validate
from profiler.engine.workloads import train
from tests.helpers import run_config


class SetMany:
    """A front end that sends several mid-run commands at its `step`-th poll."""

    should_stop = False
    dist = None

    def __init__(self, at: dict[int, list[dict]]):
        self.at, self.calls = at, 0

    def poll(self) -> list:
        self.calls += 1
        return [dict(c) for c in self.at.get(self.calls, [])]


def test_a_train_run_changes_its_micro_batch_mid_run_at_a_constant_global_batch():
    config = run_config(8, eval_interval=0, batch_size=4, seq_len=16)
    config.limits.warmup_steps = 1
    config.data.max_train_bytes = 40_000
    validate(config)
    messages: list[dict] = []
    # Sent at the second poll for step 4: the worker holds them until then.
    switch = [{"type": "set", "technique": "train", "params": {"batch_size": 2}, "step": 4},
              {"type": "set", "technique": "grad_accumulation", "params": {"micro_batches": 2},
               "step": 4}]
    bad = [{"type": "set", "technique": "train", "params": {"batch_size": 0}},
           {"type": "set", "technique": "train", "params": {"batch_size": 2, "seq_len": 8}}]
    summary = train.run(config, messages.append, SetMany({2: switch, 6: bad}))
    toggles = [m for m in messages if m["type"] == "event" and m["kind"] == "toggle"]
    assert [t["technique"] for t in toggles] == ["train", "grad_accumulation"]
    assert "micro-batch 4 -> 2 sequences" in toggles[0]["message"]
    # 2 x 2 sequences of 16 tokens: the global batch of the config's 4 x 1, kept.
    assert toggles[-1]["tokens_per_step"] == 4 * 16
    parts = summary["segments"]
    assert [p["start_step"] for p in parts] == [1, 4]
    assert {p["figures"]["tokens_per_step"]["value"] for p in parts} == {4 * 16}
    refused = [m for m in messages if m["type"] == "event" and m["kind"] == "refused"]
    assert len(refused) == 2 and all("batch_size" in r["message"] for r in refused)
    assert summary["effective_batch"] == 4 and config.train.batch_size == 2


# --- a warm worker simulated in this process ------------------------------------------------------
import hashlib  # noqa: E402

from profiler.figures import stats  # noqa: E402
from profiler.tune import devices as tdevices  # noqa: E402
from profiler.tune import report as tune_report  # noqa: E402
from profiler.tune import rounds, toggles, warm  # noqa: E402
from profiler.tune import space as tspace  # noqa: E402
from profiler.wire import protocol  # noqa: E402
from tests.test_tune import GPU_CAPS, SPEED, nano, searched  # noqa: E402

SWITCHED = {"train", "grad_accumulation", "activation_checkpointing", "precision", "attention"}


def surface(state: dict) -> float:
    """tokens/s of a configuration: test_tune's known surface (optimum 16x1 + bf16 + fused)."""
    value = 1000.0
    for dim, table in SPEED.items():
        value *= table[state[dim]]
    return value


def jitter(key: str) -> float:
    digest = hashlib.sha256(key.encode()).digest()
    return 1 + (digest[0] / 255 * 2 - 1) * 0.01


def state_of(config: dict) -> dict:
    tech = config["techniques"]
    accumulation = (tech.get("grad_accumulation") or {}).get("micro_batches", 1)
    every = (tech.get("activation_checkpointing") or None)
    return {"batch": f"{config['train']['batch_size']}x{accumulation}",
            "checkpoint": "off" if every is None else str(every.get("every", 1)),
            "precision": (tech.get("precision") or {}).get("dtype", "fp32")
            if "precision" in tech else "fp32",
            "optimizer": (tech.get("optimizer") or {}).get("implementation", "auto")}


def switch(state: dict, command: dict) -> None:
    name, params = command["technique"], command["params"]
    on = params.get("enabled", True)
    if name == "train":
        state["batch"] = f"{params['batch_size']}x{state['batch'].split('x')[1]}"
    elif name == "grad_accumulation":
        state["batch"] = f"{state['batch'].split('x')[0]}x{params['micro_batches'] if on else 1}"
    elif name == "activation_checkpointing":
        state["checkpoint"] = str(params["every"]) if on else "off"
    elif name == "precision":
        state["precision"] = params["dtype"] if on else "fp32"


class FakeLauncher:
    """A device whose worker is simulated: the known surface, a drift over each run (3 % slower
    by its end), commands seen at the second poll after they were sent (the next one has
    passed), a `set` with a step held until then, as a worker's."""

    def __init__(self, name: str = "fake", drift: float = 0.03):
        self.device = tdevices.Device(name)
        self.fresh = True
        self.runs: list[dict] = []
        self.drift = drift

    def configure(self, config):
        return config

    def own_peak(self, key, value):
        return key, value

    def __call__(self, config, recorder, on_message=None, interrupt=None) -> str:
        config = config.to_dict()
        state = state_of(config)
        run = {"config": config, "sets": [], "candidates": [dict(state)]}
        self.runs.append(run)
        limit, warmup = config["limits"]["steps"], config["limits"]["warmup_steps"]
        pending: list[tuple[int, dict]] = []

        def send(message: dict) -> None:
            recorder.handle_message(message)
            for command in (on_message(message) if on_message else None) or ():
                # it arrives after the next poll; a `set` with a step waits for that step
                pending.append((max(step + 2, command.get("step") or 0), command))

        step = 0
        send(protocol.started({"workload": "train", "steps": limit, "warmup_steps": warmup}))
        status = "completed"
        for step in range(1, limit + 1):
            due = [c for at, c in pending if at <= step]
            pending[:] = [(at, c) for at, c in pending if at > step]
            if any(c["type"] == "stop" for c in due):
                status = "stopped"
                break
            for command in due:
                run["sets"].append(command)
                switch(state, command)
                send(protocol.toggle(f"{command['technique']} changed", step=step,
                                     technique=command["technique"], params=command["params"]))
            if due:
                run["candidates"].append(dict(state))
            speed = surface(state) * (1 - self.drift * step / limit) * jitter(
                f"{recorder.run.run_id}|{step}")
            send(protocol.sample(step, step * 0.1, {"tokens_per_s": speed, "step_time_s": 0.1},
                                 "warmup" if step <= warmup else "measure"))
        measured = [m["metrics"]["tokens_per_s"] for m in recorder_samples(recorder)]
        send(protocol.done(status, {"workload": "train", "figures": {
            "tokens_per_s": stats.timed_figure(measured, "tokens/s", "fake")}}))
        return recorder.finish(0)


def recorder_samples(recorder) -> list[dict]:
    return [m for m in recorder.run.messages() if m.get("type") == "sample"
            and m.get("phase") == "measure"]


def fake_search(space, launcher, store, **kw):
    evaluator = warm.GroupEvaluator(space, store, "tune:test", "tokens_per_s", "tokens_per_s",
                                    log=lambda _: None, settle=1)
    measure = lambda cands, steps, rung: evaluator.measure(launcher, cands, steps)  # noqa: E731
    return rounds.halving(space.candidates(), lambda cs: toggles.groups(space, cs),
                          rounds.sequential(measure), budget_s=1e9, baseline=space.baseline,
                          min_steps=6, eta=3, max_steps=54, **kw)


def test_a_fake_cost_surface_finds_its_optimum_with_segment_trials(effiscope_home):
    from profiler.store import RunStore

    space = tspace.build_space(nano(), GPU_CAPS, {"batch": None, "checkpoint": None,
                                                  "precision": None, "optimizer": None})
    launcher = FakeLauncher()
    result = fake_search(space, launcher, RunStore())
    best = result["ranking"][0]["candidate"]
    assert searched(best) == {"batch": "16x1", "checkpoint": "off", "precision": "bf16",
                              "optimizer": "fused"}
    # 108 candidates, three optimizer kernels (a rebuild each): three warm runs at rung 0,
    # not 108 fresh workers; every candidate measured there, with an interval.
    assert len(space.candidates()) == 108
    rung0 = [t for t in result["trials"] if t.rung == 0]
    assert len(rung0) == 108 and len({t.measurement.run_id for t in rung0}) == 3
    assert all(t.measurement.extra["distribution"]["n"] == 6 for t in rung0)
    assert all(t.measurement.ci_low < t.measurement.value < t.measurement.ci_high
               for t in rung0)
    # Interleaved in rounds: each candidate's 6 steps come from two windows, A..Z then Z..A.
    first = launcher.runs[0]["candidates"]
    assert len(first) == 36 + 35 and first[:36] == list(reversed(first[35:]))
    assert len({tuple(sorted(s.items())) for s in first}) == 36
    assert all(t.measurement.extra["segment"]["windows"] == 2 for t in rung0)
    # Each switch was sent ahead with its step: one step per switch is left out (the step it
    # applies at), none is lost to the pipe's delay: 72 windows of 3, 70 switches.
    first_run = {t.measurement.run_id for t in rung0 if t.candidate == space.baseline}
    steps = sorted(s for t in rung0 if t.measurement.run_id in first_run
                   for s in t.measurement.extra["segment"]["steps"])
    assert len(steps) == 72 * 3 and steps[-1] - steps[0] + 1 == 72 * 3 + 70
    # Halving: fewer candidates at each rung.
    by_rung = [sum(1 for t in result["trials"] if t.rung == r) for r in range(3)]
    assert by_rung[0] > by_rung[1] > by_rung[2] >= 2
    # The tuner ends each warm run once its windows are measured: the stored run says so (not
    # "stopped on request", which reads as a user's stop).
    ended = RunStore().open_run(next(iter(first_run))).summary()
    assert (ended["status"], ended["end"]) == ("stopped",
                                               "ended by the tuner: every window was measured")


def test_candidates_that_need_a_rebuild_are_not_toggled(effiscope_home):
    from profiler.store import RunStore

    space = tspace.build_space(nano(), GPU_CAPS, {"batch": ["16x1", "8x2"],
                                                  "checkpoint": ["off", "1"], "compile": None})
    compiled = [c for c in space.candidates() if c.value("compile") != "off"]
    assert len(compiled) == 4
    assert all(toggles.why_rebuilt(space, c).startswith("torch.compile") for c in compiled)
    groups = toggles.groups(space, space.candidates())
    assert sorted(len(g) for g in groups) == [1, 1, 1, 1, 4]  # one warm run, four of their own
    launcher = FakeLauncher()
    result = fake_search(space, launcher, RunStore())
    rung0 = [t for t in result["trials"] if t.rung == 0]
    assert len(rung0) == 8 and not result["failed"]
    for run in launcher.runs:
        if "compile" in run["config"]["techniques"]:
            assert run["sets"] == [] and len(run["candidates"]) == 1  # built for it, never switched
        assert {c["technique"] for c in run["sets"]} <= SWITCHED
    compiled_runs = {t.measurement.run_id for t in rung0 if t.candidate in compiled}
    shared_runs = {t.measurement.run_id for t in rung0 if t.candidate not in compiled}
    assert len(compiled_runs) == 4 and len(shared_runs) == 1
    # A job that mixes builds (two optimizer kernels) is measured as one warm run per build,
    # each built for its own candidates: a kernel is never assumed from another's run.
    kernels = tspace.build_space(nano(), GPU_CAPS, {"batch": ["16x1", "8x2"],
                                                    "optimizer": ["auto", "fused"]})
    mixed = FakeLauncher()
    evaluator = warm.GroupEvaluator(kernels, RunStore(), "tune:test", "tokens_per_s",
                                    "tokens_per_s", log=lambda _: None)
    found = evaluator.measure(mixed, kernels.candidates(), 3)
    assert len(mixed.runs) == 2 and all(m.error is None for m in found.values())
    for candidate in found:
        run = next(r for r in mixed.runs if candidate.as_dict()["optimizer"] == state_of(
            r["config"])["optimizer"])
        assert {c["optimizer"] for c in run["candidates"]} == {candidate.value("optimizer")}
    # A torchrun job or an inference run is never switched either.
    infer = nano()
    infer.workload = "infer"
    infer_space = tspace.build_space(infer, GPU_CAPS, {"batch": ["1", "4"]})
    assert all(toggles.why_rebuilt(infer_space, c) for c in infer_space.candidates())


def test_two_devices_run_two_trials_at_once_and_a_failing_devices_trial_moves():
    import threading

    together = threading.Barrier(2, timeout=10)  # broken unless two jobs run at the same time
    b_failed = threading.Event()
    ran: dict[str, list[str]] = {"a": [], "b": []}
    failed_on_b: list[str] = []

    def work(device, job):
        if job in ("first", "second"):
            together.wait()  # both first jobs are in flight at once, one per device
        elif device.name == "b":
            failed_on_b.append(job)
            b_failed.set()
            raise tdevices.DeviceLost("the ssh link dropped (fake)")
        else:
            b_failed.wait(10)  # device a holds its next job until b has taken (and lost) one
        ran[device.name].append(job)
        return f"{job} on {device.name}"

    a, b = tdevices.Device("a"), tdevices.Device("b")
    logged: list[str] = []
    pool = tdevices.DevicePool([a, b], log=logged.append)
    jobs = ["first", "second", "third", "fourth", "fifth"]
    results = pool.run(jobs, work)
    assert not together.broken
    assert sorted(ran["a"] + ran["b"]) == sorted(jobs)  # every job ran once, none lost
    assert len(failed_on_b) == 1 and failed_on_b[0] in ran["a"]  # the failed job moved to a
    assert results[jobs.index(failed_on_b[0])] == f"{failed_on_b[0]} on a"
    assert b.lost == "the ssh link dropped (fake)" and len(ran["b"]) == 1
    assert pool.live == [a] and "worker b left out" in logged[0]
    # With no device left, a job's result says why instead of hanging.
    results = pool.run(["sixth"], lambda device, job: (_ for _ in ()).throw(
        tdevices.DeviceLost("GPU fell off the bus (fake)")))
    assert isinstance(results[0], tdevices.DeviceLost) and "GPU fell off" in str(results[0])


def test_workers_parse_into_devices_with_a_sentence_for_bad_input():
    import pytest

    gpus = lambda: [{"index": 0, "uuid": "GPU-aaa", "name": "H100"},  # noqa: E731
                    {"index": 1, "uuid": "GPU-bbb", "name": "H100"}]
    found = tdevices.parse_workers("gpus", gpus=gpus, cores=[0, 1])
    assert [d.env["CUDA_VISIBLE_DEVICES"] for d in found] == ["GPU-aaa", "GPU-bbb"]
    assert all(d.overrides == {"device": "cuda"} for d in found)
    two = tdevices.parse_workers("cpus:2", cores=[0, 1, 2, 3])
    assert [d.cores for d in two] == [{0, 1}, {2, 3}] and two[0].env["OMP_NUM_THREADS"] == "2"
    hosts = tdevices.parse_workers("alice@box1, box2", cores=[0])
    assert [d.overrides["launch.ssh"] for d in hosts] == ["alice@box1", "box2"]
    for text, fix in (("cpus:3", "give cpus:2 or fewer"), ("cuda:7", "no GPU 7"),
                      ("cpu:5-1", "give cores as cpu:A-B"), ("", "name one or more"),
                      ("box;rm", "is not a worker"), ("cpus:1,cpus:1", "named twice")):
        with pytest.raises(ValueError, match=fix):
            tdevices.parse_workers(text, gpus=gpus, cores=[0, 1])


def test_a_refused_switch_is_sent_again_then_its_candidate_fails_and_the_run_goes_on():
    from profiler.tune import windows

    space = tspace.build_space(nano(), GPU_CAPS, {"precision": ["fp32", "bf16", "fp16"]})
    a, b, c = space.candidates()
    dims = toggles.varying([a, b, c])
    driver = windows.WindowDriver(windows.schedule([a, b, c], 2, rounds=1), "tokens_per_s", 1,
                                  lambda cand: toggles.set_commands(cand, dims))

    def sample(step):
        return driver.on_message(protocol.sample(step, 0.1, {"tokens_per_s": 100.0 + step},
                                                 "measure"))

    def event(kind, step, technique="precision"):
        return driver.on_message({"type": "event", "kind": kind, "step": step,
                                  "technique": technique, "message": f"{kind} (fake)"})

    first = driver.on_message(protocol.started({"workload": "train"}))
    assert first == [{"type": "set", "technique": "precision",
                      "params": {"enabled": True, "dtype": "bf16"}, "step": 4}]
    assert sample(2) == [] and sample(3) == []           # a's window: steps 2, 3
    again = event("refused", 4)                           # b refused at its planned step ...
    assert again and "step" not in again[0]              # ... sent again at once
    onward = event("refused", 5)                          # refused twice: b fails here
    assert onward == [{"type": "set", "technique": "precision",
                       "params": {"enabled": True, "dtype": "fp16"}, "step": 5}]
    assert event("toggle", 6) == []                       # c from step 6, settled at 7
    assert sample(6) == [] and sample(7) == [] and sample(8) == [{"type": "stop"}]
    found = driver.results()
    assert found[a]["samples"] == [102.0, 103.0] and found[c]["samples"] == [107.0, 108.0]
    assert "refused mid-run" in found[b]["error"] and found[b]["distribution"] == {"n": 0}


def test_a_resumed_tune_repeats_no_trial(effiscope_home):
    import threading

    from profiler.store import RunStore
    from profiler.tune import journal, runner, session

    store = RunStore()
    settings = runner.Settings(budget_s=1e9, memory_limit=1e15, min_steps=3, max_steps=9,
                               final_rounds=1, dims={"batch": ["16x1", "4x4"],
                                                     "checkpoint": ["off", "1"],
                                                     "optimizer": ["auto", "fused"]})
    # (no two candidates within the fake's noise where a rung cuts: the same jobs every time)

    def run(interrupt=None, stop_after=None, resume=None):
        launcher = FakeLauncher()
        seen = []

        def on_trial(trial, space):
            seen.append(trial)
            if stop_after is not None and len(seen) >= stop_after:
                interrupt.set()  # Ctrl-C after the first warm run's trials

        report = session.tune(nano(), settings, caps=GPU_CAPS, store=store, log=lambda _: None,
                              interrupt=interrupt, on_trial=on_trial, resume=resume,
                              launcher_for=lambda device: launcher)
        return report, launcher

    whole, straight = run()
    stop = threading.Event()
    first, before = run(stop, stop_after=1)
    assert first["stopped"] and first["final"] is None and len(before.runs) == 1
    folder = store.open_run(first["tune_run"]).path
    assert len((folder / journal.JOURNAL).read_text().splitlines()) == 4  # one warm run, 4 trials
    with open(folder / journal.JOURNAL, "a") as fh:  # a torn last line, a foreign candidate
        fh.write('{"part": "search", "candidate": "{\\"batch\\": \\"3x5\\"}", "rung": 0, '
                 '"steps": 3, "measurement": {}}\n{"part": "sea')
    config, kept = session.resume_settings(store, first["tune_run"])
    assert kept == settings
    second, after = run(resume=first["tune_run"])
    assert second["tune_run"] == first["tune_run"] and not second["stopped"]
    # Nothing measured twice: the first session's trials come back from the journal with their
    # runs; the resumed session ran only what was left, and both together ran what one
    # uninterrupted tune runs.
    old_runs = {t["run_id"] for t in first["trials"]}
    again = [(t["label"], t["rung"]) for t in second["trials"] if t["run_id"] in old_runs]
    assert sorted(again) == sorted((t["label"], t["rung"]) for t in first["trials"])
    fresh = [(t["label"], t["rung"]) for t in second["trials"] if t["run_id"] not in old_runs]
    assert not set(fresh) & set(again)
    assert len(before.runs) + len(after.runs) == len(straight.runs)
    assert second["resumed"] == {"from_journal": 4, "skipped_lines": 2}
    # What the resumed tune appended after the torn line reads back whole.
    again_loaded = journal.Journal(folder, tspace.build_space(nano(), GPU_CAPS, settings.dims))
    assert again_loaded.load() == len(second["trials"]) + 2 and again_loaded.skipped == 2
    assert "resumed: 4 measurement(s) taken from the tune's journal" in \
        tune_report.format_report(second)
    assert len(second["trials"]) == len(whole["trials"])
    assert second["chosen"]["label"] == whole["chosen"]["label"]
    assert store.open_run(first["tune_run"]).summary()["status"] == "completed"


def test_resume_says_what_to_fix(effiscope_home, capsys):
    from profiler.cli import main
    from profiler.store import RunStore

    plain = RunStore().create_run(nano())
    for args, fix in ((["--resume", "no-such-run"], "effiscope runs"),
                      (["--resume", plain.run_id], "not a tune run that can be resumed"),
                      (["nano", "--resume", plain.run_id], "give the tune run's id alone"),
                      ([], "give a preset or a TOML config"),
                      (["nano", "--workers", "cpus:0"], "give a whole number")):
        assert main(["tune", *args]) == 2
        assert fix in capsys.readouterr().err


def test_a_tune_on_two_devices_measures_at_once_and_moves_a_lost_devices_job(effiscope_home):
    import threading

    from profiler.store import RunStore
    from profiler.tune import runner, session

    together = threading.Barrier(2, timeout=10)  # broken unless both first jobs run at once

    class Flaky(FakeLauncher):
        def __call__(self, config, recorder, on_message=None, interrupt=None):
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls == 1:
                together.wait()
            elif self.device.name == "ssh box2":
                raise tdevices.DeviceLost("the link to box2 dropped (fake)")
            return super().__call__(config, recorder, on_message, interrupt)

    made: dict[str, Flaky] = {}

    def launcher_for(device):
        made[device.name] = Flaky(device.name)
        made[device.name].device = device
        return made[device.name]

    settings = runner.Settings(budget_s=1e9, memory_limit=1e15, min_steps=3, max_steps=9,
                               final_rounds=1, workers="box1,box2",
                               dims={"batch": ["16x1", "8x2", "4x4"], "checkpoint": ["off", "1"],
                                     "optimizer": ["auto", "fused"]})
    report = session.tune(nano(), settings, caps=GPU_CAPS, store=RunStore(), log=lambda _: None,
                          launcher_for=launcher_for)
    assert not together.broken and made["ssh box2"].calls == 2
    assert report["devices"] == [{"name": "ssh box1", "lost": None},
                                 {"name": "ssh box2", "lost": "the link to box2 dropped (fake)"}]
    assert not report["failed"] and len(made["ssh box2"].runs) == 1  # its second job went to box1
    assert "ssh box2 (left out: the link to box2 dropped (fake))" in \
        tune_report.format_report(report)
    assert searched(tspace.Candidate(tuple(report["chosen"]["candidate"].items()))) == {
        "batch": "16x1", "checkpoint": "off", "precision": "fp32", "optimizer": "fused"}


def test_a_kept_worker_outlives_the_pool_thread_that_started_it():
    """A worker asks the kernel to kill it when the thread that started it ends; the pool's
    threads end after every wave, so the launcher starts workers on a thread of its own."""
    import subprocess
    import sys
    import threading

    import pytest

    child = ("import ctypes, signal, sys, time\n"
             "ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)\n"  # PR_SET_PDEATHSIG
             "print('ready', flush=True)\n"
             "time.sleep(30)\n")
    launcher = warm.Launcher(tdevices.Device("this machine"))
    started = []

    def wave():  # as a pool thread: asks for a worker, then ends
        started.append(launcher.spawn(lambda: subprocess.Popen(
            [sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)))
        assert started[0].stdout.readline() == "ready\n"

    thread = threading.Thread(target=wave)
    thread.start()
    thread.join()
    proc = started[0]
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5)  # still alive after the thread that asked for it ended
    finally:
        proc.kill()
        proc.wait()
        launcher.release()


def test_without_segments_every_trial_is_a_run_of_its_own(effiscope_home):
    from profiler.store import RunStore
    from profiler.tune import runner, session

    launcher = FakeLauncher()
    settings = runner.Settings(budget_s=1e9, memory_limit=1e15, min_steps=3, max_steps=9,
                               final_rounds=1, segments=False,
                               dims={"batch": ["16x1", "4x4"], "checkpoint": ["off", "1"]})
    report = session.tune(nano(), settings, caps=GPU_CAPS, store=RunStore(), log=lambda _: None,
                          launcher_for=lambda device: launcher)
    runs = [t["run_id"] for t in report["trials"]]
    assert len(set(runs)) == len(runs) == 4 + 2  # rung 0's four, rung 1's two, none shared
    assert all(run["sets"] == [] for run in launcher.runs)  # nothing switched mid-run
