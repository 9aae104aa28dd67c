"""The desktop app as a new user handles it, each case done the way a user does it: clicks at the check box's real square, the wheel over a field inside the scrolled panel,
text typed into a field. Offscreen; the real-X-server version is tests/test_gui_x11.py."""

from __future__ import annotations

import re

import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QCheckBox

from app.main import MainWindow
from profiler.config import RunConfig
from profiler.store import RunStore
from tests import gui_support
from tests.gui_support import dispose, fake_worker, indicator_centre, stored_run, train_messages


def type_into(spin, text: str) -> None:
    """Select the field's text, type over it and press Enter, like a user."""
    spin.setFocus()
    spin.lineEdit().selectAll()
    QTest.keyClicks(spin.lineEdit(), text)
    QTest.keyClick(spin.lineEdit(), Qt.Key.Key_Return)


def wheel(widget, notches: int) -> None:
    """Mouse-wheel notches over the middle of a widget (negative: towards the user)."""
    centre = QPointF(widget.rect().center())
    event = QWheelEvent(centre, QPointF(widget.mapToGlobal(centre.toPoint())), QPoint(0, 0),
                        QPoint(0, 120 * notches), Qt.MouseButton.NoButton,
                        Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


# --- the check box's square -----------------------------------------------------------------------
def test_every_technique_check_box_toggles_from_a_click_on_its_square(qtbot, window):
    scroll = window.settings_scroll
    clicked = 0
    for name, row in window.techniques.rows.items():
        box = row.enable
        if not isinstance(box, QCheckBox) or not box.isEnabled():
            continue
        QApplication.processEvents()  # the last toggle's layout change, before aiming
        scroll.ensureWidgetVisible(box)
        QApplication.processEvents()
        point = indicator_centre(box)
        # Nothing lies over the square (an invisible ParamControl used to).
        hit = box.window().childAt(box.mapTo(box.window(), point))
        assert hit is box, f"{name}: {hit!r} lies over the check box"
        before = box.isChecked()
        qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=point)
        assert box.isChecked() != before, f"{name}: a click on its square did nothing"
        qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=point)
        assert box.isChecked() == before
        clicked += 1
    assert clicked >= 5  # every one this machine can run (the rest are greyed out)


# --- batch size of inference ----------------------------------------------------------------------
@pytest.mark.parametrize("workload", ["infer", "compress"])
def test_inference_uses_the_forms_batch_size(qtbot, window, workload):
    window.worker_command = fake_worker()
    form = window.form
    form.workload.setCurrentIndex(form.workload.findData(workload))
    form.device.setCurrentText("cpu")
    type_into(form.batch_size, "16")
    if workload == "compress":
        # Refused in the panel's words (not "[techniques.NAME]" TOML); the user ticks one.
        problem = window.check_settings()
        assert problem.startswith("Techniques: a compress run needs")
        assert "[techniques." not in problem and "“Int8 dynamic quantization”" in problem
        box = window.techniques.rows["quantize_int8_dynamic"].enable
        window.settings_scroll.ensureWidgetVisible(box)
        QApplication.processEvents()
        qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=indicator_centre(box))
        assert window.check_settings() == ""
    qtbot.mouseClick(window.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.running, timeout=30_000)
    stored = RunConfig.from_toml(RunStore().open_run(window.run_id).config_text())
    assert stored.workload == workload and stored.infer.batch_size == 16
    window.set_config(stored)  # and back: the form shows the inference batch
    assert form.batch_size.value() == 16


# --- the wheel scrolls the panel ------------------------------------------------------------------
def test_wheel_over_a_field_scrolls_the_panel_and_changes_nothing(qtbot, window):
    window.resize(1024, 700)
    qtbot.wait(50)
    bar = window.settings_scroll.verticalScrollBar()
    assert bar.maximum() > 0  # the panel is taller than the window: it scrolls
    form = window.form
    steps, size = form.steps.value(), form.model_size.currentData()
    window.settings_scroll.ensureWidgetVisible(form.steps)
    top = bar.value()
    for _ in range(3):
        wheel(form.steps, -1)
    assert form.steps.value() == steps
    assert bar.value() > top  # the panel moved instead
    bar.setValue(0)
    wheel(form.model_size, -1)
    assert form.model_size.currentData() == size
    spin = window.techniques.rows["grad_clip"].controls["max_norm"].widget
    window.techniques.rows["grad_clip"].enable.setChecked(True)
    value = spin.value()
    wheel(spin, -2)
    assert spin.value() == value


# --- the window fits; the charts keep their newest steps ------------------------------------------
def test_window_fits_1024x700_and_charts_show_the_newest_steps_with_long_legends(qtbot, window):
    store = RunStore()
    names = ["a rather long run name for the legend " + str(i) for i in range(4)]
    ids = [stored_run(store, name, train_messages(40, loss0=3 + i)) for i, name in enumerate(names)]
    window.history.refresh()
    for run_id in ids:
        window.history.set_checked(run_id, True)
    for size in ((1280, 860), (1024, 700)):
        window.resize(*size)
        qtbot.waitUntil(lambda s=size: (window.width(), window.height()) == s, timeout=3000)
        window.charts.redraw_now()
        qtbot.wait(50)
        for name in window.charts.shown_charts():
            plot = window.charts.plots[name]
            view = plot.getPlotItem().getViewBox()
            right = plot.mapFromScene(view.sceneBoundingRect().topRight()).x()
            assert right <= plot.width() + 1, f"{name}: the plot runs past its chart"
            assert view.viewRange()[0][1] >= 40, f"{name}: the newest steps are cut off"
            assert names[3] in window.charts.legend_text(name) or name != "loss"
        inside = window.rect()
        for widget in (window.history, window.statusBar(), window.run_button, window.charts):
            rect = widget.rect().translated(widget.mapTo(window, QPoint(0, 0)))
            assert inside.contains(rect), f"{widget.objectName() or widget}: off the window"
    assert window.minimumSizeHint().width() <= 1024
    assert window.minimumSizeHint().height() <= 666  # 1600x1000 at QT_SCALE_FACTOR=1.5
    window.charts.resize(600, 600)  # a narrow charts area: one chart per row
    window.charts.redraw_now()
    grid = window.charts._grid
    columns = {grid.getItemPosition(grid.indexOf(window.charts.boxes[n]))[1]
               for n in window.charts.shown_charts()}
    assert columns == {0}


# --- names, rename, clear comparison, colours, banner ---------------------------------------------
def test_runs_get_their_own_names_and_a_rename_shows_at_once(qtbot, window):
    window.worker_command = fake_worker()
    window.form.device.setCurrentText("cpu")
    window.form.steps.setValue(3)
    ids = []
    for _ in range(2):
        qtbot.mouseClick(window.run_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: not window.running, timeout=30_000)
        ids.append(window.run_id)
    names = [window.history.run_name(r) for r in ids]
    assert names == ["nano #1", "nano #2"]
    for run_id in ids:
        window.history.set_checked(run_id, True)
    window.charts.redraw_now()
    assert "nano #1" in window.charts.legend_text("speed")
    window.history.rename_run(ids[0], "baseline run")
    assert "baseline run" in window.charts.legend_text("speed")
    assert window.compare.baseline.findText("baseline run") >= 0

    qtbot.mouseClick(window.charts.clear_overlays_button, Qt.MouseButton.LeftButton)
    assert window.history.checked_run_ids() == []
    assert all(window.history.table.item_of(r).checkState(0) == Qt.CheckState.Unchecked
               for r in window.history.run_ids())
    window.charts.redraw_now()
    assert "baseline run" not in window.charts.legend_text("speed")
    assert window.compare.baseline.count() == 0


def _distance(a: str, b: str) -> float:
    ra, rb = (tuple(int(h.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4)) for h in (a, b))
    return sum((x - y) ** 2 for x, y in zip(ra, rb, strict=True)) ** 0.5


def test_an_overlay_never_looks_like_a_live_curve_and_the_banner_follows_its_run(qtbot, window):
    store = RunStore()
    ids = [stored_run(store, f"run {i}", train_messages(10)) for i in range(3)]
    window.history.refresh()
    window.show_stored_run(ids[0])
    for run_id in ids[1:]:
        window.history.set_checked(run_id, True)
    window.charts.redraw_now()
    for run_id in ids[1:]:
        color = window.charts.overlay_color(run_id)
        item = window.charts.overlay_curve(run_id, "rss_bytes")
        assert item.opts["pen"].style() == Qt.PenStyle.DashLine
        for key, live in window.charts.curves.items():
            assert _distance(color, live.opts["pen"].color().name()) > 60, (run_id, key)
    window.show_error("The run was killed: boom.", run_id=ids[0])
    window.history.select(ids[0])
    assert window.error_text()
    window.history.select(ids[1])
    assert window.error_text() == ""


# --- marker labels, warnings ----------------------------------------------------------------------
def test_nearby_marker_labels_do_not_overlap_and_warnings_stay_in_view(qtbot, window):
    window.worker_command = [__import__("sys").executable, "-c", WARNING_WORKER]
    window.form.device.setCurrentText("cpu")
    qtbot.mouseClick(window.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.running, timeout=30_000)
    assert "bf16 matmuls measured 3x slower" in window.notice_text()
    charts = window.charts
    charts.redraw_now()
    assert [s for s, _ in charts.marker_steps] == [51, 54, 55]
    labels = [line.label for plot, line in charts.markers if plot is charts.plots["loss"]]
    rects = [label.mapRectToScene(label.boundingRect()) for label in labels]
    for i in range(len(rects)):
        for j in range(i + 1, len(rects)):
            assert not rects[i].intersects(rects[j]), "marker labels overlap"


WARNING_WORKER = """
import json, sys
def send(m):
    sys.stdout.write(json.dumps(m) + "\\n"); sys.stdout.flush()
send({"type": "hello", "protocol": 1, "versions": {}, "device": {}, "environment": {}})
send({"type": "started", "run": {"workload": "train", "steps": 100, "device": "cpu"}})
send({"type": "event", "kind": "warning", "message": "bf16 matmuls measured 3x slower than fp32 on this CPU"})
for step in range(1, 101):
    send({"type": "sample", "step": step, "time": step * 0.1, "phase": "measure",
          "metrics": {"loss_train": 3.0, "tokens_per_s": 100.0}})
    if step in (51, 54, 55):
        send({"type": "event", "kind": "toggle", "step": step, "technique": "precision",
              "params": {"enabled": step != 54}, "message": "precision changed"})
send({"type": "done", "status": "completed", "summary": {}})
sys.stdin.read()
"""


# --- out-of-range input ---------------------------------------------------------------------------
def test_typed_out_of_range_values_are_kept_and_refused_in_the_words_on_screen(qtbot, window):
    form = window.form
    form.device.setCurrentText("cpu")
    techniques_box = window.techniques.parentWidget()
    top_before = techniques_box.mapTo(window, QPoint(0, 0)).y()
    type_into(form.batch_size, "0")
    assert form.batch_size.value() == 0  # kept, not silently made 1
    problem = window.check_settings()
    assert problem.startswith("Batch size: must be 1 or more")
    assert "train.batch_size" not in window.run_controls.validation.text()
    assert "Batch size" in window.run_controls.validation.text()
    # The sentence did not push the panel down under the mouse.
    assert techniques_box.mapTo(window, QPoint(0, 0)).y() == top_before
    type_into(form.batch_size, "4")
    type_into(form.learning_rate, "1000")
    assert form.learning_rate.value() == pytest.approx(1000.0)
    assert window.check_settings().startswith("Learning rate:")
    type_into(form.learning_rate, "0.001")
    row = window.techniques.rows["grad_accumulation"]
    row.enable.setChecked(True)
    spin = row.controls["micro_batches"].widget
    type_into(spin, "100000")
    assert spin.value() == 100000
    problem = window.check_settings()
    assert problem.startswith("Gradient accumulation › micro batches: must be at most 1024, "
                              "got 100000"), problem
    assert "techniques." not in window.run_controls.validation.text()
    qtbot.mouseClick(window.run_button, Qt.MouseButton.LeftButton)
    assert window.run_id is None  # refused, in the panel's words
    assert "micro" in window.error_text() and "techniques." not in window.error_text()


# --- stale or wrong -------------------------------------------------------------------------------
def test_stale_and_wrong_words_are_gone(qtbot, window, tmp_path):
    form = window.form
    form.model_size.setCurrentIndex(form.model_size.findData("gpt-mini"))
    from profiler.models.presets import GPT_PRESETS

    assert GPT_PRESETS["gpt-mini"].description in form.model_note.text()
    # A train run cannot start from a past run's weights: not offered.
    run_item = form.model_source.model().item(form.model_source.findData("run"))
    assert not run_item.isEnabled()
    form.workload.setCurrentIndex(form.workload.findData("infer"))
    assert run_item.isEnabled()
    form.workload.setCurrentIndex(form.workload.findData("train"))
    # No momentum for AdamW; there for SGD.
    optimizer = window.techniques.rows["optimizer"]
    assert "momentum" not in optimizer.shown_params()
    optimizer.controls["algorithm"].widget.setCurrentText("sgd")
    assert "momentum" in optimizer.shown_params()
    optimizer.controls["algorithm"].widget.setCurrentText("adamw")
    # No green "Fits" for a model that cannot run.
    type_into(form.seq_len, "100000")
    window.check_settings()
    assert not window.estimate.fit.text().startswith("Fits")
    type_into(form.seq_len, "64")

    store = RunStore()
    figures = {"perplexity_change_percent": {"value": 0.6, "unit": "%", "how": "x"}}
    done = stored_run(store, "compressed", train_messages(3, summary={"figures": figures}))
    killed = stored_run(store, "killed one", train_messages(7), exit_code=-9, killed=True)
    window.history.refresh()
    window.history.select(done)
    values = [row["value"] for row in window.summary_view.rows]
    assert "0.600 %" in values  # as the report says it (one formatter), never a rounded "1 %"
    window.history.select(killed)
    labels = window.summary_view.labels()
    assert "Last step reached" in labels and any("(last)" in label for label in labels)

    plain = RunConfig(name="plain", device="cpu")
    tf32 = RunConfig(name="tf32", device="cpu")
    tf32.techniques = {"tf32": {}}
    a = stored_run(store, "plain", train_messages(2), config=plain)
    b = stored_run(store, "tf32", train_messages(2), config=tf32)
    window.history.refresh()
    window.set_compared([a, b])
    assert window.compare.wait()
    keys = [window.compare.diff_keys.item(r, 0).text()
            for r in range(window.compare.diff_keys.rowCount())]
    assert "techniques" not in keys and "techniques.tf32" in keys


def test_no_stale_speed_after_stop(qtbot, window):
    window.worker_command = fake_worker(0.05)
    window.form.device.setCurrentText("cpu")
    window.form.steps.setValue(2000)
    qtbot.mouseClick(window.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "tokens/s" in window.speed_label.text(), timeout=30_000)
    qtbot.mouseClick(window.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.running, timeout=30_000)
    assert window.speed_label.text() == ""


# --- the charts' own controls ---------------------------------------------------------------------
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


def test_compress_quality_sentence_and_neutral_deltas(qtbot, window):
    store = RunStore()
    sentence = "Perplexity rose 0.6 % (21.3 -> 21.4) after pruning 30 % of the weights."
    base = stored_run(store, "base", train_messages(3, summary={"figures": {
        "tokens_per_s": {"value": 1000.0, "unit": "tokens/s", "how": "x"}}}))
    noisy = stored_run(store, "noisy", train_messages(3, summary={
        "quality_loss": sentence, "figures": {
            "tokens_per_s": {"value": 1100.0, "unit": "tokens/s", "how": "x"}}}))
    window.history.refresh()
    window.show_stored_run(noisy)
    assert sentence in window.notice_text()
    window.set_compared([base, noisy])
    window.compare.set_baseline(base)
    assert window.compare.wait()
    table = window.compare.table
    cell = next(table.item(r, 3) for r in range(table.rowCount())
                if table.item(r, 0).text().startswith("Throughput"))
    assert cell.text() == "+10.0 % (not comparable)"
    assert cell.data(Qt.ItemDataRole.UserRole) == "not comparable"  # a bare number: no verdict
    assert "too few measured steps" in cell.toolTip()  # the reason, said
    assert cell.foreground().color().name() not in ("#15803d", "#b91c1c")


# --- the warm worker ------------------------------------------------------------------------------
def test_a_warm_worker_waits_for_run_and_nothing_is_left_behind(qtbot, effiscope_home):
    win = MainWindow(warm_worker=True)
    win.warm_command = gui_support.warm_fake_worker()
    try:
        win.show()
        win.start_warm_worker()
        warm = win.warm
        qtbot.waitUntil(lambda: warm.ready, timeout=30_000)  # hello sent, waiting for start
        pid = warm.pid
        win.form.steps.setValue(5)  # settings change: the waiting worker stays as it is
        win.techniques.rows["grad_clip"].enable.setChecked(True)
        win.check_settings()
        assert win.warm is warm and warm.pid == pid
        win.form.device.setCurrentText("cpu")
        qtbot.mouseClick(win.run_button, Qt.MouseButton.LeftButton)
        assert win.link.pid == pid  # the run went to the worker that was already up
        qtbot.waitUntil(lambda: not win.running, timeout=30_000)
        run = RunStore().open_run(win.run_id)
        kinds = [m.get("type") for m in run.messages()]
        assert kinds[0] == "hello" and kinds.count("sample") == 5 and kinds[-1] == "done"
        assert run.meta()["status"] == "completed"
        qtbot.waitUntil(lambda: win.warm is not None and win.warm.alive, timeout=10_000)
        assert win.warm.pid != pid  # a fresh one for the next run
    finally:
        dispose(win)  # closing kills the waiting worker: conftest fails a leftover process
    assert not list((effiscope_home / "warm-workers").glob("*.log"))


def test_run_names_never_repeat():
    store = RunStore()
    win = MainWindow()
    try:
        stored_run(store, "nano #1", train_messages(1))
        stored_run(store, "nano #4", train_messages(1))
        assert win.unique_run_name("nano") == "nano #5"
        assert win.unique_run_name("nano #2") == "nano #5"
        assert re.fullmatch(r"mini #1", win.unique_run_name("mini"))
    finally:
        dispose(win)
