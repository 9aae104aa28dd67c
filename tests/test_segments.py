"""A run whose techniques change mid-run has figures per segment, and its headline is the
configuration it ended in, never an average over configurations."""

from __future__ import annotations

import json
import statistics

import pytest

from profiler.config import validate
from profiler.engine.workloads import train
from profiler.figures import segments
from tests.helpers import SetAt, run_config


@pytest.mark.slow
def test_a_toggled_runs_segments_equal_a_recomputation_from_its_stream():
    config = run_config(steps=14, eval_interval=0, batch_size=2, seq_len=16)
    config.limits.warmup_steps = 2
    config.data.max_train_bytes = 40_000
    validate(config)
    messages: list[dict] = []
    summary = train.run(config, messages.append, SetAt(7, "grad_accumulation", {"micro_batches": 4}))
    parts = summary["segments"]
    assert [(p["start_step"], p["end_step"]) for p in parts] == [(1, 6), (7, 14)]
    # Accumulation made every step read 4x the tokens: each segment says its own.
    assert parts[0]["figures"]["tokens_per_step"]["value"] == 2 * 16
    assert parts[1]["figures"]["tokens_per_step"]["value"] == 4 * 2 * 16
    toggle = next(m for m in messages if m["type"] == "event" and m["kind"] == "toggle")
    assert toggle["tokens_per_step"] == 4 * 2 * 16

    # Recomputed here from the stream alone: the samples and the toggle's step.
    samples = {m["step"]: m["metrics"] for m in messages
               if m["type"] == "sample" and m.get("phase") in ("warmup", "measure")}
    first = [samples[s] for s in range(3, 7)]            # warmup 1..2 left out
    second = [samples[s] for s in range(8, 15)]          # the switch step 7 left out
    for part, steps in zip(parts, (first, second), strict=True):
        figs = part["figures"]
        assert figs["tokens_per_s"]["value"] == pytest.approx(
            statistics.median(s["tokens_per_s"] for s in steps))
        assert figs["step_time_s"]["distribution"]["n"] == len(steps)
        losses = [(s, samples[s]["loss_train"]) for s in range(part["start_step"],
                                                                part["end_step"] + 1)]
        assert figs["loss_slope"]["value"] == pytest.approx(segments.loss_slope(losses))
    # The headline is the last segment's, not a mix of the two configurations.
    assert summary["figures"]["tokens_per_s"]["value"] == pytest.approx(
        parts[1]["figures"]["tokens_per_s"]["value"])
    assert "last segment" in summary["figures"]["tokens_per_s"]["how"]


def test_a_run_without_changes_is_one_segment_and_keeps_its_headline():
    records = [segments.step_record(s, 0.1 + s / 1000, 32, 3.0 - s / 10) for s in range(1, 11)]
    parts = segments.split(records, [], warmup_steps=2)
    assert len(parts) == 1 and parts[0]["measured_steps"] == 8
    assert parts[0]["figures"]["loss_slope"]["value"] == pytest.approx(-0.1)


def test_the_cli_lists_the_segments_of_a_toggled_run(capsys):
    from profiler.cli.show import print_summary as _print_summary

    records = [segments.step_record(s, 0.1, 32 if s < 6 else 128, 3.0) for s in range(1, 11)]
    toggle = {"type": "event", "kind": "toggle", "step": 6, "technique": "grad_accumulation",
              "params": {"micro_batches": 4}, "message": "on"}
    parts = segments.split(records, [toggle], warmup_steps=1)
    _print_summary("r", {}, {"status": "completed", "figures": {}, "segments": parts})
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["#", "Steps", "After"])
    first, second = lines[header + 1], lines[header + 2]
    # The reports' table (profiler.figures.segments.table), its columns aligned under their headers.
    assert first.split()[:2] == ["1", "1..5"] and second.split()[:2] == ["2", "6..10"]
    assert "grad_accumulation micro_batches = 4" in second
    column = lines[header].index("Tokens/step") + len("Tokens/step")  # right-aligned figures
    assert first[:column].endswith("32 tokens") and second[:column].endswith("128 tokens")


@pytest.mark.slow
def test_a_distill_run_takes_mid_run_toggles_and_has_their_segments():
    """Distill trains the student with train's machinery: a toggle applies there too, the
    segments split at it and the headline is the last configuration's."""
    from profiler.config import ModelConfig
    from profiler.engine.workloads import distill

    config = run_config(steps=10, eval_interval=0, batch_size=2, seq_len=16)
    config.workload = "distill"
    config.distill.teacher = ModelConfig(preset="gpt-nano")
    config.limits.warmup_steps = 1
    config.data.max_train_bytes = 40_000
    validate(config)
    messages: list[dict] = []
    summary = distill.run(config, messages.append, SetAt(5, "grad_accumulation", {"micro_batches": 4}))
    started = next(m for m in messages if m["type"] == "started")["run"]
    assert started["tokens_per_step"] == 2 * 16
    toggle = next(m for m in messages if m["type"] == "event" and m["kind"] == "toggle")
    assert toggle["step"] == 5 and toggle["tokens_per_step"] == 4 * 2 * 16
    parts = summary["segments"]
    assert [(p["start_step"], p["end_step"]) for p in parts] == [(1, 4), (5, 10)]
    assert parts[1]["figures"]["tokens_per_step"]["value"] == 4 * 2 * 16
    samples = {m["step"]: m["metrics"] for m in messages
               if m["type"] == "sample" and m.get("phase") in ("warmup", "measure")}
    # Accumulation took effect: the steps after the toggle read 4x the tokens.
    assert samples[7]["tokens_per_s"] * samples[7]["step_time_s"] == pytest.approx(4 * 2 * 16)
    assert summary["figures"]["tokens_per_s"]["value"] == pytest.approx(
        statistics.median(samples[s]["tokens_per_s"] for s in range(6, 11)))
    assert "last segment" in summary["figures"]["tokens_per_s"]["how"]


def test_the_reports_list_each_segment_with_its_own_figures(tmp_path):
    """A toggled run's HTML and Markdown reports have one row per segment, each with that
    segment's speed (and spread), not only the run's headline."""
    from profiler.figures.metrics import format_summary_figure
    from profiler.report import render
    from profiler.store import RunStore
    from tests.helpers import synth_run

    store = RunStore(tmp_path)
    plain = synth_run(store, "plain", steps=30)
    stream = store.open_run(plain).path / "stream.jsonl"
    messages = [json.loads(line) for line in stream.read_text().splitlines()]
    records, _, warmup = segments.records_from_messages(messages)
    # The same steps, but the second half ran slower after a switch at step 15.
    records = [dict(r, step_time_s=r["step_time_s"] * (2 if r["step"] >= 15 else 1))
               for r in records]
    toggle = {"type": "event", "kind": "toggle", "step": 15, "technique": "precision",
              "params": {"dtype": "bf16"}, "message": "autocast now bf16"}
    parts = segments.split(records, [toggle], warmup)
    run_id = synth_run(store, "toggled", steps=30, toggle_at=15,
                       extra_summary={"segments": parts})
    expected = [format_summary_figure("tokens_per_s", p["figures"]["tokens_per_s"]) for p in parts]
    assert expected[0] != expected[1] and "±" in expected[0]
    for fmt in ("html", "md"):
        text = render([run_id], fmt, store=store)
        for cell in expected:
            assert cell in text, (fmt, cell)
        assert "precision dtype = bf16" in text and "15..30" in text
    # A run with one configuration has no segment table.
    assert "15..30" not in render([plain], "md", store=store)
