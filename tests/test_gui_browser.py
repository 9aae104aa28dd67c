"""The app as a daily run browser (issue 35): each defect done the way a user meets it, with
clicks at the real coordinates of the widgets (offscreen; tests/test_gui_x11.py does the layout
items on a real X server)."""

from __future__ import annotations

import math

from PySide6.QtCore import QPoint, Qt

from tests.gui_support import choose, click, click_run, fake_worker, stored_run, train_messages


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
    from PySide6.QtTest import QTest

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


# --- 3: the run table -------------------------------------------------------------------------------
def header_click(qtbot, table, key: str) -> None:
    from app.run_table import COLUMN_KEYS

    header = table.header()
    column = COLUMN_KEYS.index(key)
    x = header.sectionViewportPosition(column) + header.sectionSize(column) // 2
    qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton,
                     pos=QPoint(x, header.height() // 2))


def drag(widget, start: QPoint, end: QPoint) -> None:
    """A press, a move with the button held and a release, as a user drags."""
    from PySide6.QtCore import QEvent, QPointF
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    for kind, point, button, buttons in (
            (QEvent.Type.MouseMove, start, none, none),
            (QEvent.Type.MouseButtonPress, start, left, left),
            (QEvent.Type.MouseMove, (start + end) / 2, none, left),
            (QEvent.Type.MouseMove, end, none, left),
            (QEvent.Type.MouseButtonRelease, end, left, none)):
        local = QPointF(point)
        event = QMouseEvent(kind, local, QPointF(widget.mapToGlobal(point)), button, buttons,
                            Qt.KeyboardModifier.NoModifier)
        QApplication.sendEvent(widget, event)


def elided(table, run_id: str, text: str) -> bool:
    """Whether the run's name is cut in its column, as the style lays the cell out."""
    from PySide6.QtWidgets import QStyle, QStyleOptionViewItem

    index = table.indexFromItem(table.reveal(run_id), 0)
    option = QStyleOptionViewItem()
    table.initViewItemOption(option)
    option.rect = table.visualRect(index)
    option.features |= QStyleOptionViewItem.ViewItemFeature.HasCheckIndicator
    option.features |= QStyleOptionViewItem.ViewItemFeature.HasDisplay
    option.text = text
    room = table.style().subElementRect(QStyle.SubElement.SE_ItemViewItemText, option, table)
    return table.fontMetrics().horizontalAdvance(text) > room.width()


def repeat_and_tune_runs(store) -> dict:
    """Two plain runs, a series of three repeats, a tune run with two trials."""
    from profiler.config import RunConfig

    ids = {"plain": stored_run(store, "a very long run name that used to be cut", train_messages(
        4, summary={"figures": {"tokens_per_s": {"value": 900.0, "unit": "tokens/s"}}}))}
    ids["fast"] = stored_run(store, "fast one", train_messages(4, summary={"figures": {
        "tokens_per_s": {"value": 5000.0, "unit": "tokens/s"}}}))
    for index in (1, 2, 3):
        config = RunConfig(name="", device="cpu")
        config.train.batch_size = 4
        run_id = stored_run(store, f"nano #7 repeat {index}/3", train_messages(3), config=config)
        store.set_tags(run_id, ["repeats:abcd1234"])
        ids[f"repeat{index}"] = run_id
    ids["tune"] = stored_run(store, "tune of nano", train_messages(2))
    store.set_tags(ids["tune"], ["tune"])
    for index in (1, 2):
        run_id = stored_run(store, f"tune trial #{index}: batch 8", train_messages(2))
        store.set_tags(run_id, ["tune", f"tune:{ids['tune']}"])
        ids[f"trial{index}"] = run_id
    return ids


def test_run_table_columns_sorting_groups_and_full_names(qtbot, window):
    from app.run_table import COLUMN_KEYS, GROUP_ROLE, RUN_ID_ROLE
    from profiler.store import RunStore

    ids = repeat_and_tune_runs(RunStore())
    history = window.history
    history.refresh()
    table = history.table
    # repeats fold under one group row, trials under their tune's run
    groups = [table.topLevelItem(i) for i in range(table.topLevelItemCount())
              if table.topLevelItem(i).data(0, GROUP_ROLE)]
    assert len(groups) == 1 and groups[0].childCount() == 3
    assert "3 repeats" in groups[0].text(0)
    tune = table.item_of(ids["tune"])
    assert tune.parent() is None and tune.childCount() == 2
    assert table.item_of(ids["trial1"]).parent() is tune
    assert table.topLevelItemCount() == 4  # two runs, one group, one tune
    # a name is readable at 1280x860, a long one once the window is wider (1920x1080)
    assert not elided(table, ids["fast"], "baseline bf16 #12")
    window.resize(1920, 1080)
    qtbot.waitUntil(lambda: not elided(table, ids["plain"], history.run_name(ids["plain"])),
                    timeout=3000)
    window.resize(1280, 860)
    # columns the user chooses: the header's menu adds Workload and Techniques
    assert not table.column_shown("workload")
    menu = history._fill_columns_menu()
    next(a for a in menu.actions() if a.text() == "Workload").trigger()
    assert table.column_shown("workload")
    assert table.cell(ids["plain"], "workload") == "train"
    # sort by speed: a click on its header, again for the other way round
    def order() -> list[str]:
        tops = [table.topLevelItem(i).data(0, RUN_ID_ROLE)
                for i in range(table.topLevelItemCount())]
        return [r for r in tops if r in (ids["plain"], ids["fast"])]

    header_click(qtbot, table, "speed")
    assert order() == [ids["plain"], ids["fast"]]  # 900 before 5,000
    header_click(qtbot, table, "speed")
    assert order() == [ids["fast"], ids["plain"]]
    # a column is resized by dragging its edge
    header = table.header()
    column = COLUMN_KEYS.index("speed")
    edge = header.sectionViewportPosition(column) + header.sectionSize(column) - 1
    before = header.sectionSize(column)
    drag(header.viewport(), QPoint(edge, header.height() // 2),
         QPoint(edge + 40, header.height() // 2))
    assert header.sectionSize(column) > before


def test_click_shows_a_run_loads_its_settings_and_deletes_several(qtbot, window, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    from profiler.config import RunConfig
    from profiler.store import RunStore

    store = RunStore()
    config = RunConfig(name="", device="cpu")
    config.train.batch_size = 3
    config.train.seq_len = 48
    first = stored_run(store, "three by forty-eight", train_messages(5), config=config)
    second = stored_run(store, "other", train_messages(8))
    third = stored_run(store, "third", train_messages(2))
    history = window.history
    history.refresh()
    # a click on a row draws that run: no Show button
    click_run(qtbot, history, first)
    assert window._shown_run_id == first and window.charts.point_count("loss_train") == 5
    click_run(qtbot, history, second)
    assert window._shown_run_id == second and window.charts.point_count("loss_train") == 8
    # load this run's settings
    click_run(qtbot, history, first)
    assert window.form.batch_size.value() != 3
    click(qtbot, history.load_button)
    assert window.form.batch_size.value() == 3 and window.form.seq_len.value() == 48
    # Ctrl-click a second run, Delete… removes both (after one question)
    click_run(qtbot, history, third, modifier=Qt.KeyboardModifier.ControlModifier)
    assert set(history.table.selected_ids()) == {first, third}
    asked = []
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: asked.append(a[2]) or QMessageBox.StandardButton.Yes)
    click(qtbot, history.delete_button)
    assert len(asked) == 1 and "2 runs" in asked[0]
    assert history.run_ids() == [second]
    assert not (store.runs_dir / first).exists() and not (store.runs_dir / third).exists()


def test_a_tune_is_listed_while_it_runs(qtbot, window):
    import threading

    from tests.test_gui_tune import Surface

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


def test_a_tick_compares_a_run_without_drawing_it_alone(qtbot, window):
    from profiler.store import RunStore
    from tests.gui_support import tick

    store = RunStore()
    first = stored_run(store, "first", train_messages(5))
    second = stored_run(store, "second", train_messages(8))
    window.history.refresh()
    click_run(qtbot, window.history, first)
    assert window._shown_run_id == first
    tick(qtbot, window.history, second)
    assert window.history.checked_run_ids() == [second]
    assert window._shown_run_id == first and window.charts.point_count("loss_train") == 5
    assert window.charts.overlay_ids() == [second]


def test_chosen_columns_survive_a_restart(qtbot):
    from app.main import MainWindow
    from tests.gui_support import dispose

    first = MainWindow()
    first.history.table.show_column("techniques", True)
    first.history.table.show_column("started", False)
    dispose(first)
    second = MainWindow()
    second.restore_window_settings()
    assert second.history.table.column_shown("techniques")
    assert not second.history.table.column_shown("started")
    assert second.history.table.column_shown("name")
    dispose(second)


# --- 4 and 5: every figure readable in full, p50/p90/p99 in columns, compress as a table -----------
DATA = __import__("pathlib").Path(__file__).with_name("data")


def real_summary(name: str) -> dict:
    """A summary.json the real worker wrote (effiscope run on nano, CPU), machine details cut."""
    import json

    return json.loads((DATA / f"{name}_summary.json").read_text(encoding="utf-8"))


def open_tab(qtbot, win, widget) -> None:
    bar = win.tabs.tabBar()
    qtbot.mouseClick(bar, Qt.MouseButton.LeftButton,
                     pos=bar.tabRect(win.tabs.indexOf(widget)).center())
    assert win.tabs.currentWidget() is widget


def cut_cells(table, scroll) -> list[str]:
    """Texts of the table that are not shown whole: wider than their column, or beyond the right
    edge of the scroll area the table sits in."""
    from PySide6.QtCore import QPoint

    out = []
    metrics = table.fontMetrics()
    right = table.mapTo(scroll.viewport(), QPoint(table.viewport().width(), 0)).x()
    for column in range(table.columnCount()):
        if table.isColumnHidden(column):
            continue
        edge = table.columnViewportPosition(column) + table.columnWidth(column)
        for row in range(table.rowCount()):
            item = table.item(row, column)
            lines = item.text().split("\n") if item is not None else []
            widest = max((metrics.horizontalAdvance(line) for line in lines), default=0)
            if widest + 6 > table.columnWidth(column) or (
                    lines and table.mapTo(scroll.viewport(), QPoint(edge, 0)).x() > right + 1):
                out.append(item.text())
    return out


def test_every_figure_is_readable_with_percentiles_in_columns(qtbot, window):
    from profiler.store import RunStore

    store = RunStore()
    infer = stored_run(store, "nano infer", train_messages(3, summary=real_summary("infer")))
    train = stored_run(store, "nano train", train_messages(3, summary=real_summary("train")))
    window.history.refresh()
    view = window.summary_view
    click_run(qtbot, window.history, infer)
    open_tab(qtbot, window, view)
    qtbot.wait(50)
    labels = view.labels()
    assert labels.count("Decode latency per token") == 1  # one row, not three cut ones
    row = view.row_text("Decode latency per token")
    assert (row["value"], row["p90"], row["p99"]) == ("634 µs", "816 µs", "4.81 ms")
    assert row["spread"].startswith("±")
    assert not cut_cells(view.table, view)
    click_run(qtbot, window.history, train)
    qtbot.wait(50)
    assert view.row_text("Step time")["p99"] == "115 ms"
    assert view.row_text("Throughput")["spread"] == "±6.3 %, n=37"
    assert not cut_cells(view.table, view)
    # the answer first: the headline above the tabs, each card in full
    texts = window.headline.texts()
    assert texts[0] == "Throughput: 5,840 tokens/s (±6.3 %, n=37)"
    for label, value, spread in window.headline.cards:
        for widget in (label, value, spread):
            if widget.isVisible():  # whole: on its line, or (a label) on the lines it wraps to
                assert widget.fontMetrics().horizontalAdvance(widget.text()) <= widget.width() \
                    or (widget.wordWrap() and widget.heightForWidth(widget.width())
                        <= widget.height())


def test_compress_shows_original_compressed_and_ratio_with_its_verdict(qtbot, window):
    from profiler.store import RunStore

    run_id = stored_run(RunStore(), "nano int8", train_messages(
        3, summary=real_summary("compress")))
    window.history.refresh()
    click_run(qtbot, window.history, run_id)
    view = window.summary_view
    open_tab(qtbot, window, view)
    qtbot.wait(50)
    table = view.compress
    assert table.isVisible()
    assert table.row("Decode throughput") == ("Decode throughput", "1,470 tokens/s",
                                              "1,200 tokens/s", "0.818x (0.799-0.830)\nworse")
    assert table.row("Prefill latency p50")[3].endswith("\nbetter")
    assert table.row("Weights in memory")[1:3] == ("3.28 MiB", "1.10 MiB")
    # the quality cost in one sentence, not a paragraph in a banner
    cost = table.cost.text()
    assert cost.count(". ") == 0 and "Perplexity went from 227.593 to 227.575" in cost
    assert "KL(" not in window.notice_text()  # the 9-line paragraph is gone from the banner
    assert not cut_cells(table.table, view)
    # the original model's figures are in the table, not repeated below it
    assert not any(label.endswith("(original)") for label in view.labels())


def test_compress_latency_curves_one_colour_per_measure_one_style_per_model(qtbot, window):
    from profiler.store import RunStore

    keys = ("prefill_latency_s", "ttft_s", "decode_latency_s")
    messages = train_messages(0)
    for step in range(1, 6):
        metrics = {f"{model}_{key}": 0.001 * (index + 1) * (1.2 if model == "baseline" else 1)
                   for index, key in enumerate(keys) for model in ("baseline", "compressed")}
        messages.append({"type": "sample", "step": step, "time": step * 0.1, "phase": "measure",
                         "metrics": metrics})
    run_id = stored_run(RunStore(), "int8", messages)
    window.history.refresh()
    click_run(qtbot, window.history, run_id)
    window.charts.redraw_now()
    def pen(key):
        return window.charts.curves[key].opts["pen"]

    colors = {key: pen(f"compressed_{key}").color().name() for key in keys}
    assert len(set(colors.values())) == 3  # the three measures are told apart by colour
    for key in keys:
        assert pen(f"baseline_{key}").color().name() == colors[key]  # same measure, same colour
        assert pen(f"baseline_{key}").style() == Qt.PenStyle.DashLine  # original: dashed
        assert pen(f"compressed_{key}").style() == Qt.PenStyle.SolidLine
    legend = window.charts.legend_text("latency")
    assert "┅ Time to first token (original)" in legend
    assert "━ Time to first token (compressed)" in legend


# --- 10: empty charts, widening columns, no jumps, the estimate in view, whole words ------------------
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


def global_rect(widget):
    from PySide6.QtCore import QRect

    return QRect(widget.mapToGlobal(QPoint(0, 0)), widget.size())


def test_side_columns_widen_with_the_window(qtbot, window):
    before = (window.left_panel.width(), window.history.width())
    window.resize(1920, 1080)
    qtbot.waitUntil(lambda: window.width() == 1920, timeout=3000)
    qtbot.waitUntil(lambda: window.history.width() > before[1] + 150, timeout=3000)
    assert window.left_panel.width() > before[0]


def test_a_message_appearing_never_moves_what_is_under_the_mouse(qtbot, window):
    from profiler.store import RunStore

    run_id = stored_run(RunStore(), "shown", train_messages(
        5, summary={"figures": {"tokens_per_s": {"value": 1000.0, "unit": "tokens/s"}}}))
    window.history.refresh()
    watched = (window.tabs.tabBar(), window.charts.axis_combo, window.charts.follow_button,
               window.charts.scroll, window.run_button, window.history.table)
    before = [global_rect(w) for w in watched]
    click_run(qtbot, window.history, run_id)  # its headline arrives above the tabs
    qtbot.wait(50)
    assert window.headline.texts() == ["Throughput: 1,000 tokens/s"]
    assert [global_rect(w) for w in watched] == before
    window.show_error("The run failed: something", "Press Run again.", run_id=None)
    window.add_notice("Warning: another process used the CPU")
    qtbot.wait(50)
    assert window.banner.isVisible() and window.notice.isVisible()
    assert [global_rect(w) for w in watched] == before
    for frame, label in ((window.banner, window.banner_label), (window.notice,
                                                                window.notice_label)):
        assert frame.rect().contains(label.geometry())  # its words inside it, all lines
        assert label.height() >= label.heightForWidth(label.width())
    # and a click on Follow (after a zoom) reaches Follow, not the banner
    charts = window.charts
    charts.follow_button.setEnabled(True)
    centre = window.charts.follow_button.rect().center()
    hit = window.childAt(window.charts.follow_button.mapTo(window, centre))
    assert hit is window.charts.follow_button


def test_the_estimate_is_in_view_without_scrolling(qtbot, window):
    line = window.run_controls.validation
    assert line.text().startswith("Estimate: Fits") and line.isVisible()
    assert window.rect().contains(global_rect(line).translated(-window.mapToGlobal(
        QPoint(0, 0))))
    box = window.estimate_box
    scroll = window.settings_scroll
    assert not scroll.viewport().rect().intersects(
        box.geometry().translated(0, -scroll.verticalScrollBar().value()))
    # its button shows the breakdown
    click(qtbot, window.run_controls.breakdown_button)
    qtbot.waitUntil(lambda: scroll.viewport().rect().intersects(
        box.geometry().translated(0, -scroll.verticalScrollBar().value())), timeout=3000)


def test_no_drop_down_text_is_cut(qtbot, window):
    from PySide6.QtWidgets import QComboBox, QStyle, QStyleOptionComboBox

    checked = 0
    for combo in window.left_panel.findChildren(QComboBox):
        if not combo.isVisible():
            continue
        option = QStyleOptionComboBox()
        combo.initStyleOption(option)
        field = combo.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, option,
                                             QStyle.SubControl.SC_ComboBoxEditField, combo)
        text = combo.currentText()
        assert combo.fontMetrics().horizontalAdvance(text) <= field.width(), text
        checked += 1
    assert checked >= 5
    # the open list shows every choice whole
    combo = window.form.model_source
    click(qtbot, combo)
    view = combo.view()
    qtbot.waitUntil(view.isVisible, timeout=3000)
    widest = max(view.fontMetrics().horizontalAdvance(combo.itemText(i))
                 for i in range(combo.count()))
    assert view.viewport().width() >= widest
    combo.hidePopup()


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


# --- 15: a run both shown and ticked is drawn once ---------------------------------------------------
def test_a_run_shown_and_ticked_is_drawn_once(qtbot, window):
    from profiler.store import RunStore
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


# --- 16: a worker killed from outside ----------------------------------------------------------------
def test_a_worker_killed_from_outside_says_what_to_check(qtbot, window):
    import os
    import signal

    window.worker_command = fake_worker(0.05)
    window.form.steps.setValue(2000)
    click(qtbot, window.run_button)
    qtbot.waitUntil(lambda: window.link is not None and window.link.recorder.samples >= 3,
                    timeout=30_000)
    os.kill(window.link.pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: not window.running, timeout=10_000)
    text = window.error_text()
    assert "The run was killed" in text and "SIGKILL" in text
    assert "Out of memory" in text and "another process" in text  # what the user can check
    assert "its last reading was 10" in text  # the fake's RSS: 100-106 MiB
    assert "samples received before are kept" in text
    # the status line is not cut: a few words there, the rest in the banner and the left column
    status = window.statusBar()
    message = status.currentMessage()
    assert message == "The run was killed"
    assert status.fontMetrics().horizontalAdvance(message) < status.width() // 2
    eta = window.run_controls.eta_label
    assert eta.text().startswith("killed: the worker was killed (exit code -9)")
    assert eta.height() >= eta.heightForWidth(eta.width())  # every line of it in view


# --- 7: mid-run changes -------------------------------------------------------------------------------
def test_a_change_that_cannot_apply_mid_run_is_offered_where_it_was_clicked(qtbot, window):
    from profiler.config import RunConfig
    from profiler.store import RunStore
    from tests.gui_support import click_square

    window.worker_command = fake_worker(0.05)
    window.form.steps.setValue(100_000)
    click(qtbot, window.run_button)
    qtbot.waitUntil(lambda: window.link is not None and window.link.recorder.samples >= 2,
                    timeout=30_000)
    first = window.run_id
    row = window.techniques.rows["compile"]
    click_square(qtbot, window, "compile")
    offer = window.techniques.offer
    qtbot.waitUntil(offer.isVisible, timeout=3000)
    # the run goes on without it: the box is not ticked
    assert not row.enable.isChecked()
    assert "the run goes on as it was" in window.techniques.offer_label.text()
    # the offer sits right under the row that was clicked, in view
    assert 0 <= offer.geometry().top() - row.geometry().bottom() <= 12
    scroll = window.settings_scroll
    window.settings_scroll.ensureWidgetVisible(offer)
    top = offer.mapTo(scroll.viewport(), QPoint(0, 0)).y()
    assert 0 <= top and top + offer.height() <= scroll.viewport().height()
    click(qtbot, window.techniques.restart_button)
    qtbot.waitUntil(lambda: window.running and window.run_id != first, timeout=30_000)
    assert row.enable.isChecked()  # the restarted run has it, and so does the box
    assert "compile" in RunConfig.from_dict(
        RunStore().open_run(window.run_id).config_dict()).techniques
    click(qtbot, window.stop_button)
    qtbot.waitUntil(lambda: not window.running, timeout=30_000)


def segment(start: int, end: int, label: str, median: float, low: float, high: float,
            n: int) -> dict:
    return {"start_step": start, "end_step": end, "steps": end - start + 1, "measured_steps": n,
            "label": label, "changes": [], "figures": {"tokens_per_s": {
                "value": median, "unit": "tokens/s", "how": "median of per-step tokens/s",
                "distribution": {"n": n, "median": median, "p10": low, "p90": high,
                                 "ci_low": low, "ci_high": high}}}}


def test_a_wild_spread_is_too_noisy_to_tell_and_the_table_leaves_the_charts_room(qtbot, window):
    from profiler.store import RunStore

    summary = {"figures": {}, "segments": [
        segment(1, 20, "start", 1000.0, 980.0, 1020.0, 18),
        segment(21, 24, "Mixed precision on", 1000.0, 100.0, 4400.0, 3),
        segment(25, 40, "Mixed precision off", 990.0, 975.0, 1010.0, 15)]}
    run_id = stored_run(RunStore(), "toggled", train_messages(40, summary=summary))
    window.history.refresh()
    click_run(qtbot, window.history, run_id)
    table = window.segments
    assert table.isVisible() and table.table.rowCount() == 3
    assert table.cell_text(0, "tokens_per_s").startswith("1,000 tokens/s (±2")
    noisy = table.cell_text(1, "tokens_per_s")
    assert noisy == "too noisy to tell (±340 %, n=3)"  # a verdict, not a bare number
    # at 1024x700 the table, opened by hand, never squeezes a chart to its title bar
    window.resize(1024, 700)
    qtbot.waitUntil(lambda: window.height() == 700, timeout=3000)
    qtbot.waitUntil(lambda: not table.table.isVisible(), timeout=3000)
    click(qtbot, table.toggle_button)
    assert table.table.isVisible()
    qtbot.wait(50)
    assert window.charts.scroll.viewport().height() >= 180


# --- 8: switching workload -----------------------------------------------------------------------------
def test_switching_workload_unticks_and_greys_what_does_not_apply(qtbot, window):
    from tests.gui_support import click_square

    panel = window.techniques
    choose(qtbot, window.form.workload, "infer")
    qtbot.waitUntil(panel.rows["quantize_int8_dynamic"].enable.isEnabled, timeout=3000)
    click_square(qtbot, window, "quantize_int8_dynamic")
    assert panel.rows["quantize_int8_dynamic"].enable.isChecked()
    # inference: the optimizer section is greyed, with the reason, and never sent
    optimizer = panel.rows["optimizer"]
    assert not optimizer.enable.isEnabled() and not optimizer.body.isEnabled()
    assert "only runs the model forward" in panel.reason("optimizer")
    assert "optimizer" not in window.build_config().techniques
    assert "grad_clip" not in window.build_config().techniques
    assert not panel.rows["grad_clip"].enable.isEnabled()
    # to distill: int8 is unticked (it would block the run), and the panel says so
    choose(qtbot, window.form.workload, "distill")
    qtbot.waitUntil(lambda: panel.workload == "distill", timeout=3000)
    assert not panel.rows["quantize_int8_dynamic"].enable.isChecked()
    assert panel.workload_note.isVisible()
    assert "Int8" in panel.workload_note.text() or "int8" in panel.workload_note.text().lower()
    assert "Techniques" not in window.run_controls.validation.text()  # nothing blocks the run
    assert optimizer.enable.isEnabled() and optimizer.body.isEnabled()
    # back to inference: ticked again
    choose(qtbot, window.form.workload, "infer")
    qtbot.waitUntil(lambda: panel.workload == "infer", timeout=3000)
    assert panel.rows["quantize_int8_dynamic"].enable.isChecked()
    # and its run is told of nothing it would ignore
    config = window.build_config()
    assert set(config.techniques) == {"quantize_int8_dynamic"}


# --- 12: the Profile tab --------------------------------------------------------------------------------
def test_profile_tab_merges_rows_shows_no_cuda_on_a_cpu_run_and_says_warmup(qtbot, window):
    import json

    from profiler.store import RunStore

    profile = json.loads((DATA / "profile_cpu.json").read_text(encoding="utf-8"))
    messages = train_messages(12)
    messages[1]["run"]["warmup_steps"] = 3
    messages.append(profile)  # a real capture of steps 6-10 on a CPU (tests/data)
    run_id = stored_run(RunStore(), "profiled", messages)
    window.history.refresh()
    click_run(qtbot, window.history, run_id)
    view = window.profile
    open_tab(qtbot, window, view)
    table = view.table
    names = [table.item(r, 0).text() for r in range(table.rowCount())]
    assert "AddmmBackward0" in names
    assert not any(n.startswith("autograd::engine::evaluate_function") for n in names)
    assert len(names) == len(set(names))  # one row per operator
    assert table.isColumnHidden(4) and table.isColumnHidden(5)  # no CUDA columns on a CPU run
    assert table.horizontalScrollBar().value() == 0 and table.verticalScrollBar().value() == 0
    assert "after the 3 warmup steps" in view.status.text()


def test_a_capture_says_how_far_it_is(qtbot, window):
    window.worker_command = fake_worker(0.05)
    window.form.steps.setValue(100_000)
    click(qtbot, window.run_button)
    qtbot.waitUntil(lambda: window.link is not None and window.link.recorder.samples >= 2,
                    timeout=30_000)
    view = window.profile
    open_tab(qtbot, window, view)
    view.steps.setValue(8)
    click(qtbot, view.capture_button)
    qtbot.waitUntil(lambda: "Capturing: 2 of 8 steps recorded" in view.status.text(),
                    timeout=10_000)
    qtbot.waitUntil(lambda: view.table.rowCount() > 0, timeout=20_000)
    assert view.status.text().startswith("Captured 8 steps from step")
    click(qtbot, window.stop_button)
    qtbot.waitUntil(lambda: not window.running, timeout=30_000)


# --- 13: marker labels, PNG without buttons and with the run's name, saves that say where --------------
def test_change_marker_labels_never_overlap(qtbot, window):
    from profiler.store import RunStore

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
    assert charts.png_title("speed").startswith(f"{charts.live_run_label}: Throughput")
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


# --- 14: the keyboard ------------------------------------------------------------------------------------
def test_focus_ring_is_visible(qtbot, window):
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from app.theme import apply_theme

    app = QApplication.instance()
    previous = (app.property("effiscope_theme"), app.styleSheet(), app.palette(), app.style().name())
    apply_theme(app, "light")
    try:
        for widget in (window.history.load_button, window.charts.follow_button,
                       window.form.steps):
            widget.setEnabled(True)
            window.run_button.setFocus()
            QApplication.processEvents()
            before = widget.grab().toImage()
            widget.setFocus(Qt.FocusReason.TabFocusReason)
            qtbot.waitUntil(widget.hasFocus, timeout=2000)
            QTest.qWait(20)
            after = widget.grab().toImage()
            assert before != after, f"{widget.objectName() or widget.text()}: no focus ring"
    finally:  # the theme as it was for the tests after this one
        app.setStyle(previous[3])
        app.setPalette(previous[2])
        app.setStyleSheet(previous[1])
        app.setProperty("effiscope_theme", previous[0])


def test_tab_never_switches_the_shown_run(qtbot, window):
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from profiler.store import RunStore

    store = RunStore()
    first = stored_run(store, "first", train_messages(5))
    stored_run(store, "second", train_messages(8))
    window.history.refresh()
    click_run(qtbot, window.history, first)
    assert window._shown_run_id == first
    seen = set()
    for _ in range(60):  # Tab through the whole window, the run table included
        QTest.keyClick(QApplication.focusWidget() or window, Qt.Key.Key_Tab)
        seen.add(QApplication.focusWidget())
        assert window._shown_run_id == first
    assert window.history.table in seen
    assert window.charts.point_count("loss_train") == 5


def test_ctrl_q_during_a_run_asks_first(qtbot, window, monkeypatch):
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QMessageBox

    window.worker_command = fake_worker(0.05)
    window.form.steps.setValue(100_000)
    click(qtbot, window.run_button)
    qtbot.waitUntil(lambda: window.link is not None and window.link.recorder.samples >= 1,
                    timeout=30_000)
    asked = []
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: asked.append(a[2]) or QMessageBox.StandardButton.Cancel)
    QTest.keyClick(window, Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier)
    assert asked and "A run is in progress" in asked[0]
    assert window.isVisible() and window.running  # cancelled: the run goes on
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    QTest.keyClick(window, Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: not window.running, timeout=30_000)
    assert not window.isVisible()


def test_help_has_a_quick_start_and_every_shortcut(qtbot, window):
    from PySide6.QtWidgets import QLabel

    menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Help")
    titles = [a.text() for a in menu.actions()]
    assert "&Quick start" in titles and "&Keyboard shortcuts" in titles
    next(a for a in menu.actions() if a.text() == "&Keyboard shortcuts").trigger()
    text = window._shortcuts_dialog.findChild(QLabel, "shortcutList").text()
    for keys, what in window.shortcut_rows():
        assert keys in text and what in text
    assert "Ctrl+R" in text and "Ctrl+Q" in text and "Esc" in text
    window._shortcuts_dialog.close()
    next(a for a in menu.actions() if a.text() == "&Quick start").trigger()
    quick = window._quick_start.findChild(QLabel, "quickStart").text()
    assert "Run" in quick and "Compare" in quick
    window._quick_start.close()


# --- 9: colours, legends, dots, log ticks --------------------------------------------------------------
def luminance(color: str) -> float:
    from PySide6.QtGui import QColor

    c = QColor(color)
    return 0.2126 * c.redF() + 0.7152 * c.greenF() + 0.0722 * c.blueF()


def test_overlay_colours_survive_a_theme_switch_and_stay_per_run(qtbot, window):
    from profiler.store import RunStore

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
    from profiler.store import RunStore

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
    from profiler.store import RunStore

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


# --- 11: Find the fastest ---------------------------------------------------------------------------------
def test_a_tune_says_how_far_it_is_and_a_stopped_one_claims_nothing(qtbot, window):
    import threading

    from tests.test_gui_tune import Surface

    gate = threading.Event()
    calls = []

    def slow(candidate, steps, final=False):
        calls.append(candidate)
        if len(calls) > 1:
            gate.wait(10)  # the second trial waits until the test has looked
        return Surface()(candidate, steps, final)

    window.tune_evaluator = slow
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
    from tests.test_gui_tune import SPEED, Surface

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


# --- 6 (app side): a past run's weights as teacher, the random-teacher warning, the bar's phase -----
def test_distill_teacher_from_a_past_run_and_a_random_teacher_warns(qtbot, window):
    from profiler.store import RunStore

    store = RunStore()
    trained = stored_run(store, "trained teacher", train_messages(3))
    (store.runs_dir / trained / "model.safetensors").write_bytes(b"weights")  # saved weights
    window.form.steps.setValue(6)
    choose(qtbot, window.form.workload, "distill")
    form = window.form
    # a preset teacher and 0 teacher steps: random weights, said under the field
    choose(qtbot, form.teacher, "preset:gpt-mini")
    form.teacher_steps.setValue(0)
    assert form.teacher_note.isVisible() and "random weights" in form.teacher_note.text()
    form.teacher_steps.setValue(4)
    assert not form.teacher_note.isVisible()
    # a past run's weights as the teacher: listed, chosen, in the config
    choose(qtbot, form.teacher, f"run:{trained}")
    form.teacher_steps.setValue(0)
    assert not form.teacher_note.isVisible()  # trained weights teach something
    teacher = window.build_config().distill.teacher
    assert (teacher.source, teacher.run_id) == ("run", trained)
    window.set_config(window.build_config())  # and back into the form
    assert form.teacher.currentData() == f"run:{trained}"


def test_the_progress_bar_says_which_phase_it_counts(qtbot, window):
    window.worker_command = fake_worker(0.03)
    window.form.steps.setValue(6)
    choose(qtbot, window.form.workload, "distill")
    window.form.teacher_steps.setValue(4)
    formats = []
    bar = window.run_controls.progress
    bar.valueChanged.connect(lambda _v: formats.append(bar.format()))
    click(qtbot, window.run_button)
    qtbot.waitUntil(lambda: window.run_id is not None and not window.running, timeout=30_000)
    assert "teacher step 2 / 4" in formats and "teacher step 4 / 4" in formats
    assert "student step 6 / 6" in formats
    assert formats.index("teacher step 4 / 4") < formats.index("student step 1 / 6")


# --- the system panel -----------------------------------------------------------------------------------
def test_the_system_panel_shows_the_run_and_the_machine(qtbot, window):
    import psutil

    before = window.headline.height()
    window.worker_command = fake_worker(0.03)
    window.form.steps.setValue(100_000)
    click(qtbot, window.run_button)
    qtbot.waitUntil(lambda: window.link is not None and window.link.recorder.samples >= 5,
                    timeout=30_000)
    panel = window.system
    open_tab(qtbot, window, panel)
    qtbot.waitUntil(lambda: panel.values()["rss_bytes"].endswith("MiB"), timeout=5000)
    values = panel.values()
    assert values["cpu_percent"] == "95.0 %"
    assert values["gpu_util_percent"] == "n/a" and values["gpu_power_w"] == "n/a"  # a CPU run
    assert len(panel.meters["rss_bytes"].history) >= 5  # its recent history, drawn
    assert len(panel.core_bars) == (psutil.cpu_count() or 1)  # every core of this machine
    qtbot.waitUntil(lambda: "of RAM in use" in panel.machine_note.text(), timeout=3000)
    assert "no NVIDIA GPU readings" in panel.machine_note.text() or panel.gpus
    assert window.headline.height() == before  # the live figures took the reserved room
    click(qtbot, window.stop_button)
    qtbot.waitUntil(lambda: not window.running, timeout=30_000)


# --- the wall-time X axis ----------------------------------------------------------------------------------
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


# --- 17: painting cost -------------------------------------------------------------------------------------
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


def test_the_system_panel_reads_every_gpu(qtbot, window, monkeypatch):
    from tests.fake_nvml import FakeGpu, FakeNvml, install

    class WithClocks(FakeNvml):
        NVML_CLOCK_SM, NVML_CLOCK_MEM = 1, 2

        def nvmlDeviceGetClockInfo(self, handle, kind):  # noqa: N802 - pynvml's name
            self._note("clock", handle)
            return 1980 if kind == self.NVML_CLOCK_SM else 2619

    install(monkeypatch, WithClocks([
        FakeGpu("GPU-aaaa", memory_used=10 * 2**30, util=97),
        FakeGpu("GPU-bbbb", name="NVIDIA A100-SXM4-40GB", memory_total=40 * 2**30,
                power_mw=None, util=0)]))
    panel = window.system
    open_tab(qtbot, window, panel)
    panel.read_machine()
    texts = [label.text() for label in panel.gpu_labels]
    assert len(texts) == 2
    assert "GPU 0: NVIDIA H100 80GB HBM3" in texts[0] and "utilization 97" in texts[0]
    assert "memory 10.0 GiB of 80.0 GiB" in texts[0] and "power 300 W" in texts[0]
    assert "clocks SM 1,980 MHz / memory 2,619 MHz" in texts[0]
    assert "power n/a" in texts[1]  # a query the card refuses reads n/a, never raises
