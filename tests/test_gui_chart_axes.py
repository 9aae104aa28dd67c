"""The charts' axes, zoom and own controls, as a user meets them: the hover readout, linked
axes, tokens and log scales, export; an axis without meaning for the workload falls back to
step, the wheel zooms steps only and every way back shows the run, a wall-clock axis beside step
and tokens, readable log ticks within a decade, and a growing run that redraws its axes rarely."""

from __future__ import annotations

import math

import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from profiler.store import RunStore
from tests import gui_support
from tests.gui_support import (
    choose,
    click,
    click_run,
    run_fake,
    stored_run,
    train_messages,
    wheel,
)


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


def wheel_over_chart(plot, notches: int) -> None:
    """Wheel notches over the middle of a chart's plotting area, as a user's wheel."""

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
    qtbot.waitUntil(lambda: view.viewRange()[0][1] - view.viewRange()[0][0] < 0.8 * (x1 - x0),
                    timeout=3000)  # x zoomed in
    (z0, z1), (y0, y1) = view.viewRange()
    assert view.autoRangeEnabled()[1]  # y still fits what is in view
    shown = [y for x, y in zip(charts.curves["loss_train"].xData, charts.curves["loss_train"].yData,
                                strict=True) if z0 <= x <= z1]
    assert shown
    qtbot.waitUntil(lambda: view.viewRange()[1][0] <= min(shown)
                    and max(shown) <= view.viewRange()[1][1], timeout=3000)  # y fits them
    # every chart follows the zoom; Follow offers the way back
    s0, s1 = charts.plots["speed"].getPlotItem().getViewBox().viewRange()[0]
    assert abs(s0 - z0) < 1e-6 and abs(s1 - z1) < 1e-6
    assert charts.follow_button.isEnabled()
    # a double click on a chart is the way back

    centre = plot.mapFromScene(view.sceneBoundingRect().center())
    QTest.mouseDClick(plot.viewport(), Qt.MouseButton.LeftButton, pos=centre)
    charts.redraw_now()
    loss = charts.curves["loss_train"]
    # (y fits at the next paint)
    qtbot.waitUntil(lambda: in_view(plot, loss.xData, loss.yData), timeout=3000)
    assert not charts.follow_button.isEnabled()
    # zoomed again, a new run brings its live curve into view
    wheel_over_chart(plot, 4)
    charts.redraw_now()
    assert charts.follow_button.isEnabled()
    run_fake(qtbot, window, steps=12)
    charts.redraw_now()
    loss = charts.curves["loss_train"]
    assert len(loss.xData) == 12
    qtbot.waitUntil(lambda: in_view(plot, loss.xData, loss.yData), timeout=3000)


def test_a_log_axis_within_a_decade_has_readable_ticks(qtbot, window):
    from profiler.store import RunStore

    run_id = stored_run(RunStore(), "narrow", train_messages(40))
    window.history.refresh()
    click_run(qtbot, window.history, run_id)
    charts = window.charts
    click(qtbot, charts.boxes["loss"].log_button)
    charts.redraw_now()
    qtbot.wait(50)
    axis = charts.plots["loss"].getPlotItem().getAxis("left")
    low, high = charts.plots["loss"].getPlotItem().getViewBox().viewRange()[1]
    assert high - low < 1  # less than a decade: pyqtgraph alone gives one tick here
    levels = axis.tickValues(low, high, axis.height())
    labels = [text for spacing, values in levels for text in axis.tickStrings(values, 1, 1)]
    assert len(labels) >= 3 and all(text and text[0].isdigit() for text in labels)


def test_a_wall_clock_axis_beside_step_and_tokens(qtbot, window):
    import time

    began = time.time()
    run_fake(qtbot, window, steps=8)
    ended = time.time()
    charts = window.charts
    choose(qtbot, charts.axis_combo, "wall")
    charts.redraw_now()
    assert charts.x_mode == "wall" and not charts.axis_note.isVisible()
    x = charts.curves["loss_train"].xData
    assert began - 1 <= x[0] <= x[-1] <= ended + 1  # epoch seconds of the run's steps
    axis = charts.plots["loss"].getPlotItem().getAxis("bottom")
    assert type(axis).__name__ == "DateAxisItem"
    assert axis.labelText == "time of day"
    # a stored run: from when its stream was last written, to about a second
    run_id = window.run_id
    window.history.refresh()
    click_run(qtbot, window.history, run_id)
    charts.redraw_now()
    stored = charts.curves["loss_train"].xData
    assert abs(stored[-1] - x[-1]) < 2.0
    # and back to steps: plain numbers again
    choose(qtbot, charts.axis_combo, "step")
    charts.redraw_now()
    assert type(charts.plots["loss"].getPlotItem().getAxis("bottom")).__name__ == "AxisItem"
    assert list(charts.curves["loss_train"].xData) == list(range(1, 9))


def test_a_growing_run_redraws_its_axes_rarely(qtbot):
    """What made painting dearer (profiled in a redraw turn): the shared x range moved with
    every step, so every axis (and its grid) was drawn again each turn, at several times the
    cost of the curve. Following a run now moves the range only when the run reaches its end."""
    import numpy as np

    from app.charts import LiveCharts

    charts = LiveCharts()
    qtbot.addWidget(charts)
    charts.resize(1000, 820)
    charts.show()
    n = 20_000
    steps = np.arange(1, n + 1, dtype=float)
    charts.fill("loss_train", steps, steps * 0.01, 2 + np.sin(steps / 500))
    charts.redraw_now()
    moves = []
    view = charts.plots["loss"].getPlotItem().getViewBox()
    view.sigXRangeChanged.connect(lambda *_: moves.append(view.viewRange()[0][1]))
    for step in range(n + 1, n + 401):
        charts.add_samples([{"type": "sample", "step": step, "time": step * 0.01,
                             "metrics": {"loss_train": 2.0}}])
        charts.redraw_now()
        assert view.viewRange()[0][1] >= step  # the newest step is always in view
    assert len(moves) <= 2  # not once per step (400 steps)


def test_hover_readout_linked_axes_tokens_log_and_export(qtbot, window, tmp_path, monkeypatch):
    store = RunStore()
    live = stored_run(store, "live", train_messages(40, rss_mib=120))
    other = stored_run(store, "other", train_messages(40, loss0=4.0, rss_mib=90))
    window.history.refresh()
    window.show_stored_run(live)
    window.history.set_checked(other, True)
    charts = window.charts
    charts.redraw_now()
    qtbot.wait(50)

    # Hover: the mouse over step ~20 of the loss chart reads every curve, the other run's too.
    plot = charts.plots["loss"]
    gui_support.hover_at(plot, 20.2, 2.0)
    qtbot.waitUntil(lambda: "loss" in charts.readouts, timeout=2000)
    text = charts.readouts["loss"]
    assert text.startswith("step 20")
    assert "Train loss: " + format(3.0 / 20 ** 0.2, ".4g") in text
    assert "other: " + format(4.0 / 20 ** 0.2, ".4g") in text
    assert charts._crosshairs["memory"].isVisible()  # the crosshair is on every chart

    # Zoom one chart with the wheel: every chart follows; Follow undoes it.
    speed = charts.plots["speed"]
    wheel(speed.viewport(), 3)
    low, high = speed.getPlotItem().getViewBox().viewRange()[0]
    assert high - low < 35
    for plot in charts.plots.values():
        assert plot.getPlotItem().getViewBox().viewRange()[0] == pytest.approx([low, high])
    qtbot.mouseClick(charts.follow_button, Qt.MouseButton.LeftButton)
    charts.redraw_now()
    assert charts.plots["memory"].getPlotItem().getViewBox().viewRange()[0][1] >= 40

    # The x axis by tokens seen: 256 tokens per step.
    charts.axis_combo.setCurrentText("tokens")
    charts.redraw_now()
    assert charts.curves["loss_train"].xData[-1] == 40 * 256
    assert charts.plots["speed"].getPlotItem().getAxis("bottom").labelText == "tokens seen"
    charts.axis_combo.setCurrentText("step")

    # Log scale from the chart's own button.
    qtbot.mouseClick(charts.boxes["loss"].log_button, Qt.MouseButton.LeftButton)
    assert charts.plots["loss"].getPlotItem().ctrl.logYCheck.isChecked()

    # The predicted memory from `started`, as a line on the memory chart.
    assert charts.predicted_memory_bytes == 80 * 2**20
    charts.redraw_now()
    assert charts.plots["memory"].getPlotItem().getViewBox().viewRange()[1][0] <= 80

    # CSV and PNG from the chart's buttons.
    target = tmp_path / "memory.csv"
    monkeypatch.setattr("app.chart_export.QFileDialog.getSaveFileName",
                        lambda *a, **k: (str(target), ""))
    qtbot.mouseClick(charts.boxes["memory"].csv_button, Qt.MouseButton.LeftButton)
    rows = target.read_text().splitlines()
    assert rows[0] == "run,metric,label,step,time_s,value,unit"
    assert len(rows) == 1 + 40 + 40  # every reading of both runs, not the decimated view
    assert any(r.startswith("other,rss_bytes") and r.endswith(",90,MiB") for r in rows)
    png = tmp_path / "loss.png"
    monkeypatch.setattr("app.chart_export.QFileDialog.getSaveFileName",
                        lambda *a, **k: (str(png), ""))
    qtbot.mouseClick(charts.boxes["loss"].png_button, Qt.MouseButton.LeftButton)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
