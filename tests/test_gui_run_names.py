"""Run names: each run gets its own name, a rename shows at once, names never repeat; an overlaid
run never looks like a live curve and the banner follows its run."""

from __future__ import annotations

import re

from PySide6.QtCore import Qt

from app.main import MainWindow
from profiler.store import RunStore
from tests.gui_support import (
    dispose,
    fake_worker,
    stored_run,
    train_messages,
)


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
