"""The app as a daily run browser: the run table (columns, sorting, groups, full names, a click
that shows a run, several deleted, ticks that compare, columns kept across a restart), with
clicks at the real coordinates of the widgets (offscreen; tests/test_gui_x11.py does the layout
on a real X server). Find the fastest is in test_gui_tune, the estimate panel in
test_gui_estimate_trace. The rest of what a user meets is in test_gui_chart_axes, _chart_legibility,
_figures, _layout, _technique_changes, _profile, _keyboard, _system, _run_feedback, _run_names
and _form_input."""

from __future__ import annotations

from PySide6.QtCore import QPoint, Qt

from tests.gui_support import click, click_run, stored_run, train_messages


# --- the run table --------------------------------------------------------------------------------
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
