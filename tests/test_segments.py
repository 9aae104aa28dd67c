"""A run whose techniques change mid-run has figures per segment, and its headline is the
configuration it ended in, never an average over configurations."""

from __future__ import annotations

import statistics

import pytest

from profiler import segments
from profiler.config import validate
from profiler.workloads import train
from tests.helpers import nano_config


class _ToggleAt:
    """A front end that turns on gradient accumulation (4 micro-batches) before step `step`."""

    should_stop = False
    dist = None

    def __init__(self, step: int):
        self.step, self.calls = step, 0

    def poll(self) -> list:
        self.calls += 1
        if self.calls == self.step:
            return [{"type": "set", "technique": "grad_accumulation",
                     "params": {"micro_batches": 4}}]
        return []


@pytest.mark.slow
def test_a_toggled_runs_segments_equal_a_recomputation_from_its_stream():
    config = nano_config(steps=14, eval_interval=0, batch_size=2, seq_len=16)
    config.limits.warmup_steps = 2
    config.data.max_train_bytes = 40_000
    validate(config)
    messages: list[dict] = []
    summary = train.run(config, messages.append, _ToggleAt(7))
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
    from profiler.cli import _print_summary

    records = [segments.step_record(s, 0.1, 32 if s < 6 else 128, 3.0) for s in range(1, 11)]
    toggle = {"type": "event", "kind": "toggle", "step": 6, "technique": "grad_accumulation",
              "params": {"micro_batches": 4}, "message": "on"}
    parts = segments.split(records, [toggle], warmup_steps=1)
    _print_summary("r", {}, {"status": "completed", "figures": {}, "segments": parts})
    out = capsys.readouterr().out
    assert "steps 1..5" in out and "steps 6..10" in out
    assert "after grad_accumulation micro_batches = 4" in out and "128 tokens per step" in out
