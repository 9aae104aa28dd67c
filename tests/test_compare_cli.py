"""`effiscope compare` and the reports give the app's verdict: a delta is "significant" only
outside the noise of both runs (profiler.figures.significance), "within noise" otherwise."""

from __future__ import annotations

import json

import pytest

from profiler import cli
from profiler.figures import significance
from profiler.figures.metrics import metric
from profiler.report import render
from profiler.report.load import load_run
from profiler.store import RunStore
from tests.helpers import noisy_run


def throughput_line(out: str) -> str:
    return next(line for line in out.splitlines() if line.strip().startswith("Throughput"))


def test_compare_prints_within_noise_for_the_same_distribution(capsys):
    store = RunStore()
    base, again = noisy_run(store, "base", 1000, 1), noisy_run(store, "again", 1000, 2)
    assert cli.main(["compare", again, "--baseline", base]) == 0
    out = capsys.readouterr().out
    line = throughput_line(out)
    assert "within noise" in line and "significant" not in line
    assert f"baseline: base ({base})" in out


def test_compare_prints_worse_for_a_slowed_run(capsys):
    store = RunStore()
    base, slow = noisy_run(store, "base", 1000, 3), noisy_run(store, "slow", 800, 4)
    assert cli.main(["compare", base, slow]) == 0  # the first run is the baseline
    out = capsys.readouterr().out
    line = throughput_line(out)
    assert "significant: worse" in line and "%" in line
    step = next(x for x in out.splitlines() if x.strip().startswith("Step time"))
    assert "significant: worse" in step  # longer steps are worse too
    assert cli.main(["compare", base, slow, "--json"]) == 0
    rows = {r["key"]: r for r in json.loads(capsys.readouterr().out)["deltas"]}
    assert [c["verdict"] for c in rows["tokens_per_s"]["cells"]] == [None, "worse"]
    assert rows["tokens_per_s"]["cells"][1]["change_pct"] < -10


def test_compare_needs_two_runs_and_known_ids(capsys):
    store = RunStore()
    base = noisy_run(store, "base", 1000, 5)
    assert cli.main(["compare", base]) == 2
    assert "two or more different runs" in capsys.readouterr().err
    assert cli.main(["compare", base, "--baseline", "no-such-run"]) == 2
    assert "no-such-run" in capsys.readouterr().err


def test_reports_and_app_share_one_verdict():
    """The app judges a StoredRun, the reports a loaded RunData: the same verdict either way."""
    store = RunStore()
    base, slow = noisy_run(store, "base", 1000, 6), noisy_run(store, "slow", 900, 7)
    stored = [store.open_run(r) for r in (base, slow)]
    loaded = [load_run(r) for r in stored]
    for key in ("tokens_per_s", "step_time_p50_s"):
        better = "higher" if key == "tokens_per_s" else "lower"
        app = significance.judge(key, better, *stored)
        report = significance.judge(key, better, *loaded)
        assert app["verdict"] == report["verdict"] == "worse"  # a planted 10 % slowdown
        assert app["p_value"] == report["p_value"]


def test_html_and_markdown_grey_within_noise_and_colour_significant_deltas():
    store = RunStore()
    base, again = noisy_run(store, "base", 1000, 8), noisy_run(store, "again", 1000, 9)
    slow = noisy_run(store, "slow", 800, 10)
    html = render([base, again], "html", store)
    table = html[html.index("Deltas against the baseline"):]
    throughput = table[table.index("Throughput"):table.index("</tr>", table.index("Throughput"))]
    assert 'class="noise"' in throughput and "(within noise)" in throughput
    assert 'class="better"' not in throughput and 'class="worse"' not in throughput
    html = render([base, slow], "html", store)
    table = html[html.index("Deltas against the baseline"):]
    throughput = table[table.index("Throughput"):table.index("</tr>", table.index("Throughput"))]
    assert 'class="worse"' in throughput and "within noise" not in throughput
    md = render([base, again], "md", store)
    assert "— within noise (p=" in next(x for x in md.splitlines() if x.startswith("| Throughput"))
    md = render([base, slow], "md", store)
    assert "— significant: worse (p&lt;0.001)" in next(x for x in md.splitlines()
                                                    if x.startswith("| Throughput"))


def segmented_run(store, name: str, parts: list[tuple[float, dict | None]], seed: int,
                  steps_per_part: int = 20, contended: bool = False) -> str:
    """A stored train run whose techniques changed mid-run: part i runs steps_per_part steps
    at its tokens/s (lognormal 5 %) after its change (technique, params), as a worker sends
    it; its summary's segments are profiler.figures.segments.split's, and it starts with the optimizer
    alone."""
    import random

    from profiler.figures.segments import split, step_record
    from tests.helpers import stored_run

    rng = random.Random(seed)
    start = {"optimizer": {"algorithm": "adamw", "implementation": "auto", "momentum": 0.9}}
    messages = [{"type": "hello", "protocol": 1, "versions": {}, "device": {}, "environment": {}},
                {"type": "started", "run": {"workload": "train", "device": "cpu",
                                            "warmup_steps": 2}}]
    records, toggles, active = [], [], {k: dict(v) for k, v in start.items()}
    step = 0
    for rate, change in parts:
        if change is not None:
            technique, params = change
            toggle = {"type": "event", "kind": "toggle", "step": step + 1,
                      "technique": technique, "params": params, "message": "changed"}
            toggles.append(toggle)
            messages.append(toggle)
            active[technique] = {**active.get(technique, {}), **params}
        for _ in range(steps_per_part):
            step += 1
            value = rate * rng.lognormvariate(0, 0.05)
            records.append(step_record(step, 256 / value, 256, 3.0))
            messages.append({"type": "sample", "step": step, "time": step * 0.1,
                             "phase": "warmup" if step <= 2 else "measure",
                             "metrics": {"tokens_per_s": value, "step_time_s": 256 / value,
                                         "loss_train": 3.0}})
    segments = split(records, toggles, 2)
    last = segments[-1]["figures"]
    summary = {"workload": "train", "steps_completed": step,
               "techniques": [{"name": k, "params": v} for k, v in start.items()],
               "active_techniques": active, "segments": segments if len(segments) > 1 else [],
               "figures": {"tokens_per_s": last["tokens_per_s"],
                           "step_time_p50_s": last["step_time_s"],
                           "loss_train_final": {"value": 3.0, "unit": "nats/token",
                                                "how": "mean of the last 10 steps"}}}
    if contended:
        summary.update(contended=True, contention_cores=2, contention_samples=12,
                       contention_other_cpu_cores_mean=1.7,
                       contention_sentence="other processes used 1.7 of 2 cores during this "
                                           "run: its speed figures are unreliable")
    messages.append({"type": "done", "status": "completed", "summary": summary})
    return stored_run(store, name, messages)


BF16 = ("precision", {"dtype": "bf16"})
CKPT = ("activation_checkpointing", {"every": 1})


def test_a_run_with_three_segments_is_compared_on_its_matching_segment(capsys):
    """fp32 1,000 -> bf16 1,500 -> bf16 + checkpointing 1,200 tokens/s, against single runs:
    a bf16 run at 1,500 is like its second segment (within noise), one at 1,300 is slower than
    that segment (not than the 1,200 headline), a compiled run matches no segment."""
    store = RunStore()
    three = segmented_run(store, "three", [(1000, None), (1500, BF16), (1200, CKPT)], seed=1)
    bf16 = segmented_run(store, "bf16", [(1500, BF16)], seed=2)
    slow_bf16 = segmented_run(store, "slow bf16", [(1300, BF16)], seed=3)
    compiled = segmented_run(store, "compiled", [(1500, ("compile", {}))], seed=4)
    runs = {r: load_run(store.open_run(r)) for r in (three, bf16, slow_bf16, compiled)}
    parts = runs[three].summary["segments"]
    assert len(parts) == 3

    like = significance.judge("tokens_per_s", "higher", runs[bf16], runs[three])
    assert like["verdict"] == "within noise", like
    assert like["value"] == parts[1]["figures"]["tokens_per_s"]["value"]  # segment 2, not 1,200
    assert "segment 2 of 3" in like["scope"] and "whole run" in like["scope"]
    slower = significance.judge("tokens_per_s", "higher", runs[three], runs[slow_bf16])
    assert slower["verdict"] == "worse" and slower["base_value"] == like["value"]
    assert slower["delta_pct"] == pytest.approx(-13, abs=4)  # 1,300 against 1,500

    none = significance.judge("tokens_per_s", "higher", runs[three], runs[compiled])
    assert none["verdict"] == "not comparable" and "no matching segment" in none["reason"]
    # A figure of the run's end describes its last segment, not the matching second one.
    loss = significance.judge("loss_train_final", "lower", runs[bf16], runs[three])
    assert loss["verdict"] == "not comparable" and "last segment" in loss["reason"]

    assert cli.main(["compare", bf16, three]) == 0
    out = capsys.readouterr().out
    assert "compared like with like: baseline: the whole run; other run: segment 2 of 3" in out
    assert "segments of three" in out and "precision (dtype = bf16)" in out


def test_two_identical_runs_one_contended_give_machine_busy(capsys):
    store = RunStore()
    quiet = segmented_run(store, "quiet", [(1000, None)], seed=5)
    busy = segmented_run(store, "busy", [(1000, None)], seed=5, contended=True)  # same numbers
    slowed = segmented_run(store, "slowed", [(100, None)], seed=6, contended=True)  # -90 %
    for other in (busy, slowed):
        found = significance.judge("tokens_per_s", "higher", store.open_run(quiet),
                                   store.open_run(other))
        assert found["verdict"] == "machine busy", found
        assert "1.7 of 2 cores" in significance.verdict_text(found)
    assert cli.main(["compare", quiet, slowed]) == 0
    out = capsys.readouterr().out
    assert "machine busy: no verdict" in throughput_line(out) and "significant" not in \
        throughput_line(out)
    assert "machine: busy: other processes used 1.7 of 2 cores" in out
    assert "machine: not recorded" in out  # the quiet run predates nothing: it has no readings
    # A figure counted from the tensors is not timed: a busy machine changes nothing of it.
    assert not metric("saved_for_backward_bytes").timed and metric("tokens_per_s").timed


def test_final_losses_at_different_steps_are_flagged():
    store = RunStore()
    long = segmented_run(store, "long", [(1000, None)], seed=7, steps_per_part=200)
    short = segmented_run(store, "short", [(1000, None)], seed=8, steps_per_part=65)
    found = significance.judge("loss_train_final", "lower", store.open_run(long),
                               store.open_run(short))
    assert found["verdict"] == "not comparable"
    assert "at steps 200 vs 65" in significance.verdict_text(found)
    same = significance.judge("loss_train_final", "lower", store.open_run(long),
                              store.open_run(long))
    assert same["verdict"] == "not comparable" and same["reason"].startswith("no spread")


def test_distill_and_train_never_share_a_loss_key():
    """A distill run's blended objective has its own key and label; its train loss is its
    cross-entropy, the figure a train run's loss is compared with. A distill run recorded before
    (blend under the train loss key) is not comparable on it."""
    assert metric("loss_distill").label != metric("loss_train").label
    assert metric("loss_distill_final").label != metric("loss_train_final").label

    def summary(workload: str, figures: dict) -> dict:
        return {"workload": workload, "steps_completed": 100,
                "figures": {k: {"value": v, "unit": "nats/token", "how": how}
                            for k, (v, how) in figures.items()}}

    train = summary("train", {"loss_train_final": (3.4, "mean of the last 10 steps")})
    distill = summary("distill", {"loss_train_final": (3.3, "the student's cross-entropy"),
                                  "loss_distill_final": (1.8, "the distillation objective")})
    older = summary("distill", {"loss_train_final": (1.8, "blended loss, mean of the last 10 "
                                                          "steps")})
    found = significance.judge("loss_train_final", "lower", train, distill)
    assert (found["base_value"], found["value"]) == (3.4, 3.3)  # cross-entropy against it
    assert found["verdict"] == "not comparable" and found["reason"].startswith("no spread")
    blended = significance.judge("loss_train_final", "lower", train, older)
    assert blended["verdict"] == "not comparable" and "blended objective" in blended["reason"]
    assert significance.judge("loss_distill_final", "lower", train, distill)["value"] == 1.8


def test_the_settings_diff_shows_what_the_workloads_read_by_current_names():
    from profiler.config import RunConfig
    from profiler.report.compare import config_diff
    from tests.helpers import noisy_run

    store = RunStore()
    a, b = noisy_run(store, "a", 1000, 1), noisy_run(store, "b", 1000, 2)
    small, large = RunConfig.from_dict({"train": {"batch_size": 4}, "distill": {"alpha": 0.1}}), \
        RunConfig.from_dict({"train": {"batch_size": 8}, "distill": {"alpha": 0.9}})
    for run_id, config in ((a, small), (b, large)):
        (store.open_run(run_id).path / "config.toml").write_text(config.to_toml(),
                                                                  encoding="utf-8")
    store.rename(a, "renamed")
    runs = [load_run(store.open_run(r)) for r in (a, b)]
    diff = config_diff(runs, runs[0])
    assert [k["key"] for k in diff["keys"]] == ["train.batch_size"]  # no distill.alpha, no name
    assert diff["unified"][0]["diff"].startswith("--- renamed (baseline)\n+++ b\n")
    assert "-batch_size = 4" in diff["unified"][0]["diff"]


def test_int8_perplexities_scored_with_other_windows_per_pass_are_not_comparable():
    """Dynamic int8's perplexity depends on how many windows share a forward pass (one
    activation scale per forward input): 46.3 with one, ~70 with eight on the same text."""
    def infer(perplexity: float, per_pass: int, techniques: list[str]) -> dict:
        return {"workload": "infer", "figures": {"perplexity": {
                    "value": perplexity, "unit": "", "how": "exp(mean token cross-entropy)"}},
                "scoring": {"windows_per_pass": per_pass, "windows": 128, "seq_len": 128,
                            "batch_dependent": techniques}}

    one, eight = infer(46.3, 1, ["quantize_int8_dynamic"]), infer(70.4, 8,
                                                                  ["quantize_int8_dynamic"])
    found = significance.judge("perplexity", "lower", one, eight)
    assert found["verdict"] == "not comparable"
    assert "scored 1 vs 8 windows per forward pass under quantize_int8_dynamic" in \
        found["reason"]
    fp32 = infer(16.3, 8, [])
    assert significance.judge("perplexity", "lower", fp32, eight)["reason"].startswith(
        "no spread")  # scored alike: compared (a bare number each, so no verdict on noise)
    assert "windows per pass only" in metric("perplexity").description
