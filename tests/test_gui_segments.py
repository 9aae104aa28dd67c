"""Issue 16, what the first rounds left open, done as a user does it. A run whose techniques
change mid-run: press Run, click the square of "Gradient accumulation" while it goes; the table
under the charts lists each configuration's figures (live, and again when the run is shown from
the history), the run's account says the new tokens per step, and the x axis by tokens seen adds
each segment up at its own rate. Also: the side columns fold away from the keyboard, the hover
read-out names the step under the mouse and goes when the mouse leaves, and inference charts keep
their newest steps beside long legends."""

from __future__ import annotations

import re

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest

from profiler.store import RunStore
from tests import gui_support
from tests.gui_support import click_square, fake_worker, stored_run, train_messages

STEPS = 60


def number(text: str) -> float:
    """The leading number of a shown figure: "1,024 tokens" -> 1024."""
    match = re.match(r"-?[\d,]+(\.\d+)?", text.replace("−", "-"))
    assert match, text
    return float(match.group(0).replace(",", ""))


def test_a_mid_run_toggle_gets_its_own_row_tokens_per_step_and_tokens_axis(qtbot, window):
    window.worker_command = fake_worker(0.03)
    window.form.device.setCurrentText("cpu")
    window.form.steps.setValue(STEPS)
    table = window.segments
    qtbot.mouseClick(window.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.run_controls.last_step >= 10, timeout=30_000)
    assert not table.isVisible()  # one configuration so far: its figures are the headline
    assert "256 tokens per step" in window.run_controls.run_info.text()

    click_square(qtbot, window, "grad_accumulation")  # on, 4 micro batches (its default)
    qtbot.waitUntil(lambda: bool(window.charts.marker_steps), timeout=30_000)
    change = int(window.charts.marker_steps[0][0])
    # While the run goes: two rows, the run's account says the new tokens per step.
    qtbot.waitUntil(table.isVisible, timeout=5000)
    assert len(table.segments) == 2
    assert (f"1,024 tokens per step from step {change} (256 before)"
            in window.run_controls.run_info.text())
    qtbot.waitUntil(lambda: not window.running, timeout=60_000)
    window.charts.redraw_now()

    assert table.table.rowCount() == 2
    assert table.table.item(0, 0).text() == f"1..{change - 1}"
    assert table.table.item(1, 0).text() == f"{change}..{STEPS}"
    assert table.table.item(1, 1).text().startswith("after grad_accumulation")
    per_step = [number(table.cell_text(r, "tokens_per_step")) for r in range(2)]
    assert per_step[1] / per_step[0] == pytest.approx(4, rel=0.01)
    for row in range(2):
        speed = table.cell_text(row, "tokens_per_s")
        assert "tokens/s" in speed and "n=" in speed  # a timed figure with its spread
    # The first step after the change and the warmup step are left out of the timing.
    assert table.segments[1]["measured_steps"] == STEPS - change
    assert table.segments[0]["measured_steps"] == change - 2

    # Tokens seen: 256 a step before the change, 1,024 a step from it on.
    window.charts.set_x_axis("tokens")
    window.charts.redraw_now()
    expected = (change - 1) * 256 + (STEPS - change + 1) * 1024
    assert window.charts.curves["loss_train"].xData[-1] == expected
    marker = next(line for plot, line in window.charts.markers)
    assert marker.value() == (change - 1) * 256 + 1024
    window.charts.set_x_axis("step")

    # Shown again from the history: the same rows, read from the stored run.
    run_id = window.run_id
    other = stored_run(RunStore(), "plain", train_messages(5, summary={}))
    window.history.refresh()
    window.show_stored_run(other)
    assert not table.isVisible()  # no change mid-run: no table
    account = window.run_controls.run_info.text()  # the shown run's, not the last live one's
    assert account.startswith("Showing stored run plain:") and "256 tokens per step, 5 steps" \
        in account and "1,024" not in account
    assert window.run_controls.progress.format() == "step 5 / 5"  # what its stream holds
    assert window.run_controls.eta_label.text().startswith("completed")
    window.show_stored_run(run_id)
    assert table.isVisible() and table.table.rowCount() == 2
    assert (f"1,024 tokens per step from step {change} (256 before)"
            in window.run_controls.run_info.text())
    assert table.table.item(1, 0).text() == f"{change}..{STEPS}"
    window.charts.set_x_axis("tokens")
    window.charts.redraw_now()
    assert window.charts.curves["loss_train"].xData[-1] == expected

    # At 1024x700 the table folds to its header line, so the charts keep their room; its arrow
    # opens it, and it still fits in the window.
    assert table.table.isVisible()
    window.resize(1024, 700)
    qtbot.waitUntil(lambda: (window.width(), window.height()) == (1024, 700), timeout=3000)
    qtbot.waitUntil(lambda: not table.table.isVisible(), timeout=3000)
    assert table.toggle_button.isVisible()
    assert window.charts.scroll.viewport().height() >= 300
    qtbot.mouseClick(table.toggle_button, Qt.MouseButton.LeftButton)
    assert table.table.isVisible()
    qtbot.wait(50)
    rect = table.rect().translated(table.mapTo(window, QPoint(0, 0)))
    assert window.rect().contains(rect)
    assert window.charts.scroll.viewport().height() >= 150  # a chart still has room above it
    qtbot.mouseClick(table.toggle_button, Qt.MouseButton.LeftButton)  # and folds again
    assert not table.table.isVisible()
    window.resize(1280, 860)
    qtbot.waitUntil(lambda: window.height() == 860, timeout=3000)
    assert not table.table.isVisible()  # the user's choice holds

def test_side_panels_fold_away_from_the_keyboard_and_the_charts_widen(qtbot, window):
    window.resize(1024, 700)
    window.activateWindow()
    qtbot.waitUntil(lambda: (window.width(), window.height()) == (1024, 700), timeout=3000)
    qtbot.waitUntil(window.isActiveWindow, timeout=3000)
    narrow = window.charts.width()
    modifiers = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    QTest.keyClick(window, Qt.Key.Key_L, modifiers)
    QTest.keyClick(window, Qt.Key.Key_H, modifiers)
    qtbot.waitUntil(lambda: not window.left_panel.isVisible() and not window.history.isVisible(),
                    timeout=3000)
    qtbot.waitUntil(lambda: window.charts.width() > narrow + 400, timeout=3000)
    assert not window.panel_actions["settings"].isChecked()
    QTest.keyClick(window, Qt.Key.Key_L, modifiers)
    qtbot.waitUntil(window.left_panel.isVisible, timeout=3000)
    assert window.run_button.isVisible()


def test_hover_header_is_the_step_under_the_mouse_and_a_sparse_curve_says_its_own(qtbot, window):
    messages = train_messages(40)
    for step in (10, 20, 30):  # validation every 10 steps, as a run evaluates
        messages.append({"type": "sample", "step": step, "time": step * 0.1, "phase": "eval",
                         "metrics": {"loss_val": 2.5 - step / 100}})
    run_id = stored_run(RunStore(), "sparse", messages)
    window.history.refresh()
    window.show_stored_run(run_id)
    charts = window.charts
    charts.redraw_now()
    qtbot.wait(50)
    plot = charts.plots["loss"]
    view = plot.getPlotItem().getViewBox()
    gui_support.hover_at(plot, 26.3, 2.0)
    qtbot.waitUntil(lambda: "loss" in charts.readouts, timeout=2000)
    text = charts.readouts["loss"]
    assert text.startswith("step 26\n")  # the train loss' step, where the mouse is
    assert "(at step 20)" in text  # the validation's last reading, said as such
    assert "Train loss: " + format(3.0 / 26 ** 0.2, ".4g") in text
    # The mouse moves on to the history: no read-out is left behind showing a stale step.
    QTest.mouseMove(window.history.table.viewport(), QPoint(20, 20))
    qtbot.waitUntil(lambda: not charts.readouts, timeout=2000)
    assert not charts._readout_items["loss"].isVisible()
    assert not charts._crosshairs["loss"].isVisible()

    # A narrow chart, the mouse near its right end: the read-out's lines start inside the chart
    # (never cut off at the left, where each line's name and value are).
    charts.set_smoothing(0.6)  # longer lines: "(EMA …)" after each value
    window.resize(1024, 700)
    qtbot.waitUntil(lambda: (window.width(), window.height()) == (1024, 700), timeout=3000)
    charts.redraw_now()
    qtbot.wait(50)
    gui_support.hover_at(plot, 38.2, 2.0)
    qtbot.waitUntil(lambda: charts.readouts.get("loss", "").startswith("step 38"), timeout=2000)
    box = charts._readout_items["loss"].sceneBoundingRect()
    inside = view.sceneBoundingRect()
    assert box.left() >= inside.left() - 1, (box, inside)


def infer_messages(steps: int, scale: float) -> list[dict]:
    out = [{"type": "hello", "protocol": 1, "versions": {}, "device": {}, "environment": {}},
           {"type": "started", "run": {"workload": "infer", "device": "cpu", "steps": steps,
                                       "model": {"preset": "gpt-nano"}}}]
    for step in range(1, steps + 1):
        out.append({"type": "sample", "step": step, "time": step * 0.3,
                    "phase": "warmup" if step <= 2 else "measure",
                    "metrics": {"prefill_latency_s": 0.01 * scale, "ttft_s": 0.012 * scale,
                                "decode_latency_s": 0.004 * scale,
                                "decode_tokens_per_s": 250.0 / scale,
                                "prefill_tokens_per_s": 6400.0 / scale,
                                "kv_cache_bytes": 2**20, "rss_bytes": 300 * 2**20}})
    return out


def test_inference_charts_keep_their_newest_steps_with_long_legends(qtbot, window):
    """Defect 4 as reported: an inference run of 12 timed generations, overlaid with long run
    names, at the default 1280 px: every chart shows up to step 12."""
    store = RunStore()
    ids = [stored_run(store, f"inference with a long name for the legend {i}",
                      infer_messages(12, 1 + i / 10)) for i in range(4)]
    window.history.refresh()
    window.show_stored_run(ids[0])
    for run_id in ids[1:]:
        window.history.set_checked(run_id, True)
    window.resize(1280, 860)
    qtbot.waitUntil(lambda: window.width() == 1280, timeout=3000)
    charts = window.charts
    charts.redraw_now()
    qtbot.wait(50)
    assert charts.shown_charts()
    for name in charts.shown_charts():
        view = charts.plots[name].getPlotItem().getViewBox()
        low, high = view.viewRange()[0]
        assert low <= 1 and high >= 12, f"{name}: shows steps {low:.1f}..{high:.1f} of 12"
        plot = charts.plots[name]
        right = plot.mapFromScene(view.sceneBoundingRect().topRight()).x()
        assert right <= plot.width() + 1, f"{name}: the plot runs past its chart"
