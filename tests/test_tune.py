"""Auto-tune: the search on a deterministic cost model (no torch), and end to end on gpt-nano."""

from __future__ import annotations

import hashlib

import pytest

from profiler.config import RunConfig, validate
from profiler.tune import report as tune_report
from profiler.tune import rounds
from profiler.tune import search as tsearch
from profiler.tune import space as tspace

GPU_CAPS = {"device": "cuda", "cuda": True, "cuda_capability": 9.0, "bf16": True,
            "compiler": True, "distributed": True, "packages": [], "fused": ["adamw", "adam", "sgd"]}
CPU_CAPS = {"device": "cpu", "cuda": False, "cuda_capability": None, "bf16": True,
            "compiler": False, "distributed": True, "packages": [], "fused": ["adamw"]}
GiB = 2**30


def nano(batch: int = 16) -> RunConfig:
    config = RunConfig()
    config.model.preset = "gpt-nano"
    config.train.batch_size = batch
    return validate(config)


def gpu_space() -> tspace.Space:
    return tspace.build_space(nano(), GPU_CAPS, {"batch": None, "checkpoint": None,
                                                 "precision": None, "optimizer": None})


# A known surface: tokens/s is a product of one factor per dimension. Unconstrained, micro-batch
# 16 would win; the memory model below makes it not fit, so the optimum that fits is 8x2 + bf16 +
# no checkpointing + fused.
SPEED = {"batch": {"16x1": 1.30, "8x2": 1.20, "4x4": 1.00, "2x8": 0.80},
         "checkpoint": {"off": 1.00, "1": 0.70, "2": 0.85},
         "precision": {"fp32": 1.00, "bf16": 1.45, "fp16": 1.35},
         "optimizer": {"auto": 1.00, "foreach": 1.02, "fused": 1.10}}
OPTIMUM = {"batch": "8x2", "checkpoint": "off", "precision": "bf16", "optimizer": "fused"}


def searched(candidate: tspace.Candidate) -> dict:
    return {dim: candidate.value(dim) for dim in OPTIMUM}


def fake_memory(candidate: tspace.Candidate) -> float:
    micro, _ = tspace.parse_pair(candidate.value("batch"))
    factor = {"off": 1.0, "1": 0.4, "2": 0.6}[candidate.value("checkpoint")]
    return micro * 1 * GiB * factor + 2 * GiB


def _noise(candidate: tspace.Candidate, steps: int) -> float:
    """Deterministic noise of +-2 % at 4 steps, shrinking with more steps."""
    digest = hashlib.sha256(f"{candidate.key}|{steps}".encode()).digest()
    unit = digest[0] / 255 * 2 - 1
    return 1 + unit * 0.02 * (4 / steps) ** 0.5


class FakeCost:
    """A deterministic cost model: throughput from SPEED, a trial costs 2 s + 0.1 s per step."""

    def __init__(self, fail: set[str] = frozenset()):
        self.calls: list[tuple[tspace.Candidate, int]] = []
        self.fail = fail

    def __call__(self, candidate: tspace.Candidate, steps: int) -> tsearch.Measurement:
        self.calls.append((candidate, steps))
        cost = 2.0 + 0.1 * steps
        if candidate.value("precision") in self.fail:
            return tsearch.Measurement(error="out of memory in the first step (fake)",
                                       cost_s=cost, fixed_cost_s=2.0)
        value = 1000.0 * _noise(candidate, steps)
        for dim, table in SPEED.items():
            value *= table[candidate.value(dim)]
        return tsearch.Measurement(value=value, ci_low=value * 0.98, ci_high=value * 1.02,
                                   peak_bytes=fake_memory(candidate), cost_s=cost,
                                   fixed_cost_s=2.0)


def run_search(evaluate, budget_s=10_000.0, limit=12 * GiB, **kw):
    space = gpu_space()
    return space, rounds.search(space.candidates(), evaluate, predict=fake_memory,
                                 memory_limit=limit, budget_s=budget_s, baseline=space.baseline,
                                 min_steps=4, eta=3, max_steps=36, **kw)


def test_search_finds_the_optimum_of_a_known_surface():
    evaluate = FakeCost()
    space, result = run_search(evaluate)
    assert searched(result.best) == OPTIMUM
    # Successive halving: far fewer trials at the longest rung than at the first.
    by_rung = {}
    for trial in result.trials:
        by_rung[trial.rung] = by_rung.get(trial.rung, 0) + 1
    assert by_rung[0] > by_rung[max(by_rung)] >= 2
    assert result.ranking[0]["rung"] == max(by_rung)
    assert space.label(result.best) == "micro-batch 8 x 2 accumulated + bf16 + fused AdamW"


def test_predicted_not_to_fit_is_never_launched():
    evaluate = FakeCost()
    space, result = run_search(evaluate)
    launched = {c for c, _ in evaluate.calls}
    pruned = {item["candidate"] for item in result.pruned}
    assert pruned, "the limit must prune something for this test to mean anything"
    assert not launched & pruned
    assert all(fake_memory(c) > 12 * GiB for c in pruned)
    # Without the limit the fastest of all (micro-batch 16) wins: the pruning changed the answer.
    _, free = run_search(FakeCost(), limit=None)
    assert free.best.value("batch") == "16x1" and not free.pruned


def test_a_failing_trial_does_not_stop_the_search():
    evaluate = FakeCost(fail={"fp16"})
    _, result = run_search(evaluate)
    assert result.failed and all(t.candidate.value("precision") == "fp16" for t in result.failed)
    assert all("out of memory" in t.measurement.error for t in result.failed)
    # Candidates after the first failure were still measured, and the optimum is still found.
    first_failure = result.failed[0].number
    assert any(t.number > first_failure and not t.failed for t in result.trials)
    assert searched(result.best) == OPTIMUM
    assert all(entry["candidate"].value("precision") != "fp16" for entry in result.ranking)


def test_an_evaluator_that_raises_is_a_failed_trial():
    def evaluate(candidate, steps):
        if candidate.value("optimizer") == "fused":
            raise RuntimeError("worker vanished")
        return FakeCost()(candidate, steps)

    _, result = run_search(evaluate)
    assert result.failed and "worker vanished" in result.failed[0].measurement.error
    assert result.best.value("optimizer") != "fused"


def test_budget_bounds_the_search():
    evaluate = FakeCost()
    _, result = run_search(evaluate, budget_s=60.0, limit=20 * GiB)  # the baseline fits
    assert result.not_tried, "a 60 s budget cannot measure every candidate"
    assert result.spent_s <= 60.0
    assert result.trials[0].candidate == gpu_space().baseline  # the config as given comes first
    _, ample = run_search(FakeCost())
    assert not ample.not_tried and ample.spent_s > result.spent_s


def test_global_batch_stays_constant_across_pairs():
    space = gpu_space()
    pairs = space.dimensions["batch"]
    assert pairs == ["16x1", "8x2", "4x4", "2x8"]
    seen = set()
    for candidate in space.candidates():
        config = space.config(candidate)
        assert tspace.global_batch(config) == 16
        seen.add((config.train.batch_size, tspace.micro_batches(config)))
    assert seen == {(16, 1), (8, 2), (4, 4), (2, 8)}
    with pytest.raises(tspace.SpaceError, match="global batch is 16"):
        tspace.build_space(nano(), GPU_CAPS, {"batch": ["3x3"]})


def test_baseline_is_the_config_as_given():
    base = nano(8)
    base.techniques = {"precision": {"dtype": "bf16"}, "grad_clip": {"max_norm": 1.0}}
    space = tspace.build_space(base, GPU_CAPS, {"precision": None, "checkpoint": None})
    assert space.config(space.baseline).to_dict() == base.to_dict()
    assert space.dimensions["precision"][0] == "bf16"
    other = next(c for c in space.candidates() if c.value("precision") == "fp32"
                 and c.value("checkpoint") == "2")
    config = space.config(other)
    assert "precision" not in config.techniques
    assert config.techniques["activation_checkpointing"] == {"every": 2}
    assert config.techniques["grad_clip"] == {"max_norm": 1.0}  # what is not tuned stays


def test_space_keeps_only_what_this_machine_can_run():
    space = tspace.build_space(nano(), CPU_CAPS)
    assert "fp16" not in space.dimensions["precision"]
    assert "compile" not in space.dimensions  # no compiler: one value left, not searched
    reasons = {(i["dimension"], i["value"]): i["reason"] for i in space.left_out}
    assert "CUDA" in reasons[("precision", "fp16")]
    assert ("attention", "flash") in reasons and ("compile", "default") in reasons
    assert "parallel" not in space.dimensions  # one process
    gpu = tspace.build_space(nano(), GPU_CAPS)
    assert {"fp16", "bf16"} <= set(gpu.dimensions["precision"])
    assert "flash" in gpu.dimensions["attention"] and "compile" in gpu.dimensions


def test_parse_space_says_what_to_fix():
    assert tspace.parse_space(["batch=4x1,2x2", "optimizer"], "train") == {
        "batch": ["4x1", "2x2"], "optimizer": None}
    assert tspace.parse_space(None, "train") is None
    with pytest.raises(tspace.SpaceError, match="not a dimension of a train run"):
        tspace.parse_space(["quantize"], "train")
    with pytest.raises(tspace.SpaceError, match="give values after"):
        tspace.parse_space(["batch="], "train")
    with pytest.raises(tspace.SpaceError, match="not one of fp32, bf16, fp16"):
        tspace.build_space(nano(), CPU_CAPS, {"precision": ["fp8"]})


def test_final_check_judges_the_finalists_interleaved():
    from profiler.tune import runner

    space = gpu_space()
    best = next(c for c in space.candidates() if searched(c) == OPTIMUM)
    order = []

    def evaluate(candidate, steps, final=False):
        order.append(candidate)
        speed = 1400.0 if candidate == best else 1000.0
        samples = [speed * (1 + 0.01 * ((i * 7) % 5 - 2)) for i in range(steps)]
        return tsearch.Measurement(value=speed, samples=samples, cost_s=1.0,
                                   peak_bytes=6 * GiB if candidate == best else 10 * GiB)

    runner_up = next(c for c in space.candidates() if c not in (best, space.baseline))
    final = runner.final_check(evaluate, {"best": best, "runner-up": runner_up,
                                          "baseline": space.baseline},
                               steps=8, rounds=2, higher_is_better=True, log=lambda _: None)
    assert order[:3] == [best, runner_up, space.baseline]  # round 1 in order,
    assert order[3:] == [runner_up, space.baseline, best]  # round 2 rotated
    assert final["winner"] == "best"
    assert final["comparisons"]["baseline"]["verdict"] == "better"
    report = {"final": final, "chosen": {"label": "bf16 + fused AdamW"}, "stop_reason": "",
              "peak_label": "peak torch allocated"}
    sentence = tune_report.verdict_sentence(report)
    assert sentence.startswith("bf16 + fused AdamW: 1.40x the baseline (±")
    assert "40 % less memory" in sentence and "runner-up significantly behind" in sentence


def test_cli_refuses_bad_input_with_a_sentence(capsys):
    from profiler.cli import main

    assert main(["tune", "nano", "--memory-limit", "lots"]) == 2
    assert "--memory-limit: give a size like 20GiB" in capsys.readouterr().err
    assert main(["tune", "nano", "--budget", "soon"]) == 2
    assert "--budget: give a duration like 15m" in capsys.readouterr().err
    assert main(["tune", "nano", "--space", "batch=5x3"]) == 2
    assert "global batch is 16" in capsys.readouterr().err


def test_tune_end_to_end_on_gpt_nano(tmp_path, effiscope_home, capsys):
    """A real tune on CPU (tiny space, few steps); its chosen config runs with `effiscope run`."""
    import json

    from profiler.cli import main
    from profiler.store import RunStore

    base = tmp_path / "tiny.toml"
    base.write_text('name = "tiny"\nworkload = "train"\ndevice = "cpu"\n[model]\n'
                    'preset = "gpt-nano"\n[data]\nsource = "random"\n[train]\nbatch_size = 4\n'
                    'seq_len = 32\neval_interval = 0\n[limits]\nsteps = 10\nwarmup_steps = 1\n')
    code = main(["tune", str(base), "--space", "batch=4x1,2x2", "--budget", "2m",
                 "--min-steps", "3", "--max-steps", "6", "--final-rounds", "1", "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads(out)
    store = RunStore()
    trials = report["trials"]
    assert len(trials) == 2 and not report["failed"] and not report["pruned"]
    # 4x1 and 2x2 differ only in what a running worker switches: segments of one warm run,
    # stored and grouped under the tune run, ended by the tuner when its windows were done.
    assert len({t["run_id"] for t in trials}) == 1
    run = store.open_run(trials[0]["run_id"])
    assert f"tune:{report['tune_run']}" in run.meta()["tags"]
    assert run.summary()["status"] == "stopped" and not run.summary().get("error")
    for trial in trials:
        assert trial["effective_batch"] == 4  # the global batch is kept by every pair
        assert trial["predicted_bytes"] > 0 and trial["distribution"]["n"] == 3
    switched = [m["params"] for m in run.messages() if m.get("type") == "event"
                and m.get("kind") == "toggle" and m.get("technique") == "train"]
    assert {"batch_size": 2} in switched and {"batch_size": 4} in switched
    final = report["final"]
    # Two finalists (the baseline is one of them, as best or as itself), measured again.
    assert len(final["roles"]) == 2 and all(r["runs"] for r in final["roles"].values())
    labels = {report["chosen"]["label"]} | {row["label"] for row in report["ranking"]}
    assert labels == {"baseline", "micro-batch 2 x 2 accumulated"}
    assert report["sentence"].startswith(report["chosen"]["label"]) or (
        report["chosen"]["label"] == "baseline"
        and report["sentence"].startswith("the config as given"))
    tune_summary = store.open_run(report["tune_run"]).summary()  # the history shows the answer
    winner = final["roles"][final["winner"]]["distribution"]["median"]
    assert tune_summary["figures"]["tokens_per_s"]["value"] == winner
    path = report["chosen"]["config_file"]
    assert path.endswith("best.toml")
    assert main(["run", path, "--steps", "3", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "completed" and summary["effective_batch"] == 4
    chosen = report["chosen"]["candidate"]["batch"]
    assert summary["figures"]["tokens_per_s"]["value"] > 0
    ran = store.open_run(summary["run_id"]).config_dict()
    assert f"{ran['train']['batch_size']}x" in chosen + "x"


def test_parallel_dimension_when_the_job_has_processes():
    from profiler.tune import runner

    base = nano(8)
    base.launch.nproc_per_node = 2
    base.techniques = {"ddp": {}}
    base = validate(base)
    space = tspace.build_space(base, GPU_CAPS, {"parallel": None, "batch": ["8x1", "4x2"]})
    assert space.dimensions["parallel"] == ["ddp", "fsdp"]
    assert "parallel" not in tspace.build_space(nano(), GPU_CAPS).dimensions  # one process
    predicted = {}
    for candidate in space.candidates():
        config = space.config(candidate)
        assert tspace.global_batch(config) == 16  # 8 per process x 2 processes, every pair
        assert ("ddp" in config.techniques) != ("fsdp" in config.techniques)
        predicted[(candidate.value("parallel"), candidate.value("batch"))] = \
            runner.predicted_peak(space, candidate)
    # FSDP shards weights, gradients and optimizer states: predicted lower than DDP.
    assert predicted[("fsdp", "8x1")] < predicted[("ddp", "8x1")]
    assert predicted[("ddp", "4x2")] < predicted[("ddp", "8x1")]  # half the activations


def test_a_stop_request_ends_the_search_and_keeps_what_was_measured():
    calls = []

    def evaluate(candidate, steps):
        calls.append(candidate)
        return FakeCost()(candidate, steps)

    space = gpu_space()
    result = rounds.search(space.candidates(), evaluate, predict=fake_memory, memory_limit=None,
                            budget_s=1e9, baseline=space.baseline,
                            should_stop=lambda: len(calls) >= 5)
    assert len(result.trials) == 5 and result.stop_reason == "stopped on request"
    assert len(result.not_tried) == len(space.candidates()) - 5 and result.best is not None


def test_first_rung_order_baseline_then_single_changes_cheap_dimensions_first():
    space = tspace.build_space(nano(), GPU_CAPS, {"batch": ["16x1", "8x2"],
                                                  "compile": None, "precision": ["fp32", "bf16"]})
    ordered = tsearch.priority(space.candidates(), space.baseline)
    labels = [space.label(c) for c in ordered]
    assert labels[:4] == ["baseline", "micro-batch 8 x 2 accumulated", "bf16",
                          "torch.compile (default)"]
    assert all(" + " in label for label in labels[4:])  # combinations after single changes


def test_the_config_as_given_keeps_its_name_in_the_final_check():

    space = gpu_space()
    other = space.candidates()[1]
    trial = lambda c, n: tsearch.Trial(n, c, 0, 6, tsearch.Measurement(value=1.0))  # noqa: E731
    result = tsearch.SearchResult([], [], [], [{"candidate": space.baseline, "trial": trial(
        space.baseline, 1)}, {"candidate": other, "trial": trial(other, 2)}], [], 0, 1, {}, "")
    assert tune_report.finalists(result, space) == {"runner-up": other, "baseline": space.baseline}


def test_within_noise_of_the_baseline_keeps_the_config_as_given():
    from profiler.tune import runner

    space = gpu_space()
    other = next(c for c in space.candidates() if c != space.baseline)

    def evaluate(candidate, steps, final=False):
        speed = 1010.0 if candidate == other else 1000.0  # 1 %: inside a +-5 % step noise
        samples = [speed * (1 + 0.05 * ((i * 7) % 5 - 2) / 2) for i in range(steps)]
        return tsearch.Measurement(value=speed, samples=samples, cost_s=1.0, peak_bytes=GiB)

    final = runner.final_check(evaluate, {"best": other, "baseline": space.baseline}, steps=12,
                               rounds=2, higher_is_better=True, log=lambda _: None)
    assert final["winner"] == "best"
    assert final["comparisons"]["baseline"]["verdict"] == "within noise"
    trial = lambda c, n: tsearch.Trial(n, c, 0, 6, tsearch.Measurement(value=1.0))  # noqa: E731
    result = tsearch.SearchResult([], [], [], [{"candidate": other, "trial": trial(other, 1)},
                                               {"candidate": space.baseline,
                                                "trial": trial(space.baseline, 2)}],
                                  [], 0, 1, {}, "")

    class Run:
        run_id, path = "tune-x", "."

    report = tune_report.build_report(space.base, space, runner.Settings(), "tokens_per_s", True, None,
                            "n/a", result, final, Run(), 1.0)
    assert report["chosen"]["candidate"] == space.baseline.as_dict()
    assert report["sentence"].startswith("the config as given (baseline): nothing was "
                                         f"measurably faster (the fastest measured, "
                                         f"{space.label(other)}: 1.01x the baseline")


def test_default_memory_limit_is_free_memory_minus_a_stated_margin(monkeypatch):
    from profiler.measure import system
    from profiler.tune import runner

    monkeypatch.setattr(system, "gpus", lambda: [{"index": 0, "memory_free_bytes": 80 * GiB},
                                                 {"index": 1, "memory_free_bytes": 10 * GiB}])
    config = nano()
    config.device = "cuda:1"
    limit, how = runner.default_memory_limit(config, GPU_CAPS)
    assert limit == 9 * GiB  # 10 GiB free on GPU 1, minus 10 %
    assert "free memory of GPU 1" in how and "10 % of it" in how
    config.device = "cuda"
    assert runner.default_memory_limit(config, GPU_CAPS)[0] == 72 * GiB
    monkeypatch.setattr(system, "gpus", lambda: [])
    limit, how = runner.default_memory_limit(config, GPU_CAPS)
    assert limit is None and "no candidate is pruned" in how
    cpu_limit, cpu_how = runner.default_memory_limit(nano(), CPU_CAPS)
    assert cpu_limit > 0 and "available RAM" in cpu_how


def test_trial_configs_measure_what_the_rung_asks():
    from profiler.tune import runner

    train = nano()
    train.techniques = {"compile": {"mode": "default"}}
    space = tspace.build_space(train, GPU_CAPS, {"batch": ["16x1", "8x2"]})
    config = runner.trial_config(space, space.baseline, 12, final=False)
    assert config.limits.warmup_steps == runner.COMPILE_WARMUP_STEPS
    assert config.limits.steps == runner.COMPILE_WARMUP_STEPS + 12
    assert config.train.eval_interval == 0 and not config.train.save_checkpoint
    infer = nano()
    infer.workload = "infer"
    infer.infer.eval_tokens = 2048
    infer = validate(infer)
    space = tspace.build_space(infer, CPU_CAPS, {"batch": ["1", "4"], "quantize": None})
    assert space.dimensions["batch"] == ["1", "4"]
    assert "int8_dynamic" in space.dimensions["quantize"]
    assert any(i["value"] == "int4_weight_only" for i in space.left_out)  # needs CUDA
    quantized = next(c for c in space.candidates() if c.value("quantize") == "int8_dynamic"
                     and c.value("batch") == "4")
    trial = runner.trial_config(space, quantized, 7, final=False)
    assert trial.infer.repeats == 7 and trial.infer.batch_size == 4
    assert trial.infer.eval_tokens == 0  # quality is scored in the final re-measure only
    assert "quantize_int8_dynamic" in trial.techniques
    assert runner.trial_config(space, quantized, 7, final=True).infer.eval_tokens == 2048
    # int8 dynamic quantization reads its scales from the weights, which the memory trace has
    # not: no prediction, so the candidate is tried; the plain one is traced
    assert runner.predicted_peak(space, quantized) is None
    plain = next(c for c in space.candidates() if c.value("quantize") == "none"
                 and c.value("batch") == "4")
    assert runner.predicted_peak(space, plain) > 0


def _report_of(space, ranking_candidates, final, stopped):
    from profiler.tune import runner

    trial = lambda c, n: tsearch.Trial(n, c, 0, 6, tsearch.Measurement(value=1.0))  # noqa: E731
    ranking = [{"candidate": c, "trial": trial(c, i)} for i, c in enumerate(ranking_candidates)]
    result = tsearch.SearchResult([r["trial"] for r in ranking], [], [], ranking, [], 0, 1, {},
                                  "stopped on request" if stopped else "")

    class Run:
        run_id, path = "tune-x", "."

    return tune_report.build_report(space.base, space, runner.Settings(), "tokens_per_s", True,
                                    None, "n/a", result, final, Run(), 1.0, stopped=stopped)


def test_a_stopped_tune_says_what_it_measured_and_answers_nothing_from_one():
    space = gpu_space()
    one = _report_of(space, [space.baseline], None, stopped=True)
    assert one["chosen"] is None
    assert one["sentence"] == (f"stopped after measuring 1 of {space.size()} candidate: no answer "
                               "(one measured candidate has nothing to be compared with)")
    assert "no candidate beat it" not in tune_report.format_report(one)
    others = [c for c in space.candidates() if c != space.baseline][:2]
    three = _report_of(space, [others[0], space.baseline, others[1]], None, stopped=True)
    assert three["chosen"] is None  # no best.toml from an unconfirmed search
    assert three["sentence"].startswith(f"stopped after measuring 3 of {space.size()} "
                                        "candidates, before the final re-measure: no answer")
    alone = _report_of(space, [space.baseline], None, stopped=False)  # the rest failed or pruned
    assert alone["chosen"] is None and alone["sentence"].startswith("no answer: only one")


def test_a_final_re_measure_on_a_busy_machine_gives_no_verdict():
    from profiler.tune import runner

    space = gpu_space()
    other = next(c for c in space.candidates() if c != space.baseline)

    def evaluate(candidate, steps, final=False):
        speed = 1400.0 if candidate == other else 1000.0  # clearly faster ...
        samples = [speed * (1 + 0.01 * ((i * 7) % 5 - 2)) for i in range(steps)]
        busy = "trial #2: other processes used 1.7 of 2 cores during this run" \
            if candidate == space.baseline else ""  # ... but measured beside other work
        return tsearch.Measurement(value=speed, samples=samples, cost_s=1.0, peak_bytes=GiB,
                                   extra={"busy": busy})

    final = runner.final_check(evaluate, {"best": other, "baseline": space.baseline}, steps=12,
                               rounds=2, higher_is_better=True, log=lambda _: None)
    against = final["comparisons"]["baseline"]
    assert against["verdict"] == "machine busy" and "1.7 of 2 cores" in against["reason"]
    report = _report_of(space, [other, space.baseline], final, stopped=False)
    assert report["chosen"]["candidate"] == space.baseline.as_dict()  # not measurably faster
    assert "machine busy: no verdict" in report["sentence"]


def test_an_hf_space_is_pruned_by_its_memory_trace():
    from profiler.engine import memory_trace
    from profiler.tune import runner
    from tests.hf_fixtures import hf_config

    base = validate(hf_config("llama"))
    space = tspace.build_space(base, CPU_CAPS, {"batch": ["8x1", "2x4"]})
    by_batch = {c.value("batch"): c for c in space.candidates()}
    # the runner asks `effiscope estimate` in a child (one here: the other traced in-process)
    big = runner.predicted_peak(space, by_batch["8x1"])
    assert big == memory_trace.trace(space.config(by_batch["8x1"]))["peak"]
    small = memory_trace.trace(space.config(by_batch["2x4"]))["peak"]
    assert small < big  # a quarter of the activations per micro-batch
    peaks = {"8x1": big, "2x4": small}
    keep, pruned, _ = tsearch.prune(space.candidates(), lambda c: peaks[c.value("batch")],
                                    (small + big) / 2)
    assert [c.value("batch") for c in keep] == ["2x4"]
    assert [p["candidate"].value("batch") for p in pruned] == ["8x1"]
