"""The app as a daily run browser (issue 35): each defect done the way a user meets it, with
clicks at the real coordinates of the widgets (offscreen; tests/test_gui_x11.py does the layout
items on a real X server)."""

from __future__ import annotations

import math

from tests import gui_support
from tests.gui_support import choose, click, fake_worker

window = gui_support.window


def run_fake(qtbot, win, steps: int = 6) -> str:
    """Press Run (with the fake worker) and wait until the run has ended; its id."""
    win.worker_command = fake_worker(0.01)
    win.form.steps.setValue(steps)
    click(qtbot, win.run_button)
    qtbot.waitUntil(lambda: win.run_id is not None and not win.running, timeout=30000)
    return win.run_id


# --- 1: an axis without meaning for the workload falls back to step ---------------------------------
def test_inference_charts_fall_back_to_step_on_the_tokens_axis(qtbot, window):
    run_fake(qtbot, window)  # a train run: tokens seen has a meaning
    choose(qtbot, window.charts.axis_combo, "tokens")
    window.charts.redraw_now()
    assert window.charts.x_mode == "tokens" and not window.charts.axis_note.isVisible()
    choose(qtbot, window.form.workload, "infer")
    run_fake(qtbot, window)
    charts = window.charts
    charts.redraw_now()
    # Drawn by step, and said beside the choice; the user's choice stays.
    assert charts.x_mode == "step" and charts.axis_combo.currentText() == "tokens"
    assert charts.axis_note.isVisible() and "step" in charts.axis_note.text()
    x = charts.curves["decode_tokens_per_s"].xData
    assert x is not None and len(x) == 6 and all(math.isfinite(v) for v in x)
    assert charts.plots["speed"].getPlotItem().getAxis("bottom").labelText == "step"
    # A train run shown again draws by tokens seen, as chosen.
    choose(qtbot, window.form.workload, "train")
    run_fake(qtbot, window)
    charts.redraw_now()
    assert charts.x_mode == "tokens" and not charts.axis_note.isVisible()
