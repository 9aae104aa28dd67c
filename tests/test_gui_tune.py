"""Run ▸ Find the fastest: the live trial table and chart, the progress line (trials, best so far,
time left), a stopped search that claims nothing, the Pareto front, the tune listed while it
runs, and the chosen config loaded back."""

from __future__ import annotations

from PySide6.QtCore import Qt

from profiler.tune import search as tsearch
from profiler.tune import space as tspace
from tests.gui_support import click

SPEED = {"16x1": 0.9, "8x2": 1.2, "4x4": 1.0, "2x8": 0.8}


class Surface:
    """A deterministic cost model: micro-batch 8 x 2 + bf16 is the fastest."""

    def __init__(self):
        self.calls = 0

    def __call__(self, candidate: tspace.Candidate, steps: int, final: bool = False):
        self.calls += 1
        value = 1000.0 * SPEED[candidate.value("batch")] * (
            1.4 if candidate.value("precision") == "bf16" else 1.0)
        samples = [value * (1 + 0.002 * (i % 5 - 2)) for i in range(steps)]
        return tsearch.Measurement(value=value, ci_low=value * 0.99, ci_high=value * 1.01,
                                   peak_bytes=2**28, cost_s=1.0, fixed_cost_s=0.5,
                                   samples=samples)


def gated_after_first(gate, calls: list | None = None):
    """A tune evaluator on the Surface whose second and later trials wait for `gate` (the test
    looks at the dialog meanwhile); `calls` collects the candidates asked for."""
    calls = [] if calls is None else calls

    def evaluate(candidate, steps, final=False):
        calls.append(candidate)
        if len(calls) > 1:
            gate.wait(10)
        return Surface()(candidate, steps, final)

    return evaluate


def test_find_the_fastest_shows_trials_live_and_loads_the_answer(qtbot, window):
    surface = Surface()
    window.tune_evaluator = surface
    window.action_tune.trigger()
    dialog = window.tune_dialog
    dialog.space.setText("batch; precision=fp32,bf16")
    dialog.budget.setText("10m")
    qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.report is not None, timeout=20_000)
    report = dialog.report
    trials = len(report["trials"])
    assert trials >= 8 and dialog.table.rowCount() == trials  # every trial, as it finished
    assert len(dialog._points) == trials  # and one point each on the chart
    assert "micro-batch 8 x 2 accumulated + bf16" in dialog.answer.text()
    assert dialog.use_button.isEnabled()
    before = window.build_config()
    assert before.train.batch_size * tspace.micro_batches(before) == 16
    qtbot.mouseClick(dialog.use_button, Qt.MouseButton.LeftButton)
    after = window.build_config()
    assert after.train.batch_size == 8 and tspace.micro_batches(after) == 2
    assert after.techniques["precision"]["dtype"] == "bf16"
    dialog.close()


def test_find_the_fastest_says_what_to_fix(qtbot, window):
    window.tune_evaluator = Surface()
    dialog = window.open_tune()
    dialog.memory_limit.setText("a lot")
    qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)
    assert "--memory-limit: give a size like 20GiB" in dialog.answer.text()
    assert window.tune_evaluator.calls == 0 and dialog.start_button.isEnabled()
    dialog.close()


def test_closing_the_window_stops_a_tune_in_flight(qtbot, window):
    import threading

    release = threading.Event()
    seen = []

    def slow(candidate, steps, final=False):
        seen.append(candidate)
        release.wait(0.2)  # a trial that takes a while
        return Surface()(candidate, steps, final)

    window.tune_evaluator = slow
    dialog = window.open_tune()
    dialog.space.setText("batch")
    qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(seen) >= 1, timeout=5_000)
    window.close()
    assert not dialog.running()  # the search ended with the window
    assert len(seen) <= 2  # of 4 + 2 + 3 trials, it did not go on (rungs, final re-measure)


def test_find_the_fastest_says_how_long_the_search_has_left(qtbot, window):
    import threading


    gate = threading.Event()
    window.tune_evaluator = gated_after_first(gate)  # the second trial waits for the test
    dialog = window.open_tune()
    dialog.space.setText("batch; precision=fp32,bf16")
    click(qtbot, dialog.start_button)
    assert "of trials left" not in dialog.progress.text()  # no run yet to estimate from
    # After one trial of 1 s (0.5 s of it fixed): 7 more first-rung trials of 1 s, then 3 at
    # 18 steps (3 x 0.5 s fixed + 4.5 s of steps) and 2 at 54 (2 x 0.5 s + 9 s): 23 s.
    qtbot.waitUntil(lambda: "about 0:23 of trials left" in dialog.progress.text(),
                    timeout=10_000)
    gate.set()
    qtbot.waitUntil(lambda: dialog.report is not None, timeout=20_000)
    dialog.close()


def test_a_tune_is_listed_while_it_runs(qtbot, window):
    import threading

    release = threading.Event()

    def held(candidate, steps, final=False):
        release.wait(10)
        return Surface()(candidate, steps, final)

    window.tune_evaluator = held
    dialog = window.open_tune()
    dialog.space.setText("batch")
    click(qtbot, dialog.start_button)
    try:
        qtbot.waitUntil(lambda: any(window.history.run_name(r).startswith("tune")
                                    for r in window.history.run_ids()), timeout=10_000)
        assert dialog.running()  # listed before the tune is over
    finally:
        release.set()
        dialog.shutdown()


def test_a_tune_says_how_far_it_is_and_a_stopped_one_claims_nothing(qtbot, window):
    import threading

    gate = threading.Event()
    window.tune_evaluator = gated_after_first(gate)  # the second trial waits for the test
    dialog = window.open_tune()
    dialog.space.setText("batch; precision=fp32,bf16")
    click(qtbot, dialog.start_button)
    # from the first second: trials, candidates of the space, the budget's clock
    assert "0 trials, 0 of 8 candidates tried" in dialog.progress.text()
    assert "of the 15:00 budget spent" in dialog.progress.text()
    qtbot.waitUntil(lambda: len(dialog.rows) >= 1, timeout=10_000)
    assert "best so far" in dialog.progress.text()
    click(qtbot, dialog.stop_button)
    gate.set()
    qtbot.waitUntil(lambda: dialog.report is not None, timeout=20_000)
    answer = dialog.answer.text()
    assert "Stopped after" in answer and "of 8 candidates" in answer
    assert "no candidate beat it" not in answer
    dialog.close()


def test_tune_charts_follow_the_theme_and_show_the_pareto_front(qtbot, window):
    import dataclasses

    from app.tune_charts import pareto_front
    surface = Surface()

    def varied(candidate, steps, final=False):  # bigger micro-batches hold more memory
        measured = surface(candidate, steps, final)
        memory = 2**27 * (1 + list(SPEED).index(candidate.value("batch")))
        return dataclasses.replace(measured, peak_bytes=memory)

    window.tune_evaluator = varied
    window.set_theme("dark")
    try:
        dialog = window.open_tune()
        assert dialog.charts.by_trial.backgroundBrush().color().name() == "#0f172a"
        dialog.space.setText("batch; precision=fp32,bf16")
        click(qtbot, dialog.start_button)
        qtbot.waitUntil(lambda: dialog.report is not None, timeout=20_000)
        charts = dialog.charts
        assert len(charts.memory) == len([r for r in dialog.rows if r["value"] is not None])
        assert charts.front_points == pareto_front(charts.memory, True)
        assert 1 < len(charts.front_points) < len(charts.memory)
        # no trial is both smaller and faster than a point of the front
        for memory, value in charts.front_points:
            assert not any(m <= memory and v > value and (m, v) != (memory, value)
                           for m, v in charts.memory)
        window.set_theme("light")
        assert charts.by_memory.backgroundBrush().color().name() == "#ffffff"
        dialog.close()
    finally:
        window.set_theme("light")


def test_pareto_front_keeps_only_the_trade_offs():
    from app.tune_charts import pareto_front

    points = [(100.0, 10.0), (200.0, 15.0), (150.0, 9.0), (300.0, 14.0), (120.0, 12.0)]
    assert pareto_front(points, higher=True) == [(100.0, 10.0), (120.0, 12.0), (200.0, 15.0)]
    assert pareto_front(points, higher=False) == [(100.0, 10.0), (150.0, 9.0)]
