"""Compare, clicked as a user: tick two runs in the history, open the Compare tab. A delta inside
both runs' noise is neutral grey with a "within noise" tooltip; a planted 20 % difference is
coloured (profiler.significance decides both)."""

from __future__ import annotations

from PySide6.QtCore import Qt

from profiler.store import RunStore
from tests import gui_support
from tests.gui_support import tick
from tests.helpers import noisy_run

window = gui_support.window
NEUTRAL, BETTER, WORSE = "#6b7280", "#15803d", "#b91c1c"


def delta_cell(window, label: str):
    table = window.compare.table
    return next(table.item(r, 3) for r in range(table.rowCount())
                if table.item(r, 0).text().startswith(label))


def open_compare(qtbot, window, runs: list[str]) -> None:
    window.history.refresh()
    for run_id in runs:
        tick(qtbot, window.history, run_id)
    assert window.history.checked_run_ids() == runs
    bar = window.tabs.tabBar()
    index = window.tabs.indexOf(window.compare)
    qtbot.mouseClick(bar, Qt.MouseButton.LeftButton, pos=bar.tabRect(index).center())
    assert window.tabs.currentWidget() is window.compare


def test_same_config_twice_is_within_noise_and_grey(qtbot, window):
    store = RunStore()
    base, again = noisy_run(store, "base", 1000, 1), noisy_run(store, "again", 1000, 2)
    open_compare(qtbot, window, [base, again])
    window.compare.set_baseline(base)
    cell = delta_cell(window, "Throughput")
    assert cell.data(Qt.ItemDataRole.UserRole) == "within noise"
    assert cell.text().endswith("(within noise)")
    assert cell.foreground().color().name() == NEUTRAL
    assert "noise of both runs" in cell.toolTip()


def test_a_planted_twenty_percent_difference_is_coloured(qtbot, window):
    store = RunStore()
    base, slow = noisy_run(store, "base", 1000, 3), noisy_run(store, "slow", 800, 4)
    open_compare(qtbot, window, [base, slow])
    window.compare.set_baseline(base)
    throughput = delta_cell(window, "Throughput")
    assert throughput.data(Qt.ItemDataRole.UserRole) == "worse"
    assert throughput.foreground().color().name() == WORSE
    step = delta_cell(window, "Step time")
    assert step.data(Qt.ItemDataRole.UserRole) == "worse"  # slower steps: worse, also red
    assert step.foreground().color().name() == WORSE
