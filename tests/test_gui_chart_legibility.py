"""What a chart says at a glance: empty charts say what to do, the toolbar reads at 1024x700, a
run both shown and ticked is drawn once, change markers never overlap, a PNG has the run's name
and no buttons, colours survive a theme switch, a legend click hides its curve, the memory
chart's legend and validation dots, nearby marker labels apart and warnings in view."""

from __future__ import annotations

from PySide6.QtCore import QPoint, Qt

from profiler.store import RunStore
from tests.gui_support import (
    choose,
    click,
    click_run,
    global_rect,
    run_fake,
    stored_run,
    train_messages,
)


def test_empty_charts_say_what_to_do_instead_of_axes_around_nothing(qtbot, window):
    charts = window.charts
    charts.redraw_now()
    loss = charts.plots["loss"]
    assert loss.hint.isVisible() and "press Run" in loss.hint.text()
    axis = loss.getPlotItem().getAxis("left")
    assert not axis.style["showValues"]  # no -0.4 .. 0.4 around nothing
    run_fake(qtbot, window)
    charts.redraw_now()
    assert not loss.hint.isVisible() and axis.style["showValues"]


def test_the_chart_toolbar_is_readable_at_1024x700(qtbot, window):
    from PySide6.QtWidgets import QAbstractButton, QComboBox, QLabel

    window.resize(1024, 700)
    qtbot.waitUntil(lambda: window.width() == 1024, timeout=3000)
    assert window.left_panel.isVisible() and window.history.isVisible()
    run_fake(qtbot, window)
    choose(qtbot, window.form.workload, "infer")
    choose(qtbot, window.charts.axis_combo, "tokens")
    run_fake(qtbot, window)  # the axis note is shown too
    window.charts.redraw_now()
    qtbot.wait(50)
    charts = window.charts
    right = charts.mapToGlobal(QPoint(charts.width(), 0)).x()
    widgets = [w for kind in (QLabel, QComboBox, QAbstractButton) for w in
               charts.toolbar.findChildren(kind) if w.isVisible()]
    assert charts.axis_note in widgets and charts.follow_button in widgets
    for widget in widgets:
        assert widget.width() >= widget.minimumSizeHint().width(), widget
        assert global_rect(widget).right() <= right, widget
        if isinstance(widget, QLabel):
            assert widget.fontMetrics().horizontalAdvance(widget.text()) <= widget.width()


def test_a_run_shown_and_ticked_is_drawn_once(qtbot, window):
    from tests.gui_support import tick

    store = RunStore()
    first = stored_run(store, "first", train_messages(5))
    second = stored_run(store, "second", train_messages(8))
    window.history.refresh()
    tick(qtbot, window.history, first)
    tick(qtbot, window.history, second)
    assert window.charts.overlay_ids() == [first, second]
    window.charts.redraw_now()
    assert "first" in window.charts.legend_text("loss")
    click_run(qtbot, window.history, first)  # shown: its overlay would repeat it
    window.charts.redraw_now()
    assert window.charts.overlay_ids() == [second]
    assert window.charts.legend_text("loss").count("second") == 1
    assert "first" not in window.charts.legend_text("loss")  # drawn once, as the shown run
    assert window.compare.run_ids == [first, second]  # still compared
    click_run(qtbot, window.history, second)  # the other one shown: the first is an overlay again
    window.charts.redraw_now()
    assert window.charts.overlay_ids() == [first]


def test_change_marker_labels_never_overlap(qtbot, window):

    messages = train_messages(100)
    for step in (40, 42, 44, 46, 47, 48, 49, 50, 51, 52, 90):
        messages.append({"type": "event", "kind": "toggle", "step": step,
                         "technique": "precision", "params": {"enabled": step % 2 == 0},
                         "message": f"precision switched at {step}"})
    run_id = stored_run(RunStore(), "many changes", messages)
    window.history.refresh()
    click_run(qtbot, window.history, run_id)
    window.charts.redraw_now()
    qtbot.wait(50)
    shown = 0
    for plot in window.charts.plots.values():
        if not plot.isVisible():
            continue
        labels = [line.label for p, line in window.charts.markers if p is plot]
        assert len(labels) == 11
        rects = [label.sceneBoundingRect() for label in labels if label.isVisible()]
        shown += len(rects)
        for i, rect in enumerate(rects):
            assert not any(rect.intersects(other) for other in rects[:i])
    assert shown >= 8  # most are labelled; the rest keep their line and its tooltip


def test_chart_png_has_the_run_name_and_no_buttons_and_saves_say_where(qtbot, window, tmp_path,
                                                                         monkeypatch):
    from PySide6.QtGui import QImage

    run_fake(qtbot, window)
    charts = window.charts
    charts.redraw_now()
    png = tmp_path / "speed.png"
    monkeypatch.setattr("app.chart_export.QFileDialog.getSaveFileName",
                        lambda *a, **k: (str(png), ""))
    click(qtbot, charts.boxes["speed"].png_button)
    image = QImage(str(png))
    plot = charts.plots["speed"]
    assert image.width() == plot.width()  # the plot only: the header's buttons are left out
    assert plot.height() < image.height() < plot.height() + 80  # under a title and a legend
    assert charts.export.png_title("speed").startswith(f"{charts.live_run_label}: Throughput")
    assert str(png) in window.statusBar().currentMessage()  # it says where it went
    csv = tmp_path / "speed.csv"
    monkeypatch.setattr("app.chart_export.QFileDialog.getSaveFileName",
                        lambda *a, **k: (str(csv), ""))
    click(qtbot, charts.boxes["speed"].csv_button)
    assert csv.exists() and str(csv) in window.statusBar().currentMessage()
    blocked = tmp_path / "no-such-folder" / "x.csv"
    monkeypatch.setattr("app.chart_export.QFileDialog.getSaveFileName",
                        lambda *a, **k: (str(blocked), ""))
    click(qtbot, charts.boxes["speed"].csv_button)
    assert "Cannot write" in window.error_text()


def luminance(color: str) -> float:
    from PySide6.QtGui import QColor

    c = QColor(color)
    return 0.2126 * c.redF() + 0.7152 * c.greenF() + 0.0722 * c.blueF()


def test_overlay_colours_survive_a_theme_switch_and_stay_per_run(qtbot, window):

    store = RunStore()
    ids = [stored_run(store, f"run {i}", train_messages(10)) for i in range(3)]
    window.history.refresh()
    for run_id in ids:
        window.history.set_checked(run_id, True)
    charts = window.charts
    light = {r: charts.overlay_color(r) for r in ids}
    assert len(set(light.values())) == 3
    for run_id in ids:  # one colour per run on every chart it is drawn on
        colors = {charts.overlay_curve(run_id, k).opts["pen"].color().name()
                  for k in ("loss_train", "tokens_per_s", "rss_bytes")}
        assert colors == {light[run_id]}
    window.set_theme("dark")
    try:
        background = luminance("#0f172a")
        for run_id in ids:
            color = charts.overlay_curve(run_id, "loss_train").opts["pen"].color().name()
            assert abs(luminance(color) - background) > 0.4  # readable on the dark background
        dark = {r: charts.overlay_color(r) for r in ids}
        window.set_theme("light")
        assert {r: charts.overlay_color(r) for r in ids} == light  # the same run, the same hue
        assert dark != light
    finally:
        window.set_theme("light")


def test_a_click_on_a_legend_entry_hides_its_curve(qtbot, window):

    run_id = stored_run(RunStore(), "shown", train_messages(10))
    window.history.refresh()
    click_run(qtbot, window.history, run_id)
    charts = window.charts
    charts.redraw_now()
    legend = charts.boxes["loss"].legend
    assert "Train loss" in charts.legend_text("loss")
    assert charts.curves["loss_train"].isVisible()
    # a click on the entry's words: the label's own link at that point
    link = legend_link_at(qtbot, legend, "Train loss")
    assert link == "live|loss_train"
    assert not charts.curves["loss_train"].isVisible()
    legend_link_at(qtbot, legend, "Train loss")
    assert charts.curves["loss_train"].isVisible()


def legend_link_at(qtbot, legend, words: str) -> str:
    """Click the legend entry whose words are `words`, where the label draws them; returns the
    link the label reported."""
    from PySide6.QtGui import QTextDocument

    document = QTextDocument()
    document.setDocumentMargin(0)  # as the label lays its text out
    document.setDefaultFont(legend.font())
    document.setHtml(legend.text())
    document.setTextWidth(legend.contentsRect().width())
    top = legend.contentsRect().y()
    if legend.alignment() & Qt.AlignmentFlag.AlignVCenter:
        top += (legend.contentsRect().height() - document.size().height()) / 2
    cursor = document.find(words)
    assert not cursor.isNull(), words
    layout = document.documentLayout()
    rect = layout.blockBoundingRect(cursor.block())
    start = cursor.selectionStart() - cursor.block().position()  # the first letter of the words
    line = cursor.block().layout().lineForTextPosition(start)
    x = line.cursorToX(start)
    x = x[0] if isinstance(x, tuple) else x
    point = QPoint(int(rect.x() + x) + 4 + legend.contentsRect().x(),
                   int(top + rect.y() + line.y() + line.height() / 2))
    got = []
    legend.linkActivated.connect(got.append)
    qtbot.mouseClick(legend, Qt.MouseButton.LeftButton, pos=point)
    legend.linkActivated.disconnect(got.append)
    assert got, "the click did not reach the entry"
    return got[0]


def test_memory_chart_has_a_legend_and_validation_dots_sit_at_their_value(qtbot, window):

    messages = train_messages(30)
    for message in messages:
        if message.get("type") == "sample" and message["step"] % 10 == 0:
            message["metrics"]["loss_val"] = 5.0 - message["step"] / 10
    run_id = stored_run(RunStore(), "dots", messages)
    window.history.refresh()
    click_run(qtbot, window.history, run_id)
    charts = window.charts
    charts.set_smoothing(0.9)
    charts.redraw_now()
    assert "Process RSS" in charts.legend_text("memory")  # even a single memory curve says which
    dots = charts.curves["loss_val"]
    assert list(dots.yData) == [4.0, 3.0, 2.0]  # measured, not smoothed
    assert list(charts.curves["loss_train"].yData) != [m["metrics"]["loss_train"]
                                                       for m in messages
                                                       if m.get("type") == "sample"]
    charts.set_smoothing(0.0)


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
