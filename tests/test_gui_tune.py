"""Run ▸ Find the fastest: the live trial table and chart, and the chosen config loaded back."""

from __future__ import annotations

from PySide6.QtCore import Qt

from profiler.tune import search as tsearch
from profiler.tune import space as tspace

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


def test_find_the_fastest_says_how_long_the_search_has_left(qtbot, window):  # noqa: F811
    import threading

    from tests.gui_support import click

    gate = threading.Event()
    calls = []

    def gated(candidate, steps, final=False):
        calls.append(candidate)
        if len(calls) > 1:
            gate.wait(10)  # the second trial waits until the test has looked
        return Surface()(candidate, steps, final)

    window.tune_evaluator = gated
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
