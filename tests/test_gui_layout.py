"""The window's layout: it fits 1024x700 with charts that keep their newest steps beside long
legends, the side columns widen with the window, a message appearing never moves what is under
the mouse, and no drop-down's text is cut."""

from __future__ import annotations

from PySide6.QtCore import QPoint

from profiler.store import RunStore
from tests.gui_support import (
    click,
    click_run,
    global_rect,
    stored_run,
    train_messages,
)


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
