"""Every timed figure of a summary carries its distribution (n, median, p10 / p90, the 95 %
interval of its median), and every front end prints it as "1.81 tokens/s (±2.1 %, n=10)"."""

from __future__ import annotations

import importlib
import statistics

import pytest

from profiler.config import validate
from profiler.figures.metrics import format_summary_figure, spread_text
from profiler.figures.stats import figure, timed_figure
from tests.helpers import NullControl, run_config


def _run(workload: str) -> tuple[dict, list[dict]]:
    config = run_config(steps=12, eval_interval=0, batch_size=2, seq_len=16)
    config.limits.warmup_steps = 2
    config.workload = workload
    config.data.max_train_bytes = 40_000
    if workload == "distill":
        config.distill.teacher.preset = "gpt-nano"
        config.distill.teacher_train_steps = 2
    validate(config)
    messages: list[dict] = []
    summary = importlib.import_module(f"profiler.engine.workloads.{workload}").run(
        config, messages.append, NullControl())
    return summary, messages


@pytest.mark.slow
@pytest.mark.parametrize("workload", ["train", "distill"])
def test_throughput_and_step_time_are_the_medians_of_the_measured_steps_with_their_spread(
        workload):
    summary, messages = _run(workload)
    measured = [m["metrics"] for m in messages
                if m["type"] == "sample" and m.get("phase") == "measure"]
    assert len(measured) == 10 == summary["measured_steps"]  # the 2 warmup steps are left out
    for key in ("tokens_per_s", "step_time_p50_s"):
        fig = summary["figures"][key]
        dist = fig["distribution"]
        sample_key = "step_time_s" if key.startswith("step_time") else key
        # The headline is the median of what the stream holds step by step, not a mean.
        expected = statistics.median(m[sample_key] for m in measured)
        assert dist["n"] == 10
        assert fig["value"] == pytest.approx(expected) == pytest.approx(dist["median"])
        assert dist["p10"] <= dist["ci_low"] <= dist["median"] <= dist["ci_high"] <= dist["p90"]
        assert "n=10" in format_summary_figure(key, fig) and "±" in format_summary_figure(key, fig)


def test_a_timed_figure_prints_three_significant_digits_with_its_spread():
    rates = [1.78, 1.79, 1.80, 1.81, 1.8123, 1.82, 1.83, 1.84, 1.85]
    fig = timed_figure(rates, "tokens/s", "median of per-step tokens/s")
    text = format_summary_figure("tokens_per_s", fig)
    # 1.81 tokens/s is never shown as "2 tokens/s"; the ± is the larger half of the interval.
    half = max(fig["value"] - fig["distribution"]["ci_low"],
               fig["distribution"]["ci_high"] - fig["value"]) / fig["value"] * 100
    assert text.startswith("1.81 tokens/s (±") and text.endswith(", n=9)")
    assert f"{half:.1f}" in text
    # Seconds keep the catalogue's units: a 12.3 ms step reads in ms with its spread.
    step = format_summary_figure("step_time_p50_s", timed_figure([0.0123] * 8, "s", "median"))
    assert step == "12.3 ms (±0 %, n=8)"


def test_too_few_measurements_say_so_and_a_bare_figure_stays_bare():
    few = timed_figure([1.0, 2.0, 3.0], "tokens/s", "median")
    assert format_summary_figure("tokens_per_s", few) == "2.00 tokens/s (interval n/a, n=3)"
    bare = figure(123_456.0, "bytes", "peak")
    assert spread_text(bare) == "" and format_summary_figure("peak_rss_bytes", bare) == "121 KiB"
    assert format_summary_figure("tokens_per_s", timed_figure([], "tokens/s", "none")) == "n/a"


def test_the_cli_and_the_reports_print_the_spread(capsys):
    from profiler.cli.show import print_summary as _print_summary
    from profiler.report.load import RunData
    from profiler.report.markdown import render_run
    from profiler.report.sections import headline_figures

    fig = timed_figure([100.0 + i for i in range(20)], "tokens/s", "median of per-step tokens/s")
    summary = {"status": "completed", "figures": {"tokens_per_s": fig}}
    _print_summary("run-1", {"name": "x"}, summary)
    assert "110 tokens/s (±" in capsys.readouterr().out
    run = RunData(run_id="run-1", name="x", meta={}, config={}, config_text="", summary=summary,
                  hello=None, started=None, series={}, samples=0, points=0, events=[], errors=[],
                  profiles=[], done=None, load_warnings=[], path="")
    expected = format_summary_figure("tokens_per_s", fig)
    assert "n=20" in expected
    assert expected in render_run(run)
    assert expected in headline_figures(run)


def test_the_app_shows_a_finished_runs_throughput_with_its_spread(qtbot):
    from app.main import MainWindow
    from profiler.store import RunStore
    from tests.gui_support import dispose, stored_run, train_messages

    fig = timed_figure([1.7 + i / 100 for i in range(15)], "tokens/s", "median of per-step")
    run_id = stored_run(RunStore(), "spread", train_messages(3, summary={"figures": {
        "tokens_per_s": fig}}))
    win = MainWindow()
    qtbot.addWidget(win)
    try:
        win.history.refresh()
        win.history.select(run_id)
        row = win.summary_view.row_text("Throughput")  # the value and its spread, side by side
        assert f"{row['value']} ({row['spread']})" == format_summary_figure("tokens_per_s", fig)
        assert row["value"] == "1.77 tokens/s"
        assert row["spread"].startswith("±") and row["spread"].endswith("n=15")
    finally:
        dispose(win)
