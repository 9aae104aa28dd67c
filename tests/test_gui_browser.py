"""The app as a daily run browser (issue 35): each defect done the way a user meets it, with
clicks at the real coordinates of the widgets (offscreen; tests/test_gui_x11.py does the layout
items on a real X server)."""

from __future__ import annotations

import math

from PySide6.QtCore import Qt

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


# --- 2: zoom x with the wheel, y fitted; back by Follow, a double click, or a new run ---------------
def wheel_over_chart(plot, notches: int) -> None:
    """Wheel notches over the middle of a chart's plotting area, as a user's wheel."""
    from PySide6.QtCore import QPoint, QPointF
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    view = plot.getPlotItem().getViewBox()
    centre = plot.mapFromScene(view.sceneBoundingRect().center())
    event = QWheelEvent(QPointF(centre), QPointF(plot.viewport().mapToGlobal(centre)),
                        QPoint(0, 0), QPoint(0, 120 * notches), Qt.MouseButton.NoButton,
                        Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(plot.viewport(), event)


def in_view(plot, xs, ys) -> bool:
    (x0, x1), (y0, y1) = plot.getPlotItem().getViewBox().viewRange()
    return x0 <= min(xs) and max(xs) <= x1 and y0 <= min(ys) and max(ys) <= y1


def test_the_wheel_zooms_steps_only_and_every_way_back_shows_the_run(qtbot, window):
    run_fake(qtbot, window, steps=30)
    charts = window.charts
    charts.redraw_now()
    plot = charts.plots["loss"]
    view = plot.getPlotItem().getViewBox()
    (x0, x1), _ = view.viewRange()
    wheel_over_chart(plot, 3)  # zoom in
    charts.redraw_now()
    (z0, z1), (y0, y1) = view.viewRange()
    assert z1 - z0 < 0.8 * (x1 - x0)  # x zoomed in
    assert view.autoRangeEnabled()[1]  # y still fits what is in view
    shown = [y for x, y in zip(charts.curves["loss_train"].xData, charts.curves["loss_train"].yData,
                                strict=True) if z0 <= x <= z1]
    assert shown and y0 <= min(shown) and max(shown) <= y1
    # every chart follows the zoom; Follow offers the way back
    assert charts.plots["speed"].getPlotItem().getViewBox().viewRange()[0] == [z0, z1]
    assert charts.follow_button.isEnabled()
    # a double click on a chart is the way back
    from PySide6.QtTest import QTest

    centre = plot.mapFromScene(view.sceneBoundingRect().center())
    QTest.mouseDClick(plot.viewport(), Qt.MouseButton.LeftButton, pos=centre)
    charts.redraw_now()
    loss = charts.curves["loss_train"]
    assert in_view(plot, loss.xData, loss.yData) and not charts.follow_button.isEnabled()
    # zoomed again, a new run brings its live curve into view
    wheel_over_chart(plot, 4)
    charts.redraw_now()
    assert charts.follow_button.isEnabled()
    run_fake(qtbot, window, steps=12)
    charts.redraw_now()
    loss = charts.curves["loss_train"]
    assert len(loss.xData) == 12 and in_view(plot, loss.xData, loss.yData)
