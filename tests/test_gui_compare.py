"""Compare, clicked as a user: tick two runs in the history, open the Compare tab. A delta inside
both runs' noise is neutral grey with a "within noise" tooltip; a planted 20 % difference is
coloured (profiler.figures.significance decides both)."""

from __future__ import annotations

from PySide6.QtCore import Qt

from profiler.store import RunStore
from tests.gui_support import tick
from tests.helpers import noisy_run

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
    assert window.compare.wait()  # computed in the background, drawn when ready
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
    assert window.compare.wait()  # computed in the background, drawn when ready
    throughput = delta_cell(window, "Throughput")
    assert throughput.data(Qt.ItemDataRole.UserRole) == "worse"
    assert throughput.foreground().color().name() == WORSE
    step = delta_cell(window, "Step time")
    assert step.data(Qt.ItemDataRole.UserRole) == "worse"  # slower steps: worse, also red
    assert step.foreground().color().name() == WORSE


def test_the_comparison_is_computed_off_the_gui_thread_and_drawn_when_ready(qtbot, window,
                                                                           monkeypatch):
    """Reading the runs and the statistics run on a worker thread: set_compared returns at
    once, the table is drawn when the result arrives (nothing here is timed)."""
    import threading

    from profiler.report import compare as report_compare

    on_gui_thread: list[bool] = []
    real = report_compare.deltas

    def spy(*args, **kwargs):
        on_gui_thread.append(threading.current_thread() is threading.main_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(report_compare, "deltas", spy)
    store = RunStore()
    base, slow = noisy_run(store, "base", 1000, 5), noisy_run(store, "slow", 800, 6)
    window.history.refresh()
    with qtbot.waitSignal(window.compare.ready, timeout=30_000):
        window.set_compared([base, slow])
        assert window.compare.busy() and window.compare.table.rowCount() == 0  # not drawn yet
    assert on_gui_thread == [False]
    assert delta_cell(window, "Throughput").data(Qt.ItemDataRole.UserRole) == "worse"


def test_bench_compare_runs_the_statistics_and_the_view(qtbot, capsys, tmp_path):
    """`effiscope bench compare` reports the per-pair statistics and the stall while the view
    computes (its numbers are the bench's to judge, docs/benchmarks.md; none asserted here)."""
    import json

    from profiler import cli

    assert cli.main(["bench", "compare", "--samples", "60", "--repeats", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["statistics"]["samples_per_run"] == 60 and result["statistics"]["repeats"] == 2
    assert result["view"]["rows_drawn"] == 2  # throughput and step time, judged and drawn
    assert {"stall_p50_ms", "stall_p99_ms", "ready_ms"} <= set(result["view"])
    assert cli.main(["bench", "compare", "--samples", "3"]) == 2
    assert "--samples 5 or more" in capsys.readouterr().err
