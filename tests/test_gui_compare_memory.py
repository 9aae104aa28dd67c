"""Compare, clicked as a user, for a memory technique: the rows lead with the bytes the technique
acts on (saved for backward), counted figures get a verdict without noise, RSS stays neutral."""

from __future__ import annotations

from PySide6.QtCore import Qt

from profiler.store import RunStore
from tests.gui_support import stored_run
from tests.test_gui_compare import BETTER, NEUTRAL, delta_cell, open_compare


def memory_run(store, name: str, saved: int, rss: int, techniques: dict) -> str:
    def fig(value: int) -> dict:
        return {"value": value, "unit": "bytes", "how": "counted"}

    messages = [{"type": "hello", "protocol": 1, "versions": {}, "device": {}, "environment": {}},
                {"type": "started", "run": {"workload": "train", "device": "cpu", "steps": 4}},
                {"type": "done", "status": "completed", "summary": {
                    "active_techniques": techniques, "figures": {
                        "tokens_per_s": {"value": 1000.0, "unit": "tokens/s", "how": "median"},
                        "saved_for_backward_bytes": fig(saved), "gradient_bytes": fig(3_435_520),
                        "optimizer_state_bytes": fig(6_871_040), "peak_rss_bytes": fig(rss)}}}]
    return stored_run(store, name, messages)


def test_checkpointing_leads_with_its_saved_bytes_coloured_and_rss_neutral(qtbot, window):
    store = RunStore()
    adamw = {"optimizer": {"algorithm": "adamw"}}
    base = memory_run(store, "base", 2_238_228, 357_765_120, adamw)
    ckpt = memory_run(store, "ckpt", 263_956, 372_350_976,
                      {**adamw, "activation_checkpointing": {"every": 1}})
    open_compare(qtbot, window, [base, ckpt])
    window.compare.set_baseline(base)
    assert window.compare.wait()
    table = window.compare.table
    labels = [table.item(r, 0).text() for r in range(table.rowCount())]
    # The technique the runs differ in acts on the saved bytes: that row comes first, before
    # throughput (which leads a comparison of runs that differ in no memory technique).
    assert labels[0].startswith("Saved for backward") and labels[1].startswith("Throughput")
    assert labels.index("Gradients") < labels.index("Peak process RSS")
    saved = delta_cell(window, "Saved for backward")
    assert saved.text() == "\u221288.2 %"  # a true minus sign
    assert saved.data(Qt.ItemDataRole.UserRole) == "better"
    assert saved.foreground().color().name() == BETTER
    assert "no measurement noise, so the difference is real" in saved.toolTip()
    grads = delta_cell(window, "Gradients")
    assert grads.data(Qt.ItemDataRole.UserRole) == "equal" and "same in both" in grads.toolTip()
    rss = delta_cell(window, "Peak process RSS")
    assert rss.data(Qt.ItemDataRole.UserRole) == "not comparable"  # one number, no spread
    assert rss.foreground().color().name() == NEUTRAL
