"""Memory figures that show what a technique changes: the bytes autograd saves for backward, the
gradients and the optimizer state, measured from the tensors on an untimed probe."""

from __future__ import annotations

import pytest

from profiler.config import validate
from profiler.engine.workloads import steps, train
from profiler.figures.metrics import metric
from profiler.report.compare import DELTA_KEYS, deltas
from profiler.report.load import RunData
from tests.helpers import NullControl, SetAt, run_config, run_train


def losses(messages: list[dict]) -> list[float]:
    return [m["metrics"]["loss_train"] for m in messages
            if m["type"] == "sample" and "loss_train" in m.get("metrics", {})]


@pytest.fixture(scope="module")
def plain_and_checkpointed():
    return run_train(), run_train({"activation_checkpointing": {"every": 1}})


def _run_data(run_id: str, summary: dict) -> RunData:
    return RunData(run_id=run_id, name=run_id, meta={}, config={}, config_text="",
                   summary=summary, hello=None, started=None, series={}, samples=0, points=0,
                   events=[], errors=[], profiles=[], done=None, load_warnings=[], path="")


def test_checkpointing_cuts_the_saved_bytes_and_leaves_gradients_and_optimizer_state(
        plain_and_checkpointed):
    (plain, plain_msgs), (ckpt, ckpt_msgs) = plain_and_checkpointed
    p, c = plain["figures"], ckpt["figures"]
    assert p["saved_for_backward_bytes"]["unit"] == "bytes"
    assert "saved_tensors_hooks" in p["saved_for_backward_bytes"]["how"]
    how = p["saved_for_backward_bytes"]["how"]
    assert "untimed probe" in how and "after step 1, the last warmup step" in how
    assert p["saved_for_backward_bytes"]["value"] > 0
    assert c["saved_for_backward_bytes"]["value"] < 0.5 * p["saved_for_backward_bytes"]["value"]
    assert p["gradient_bytes"]["value"] == c["gradient_bytes"]["value"] > 0
    assert p["optimizer_state_bytes"]["value"] == c["optimizer_state_bytes"]["value"] > 0
    # Checkpointing recomputes exactly: the same training with and without it.
    assert losses(ckpt_msgs) == pytest.approx(losses(plain_msgs), rel=1e-5)


def test_the_comparison_leads_with_the_saved_bytes(plain_and_checkpointed):
    (plain, _), (ckpt, _) = plain_and_checkpointed
    assert DELTA_KEYS.index("saved_for_backward_bytes") < DELTA_KEYS.index("peak_rss_bytes")
    assert DELTA_KEYS.index("saved_for_backward_bytes") < DELTA_KEYS.index(
        "peak_torch_allocated_bytes")
    ordered = deltas([_run_data("ckpt", ckpt)], _run_data("plain", plain))
    assert ordered[0]["key"] == "saved_for_backward_bytes"  # the figure checkpointing acts on
    assert [r["key"] for r in deltas([_run_data("again", plain)], _run_data("plain", plain))
            ][0] == "tokens_per_s"  # no technique differs: the usual order
    rows = {row["key"]: row for row in ordered}
    saved = rows["saved_for_backward_bytes"]
    assert saved["better"] == metric("saved_for_backward_bytes").better == "lower"
    assert saved["cells"][0]["change_pct"] < -50
    assert rows["gradient_bytes"]["cells"][0]["change_pct"] == 0
    assert rows["optimizer_state_bytes"]["cells"][0]["change_pct"] == 0


def test_the_probe_is_no_step_and_changes_no_training(monkeypatch, plain_and_checkpointed):
    (plain, plain_msgs), _ = plain_and_checkpointed
    # Not a step: 4 steps of 2 x 32 tokens were seen and 3 measured (1 warmup).
    assert plain["figures"]["tokens_seen"]["value"] == 4 * 2 * 32
    assert plain["figures"]["tokens_per_s"]["distribution"]["n"] == 3
    # A run without the probe trains the same model on the same batches, bit for bit.
    monkeypatch.setattr(steps.MemoryProbes, "take", lambda self, step: None)
    unprobed, unprobed_msgs = run_train()
    assert losses(unprobed_msgs) == losses(plain_msgs)
    assert unprobed["figures"]["saved_for_backward_bytes"]["value"] is None
    assert "n/a" in unprobed["figures"]["saved_for_backward_bytes"]["how"]


@pytest.mark.parametrize(("optimizer", "states_per_param"),
                         [({"algorithm": "sgd", "momentum": 0.0}, 0),
                          ({"algorithm": "sgd", "momentum": 0.9}, 1),
                          ({"algorithm": "adamw"}, 2)])
def test_optimizer_state_bytes_follow_the_algorithm(optimizer, states_per_param):
    summary, _ = run_train({"optimizer": optimizer}, steps=2)
    figures = summary["figures"]
    param_bytes = figures["gradient_bytes"]["value"]  # every parameter trains, in fp32
    assert param_bytes == 4 * summary["parameters"]
    steps = 4 * len(theory_numels())  # Adam's fp32 step counter a tensor
    assert figures["optimizer_state_bytes"]["value"] == states_per_param * param_bytes + (
        steps if optimizer["algorithm"] == "adamw" else 0)
    # Measured from the tensors and predicted from the config: the same bytes.
    assert figures["optimizer_state_bytes"]["value"] == \
        figures["predicted_optimizer_state_bytes"]["value"]


def theory_numels() -> list[int]:
    from profiler.figures.theory import parameter_numels
    from profiler.models.presets import GPT_PRESETS

    return parameter_numels(GPT_PRESETS[run_config().model.preset])


def test_a_distill_run_measures_the_students_memory_parts(tmp_path):
    from profiler.engine import weights
    from profiler.engine.workloads import distill
    from profiler.models.gpt import GPT
    from tests.helpers import STUDENT, TEACHER, distill_settings

    weights.save_model(GPT(TEACHER), tmp_path / "teacher.safetensors", "tiny-teacher")
    weights.save_model(GPT(STUDENT), tmp_path / "student.safetensors", "tiny-student")
    config = run_config(3, **{**distill_settings(tmp_path, 0.5), "batch_size": 2, "seq_len": 16,
                              "eval_batches": 1})
    summary = distill.run(config, lambda message: None, NullControl())
    figures = summary["figures"]
    student_bytes = 4 * STUDENT.parameter_count()
    # The teacher runs without gradients: only the student's parameters have any.
    assert figures["gradient_bytes"]["value"] == student_bytes
    steps = 4 * len(list(GPT(STUDENT).parameters()))  # AdamW's fp32 step a tensor
    assert figures["optimizer_state_bytes"]["value"] == 2 * student_bytes + steps
    assert figures["saved_for_backward_bytes"]["value"] > 0
    assert "after step 1, the last warmup step" in figures["saved_for_backward_bytes"]["how"]


def test_a_change_mid_run_is_probed_again(plain_and_checkpointed):
    (plain, _), (ckpt, _) = plain_and_checkpointed
    config = run_config(steps=5, eval_interval=0, batch_size=2, seq_len=32)
    config.limits.warmup_steps = 1
    config.data.max_train_bytes = 40_000
    validate(config)
    messages: list[dict] = []
    summary = train.run(config, messages.append, SetAt(4, "activation_checkpointing", {"every": 1}))
    assert any(m["type"] == "event" and m["kind"] == "toggle" for m in messages)
    saved = summary["figures"]["saved_for_backward_bytes"]
    # The figure is the configuration the run ended in (as its headline), probed before step 4.
    assert saved["value"] == ckpt["figures"]["saved_for_backward_bytes"]["value"]
    assert saved["value"] < plain["figures"]["saved_for_backward_bytes"]["value"]
    assert "before step 4" in saved["how"] and "the last change's probe" in saved["how"]


def test_the_techniques_runs_differ_in_choose_the_leading_rows():
    from profiler.report.compare import acted_on

    adamw = {"active_techniques": {"optimizer": {"algorithm": "adamw"}}}
    low_bit = {"active_techniques": {"optimizer": {"algorithm": "adamw"},
                                     "optimizer_low_bit": {"bits": 8}}}
    sgd = {"active_techniques": {"optimizer": {"algorithm": "sgd"}}}
    assert acted_on([adamw, low_bit]) == ["optimizer_state_bytes"]
    assert acted_on([adamw, sgd]) == ["optimizer_state_bytes"]  # the same technique, other params
    assert acted_on([adamw, adamw]) == []
    # A summary from disk that is not what it should be: nothing leads, nothing raises.
    assert acted_on([{"active_techniques": [1]}, {"techniques": "x"}, {}]) == []
    assert acted_on([{"techniques": [{"name": "lora", "params": {}}]}, adamw]) == [
        "gradient_bytes", "optimizer_state_bytes"]


def test_a_counted_figure_is_judged_without_noise():
    from profiler.figures.significance import judge

    def summary(saved: int, rss: int) -> dict:
        return {"figures": {"saved_for_backward_bytes": {"value": saved, "unit": "bytes"},
                            "peak_rss_bytes": {"value": rss, "unit": "bytes"}}}

    base, ckpt = summary(1000, 5000), summary(120, 5100)
    lower = judge("saved_for_backward_bytes", "lower", base, ckpt)
    assert lower["verdict"] == "better" and lower["delta_pct"] == pytest.approx(-88.0)
    assert judge("saved_for_backward_bytes", "lower", ckpt, base)["verdict"] == "worse"
    assert judge("saved_for_backward_bytes", "lower", base, base)["verdict"] == "equal"
    rss = judge("peak_rss_bytes", "lower", base, ckpt)  # not counted: one number, no spread
    assert rss["verdict"] == "not comparable" and rss["reason"].startswith("no spread")
    assert metric("saved_for_backward_bytes").exact and not metric("peak_rss_bytes").exact


def test_a_stored_runs_report_shows_the_measured_parts_beside_the_predicted(tmp_path, capsys):
    from profiler import cli
    from profiler.figures.metrics import format_value
    from profiler.report import render
    from profiler.store import RunStore
    from tests.faults import write_config
    from tests.helpers import run_config

    config = run_config(steps=3, data="random")
    config.techniques = {"activation_checkpointing": {"every": 1}}
    assert cli.main(["run", str(write_config(tmp_path / "run.toml", config))]) == 0
    out = capsys.readouterr().out
    assert "saved_for_backward_bytes" in out and "gradient_bytes" in out  # the CLI summary
    store = RunStore()
    run_id = store.list_runs()[0]["id"]
    figures = store.open_run(run_id).summary()["figures"]
    saved = figures["saved_for_backward_bytes"]["value"]
    assert saved > 0
    html = render([run_id], "html", store)
    assert "Saved for backward" in html and "Gradients" in html
    # The theory table: measured activations are the probe's saved bytes.
    assert "saved-tensor hooks on an untimed probe of one micro-batch" in html
    assert format_value(saved, "bytes") in html


def test_a_probe_that_runs_out_of_memory_costs_its_figures_not_the_run(monkeypatch):
    def no_room(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1 GB; "
                           "out of memory")

    monkeypatch.setattr(steps, "probe_step", no_room)
    summary, messages = run_train(steps=3)
    assert summary["steps_completed"] == 3 and len(losses(messages)) == 3
    saved = summary["figures"]["saved_for_backward_bytes"]
    assert saved["value"] is None
    assert saved["how"].startswith("n/a: the memory probe after step 1") and "ran out of memory" \
        in saved["how"]
    assert summary["figures"]["gradient_bytes"]["value"] is None
    assert summary["figures"]["optimizer_state_bytes"]["value"] > 0  # read after the last step
    def bug(*args, **kwargs):
        raise RuntimeError("a bug, not memory")

    monkeypatch.setattr(steps, "probe_step", bug)  # any other error is not swallowed
    with pytest.raises(RuntimeError, match="a bug"):
        run_train(steps=2)


def test_a_comparison_report_words_counted_figures_without_noise(tmp_path):
    """Markdown, HTML and JSON comparisons of two runs whose counted memory parts are equal or
    differ: the verdict is written out ("equal (counted)", "significant: better"), never a
    crash on a verdict only counted figures have."""
    import json

    from profiler.report import render
    from profiler.store import RunStore
    from tests.helpers import synth_run

    def parts(saved: int) -> dict:
        return {"saved_for_backward_bytes": {"value": saved, "unit": "bytes", "how": "probe"},
                "gradient_bytes": {"value": 4096, "unit": "bytes", "how": "grads"}}

    store = RunStore(tmp_path)
    base = synth_run(store, "base")
    base_summary = store.open_run(base).summary()
    ckpt = synth_run(store, "ckpt", extra_summary={
        "figures": {**base_summary["figures"], **parts(120)}})
    plain = synth_run(store, "plain", extra_summary={
        "figures": {**base_summary["figures"], **parts(1000)}})
    md = render([plain, ckpt], "md", store=store, baseline=plain)
    assert "equal (counted)" in md and "significant: better" in md
    rows = json.loads(render([plain, ckpt], "json", store=store,
                             baseline=plain))["comparison"]["deltas"]
    verdicts = {row["key"]: [c["verdict"] for c in row["cells"]] for row in rows}
    assert "equal" in verdicts["gradient_bytes"]
    assert "better" in verdicts["saved_for_backward_bytes"]
    assert "within noise" not in verdicts["saved_for_backward_bytes"]
    render([plain, ckpt], "html", store=store, baseline=plain)
