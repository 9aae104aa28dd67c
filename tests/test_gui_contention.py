"""The app shows a contended run's sentence beside its figures: a notice above the charts and the
run's note in the history panel; a run measured alone shows neither."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from profiler.store import RunStore
from tests.gui_support import fake_worker, stored_run, train_messages
from tests.helpers import CONTENDED

FIGURES = {"tokens_per_s": {"value": 1000.0, "unit": "tokens/s", "how": "median"}}


def test_a_contended_run_says_so_in_the_app(qtbot, window):
    store = RunStore()
    busy = stored_run(store, "busy", train_messages(3, summary={**CONTENDED, "figures": FIGURES}))
    quiet = stored_run(store, "quiet", train_messages(3, summary={
        **CONTENDED, "contended": False, "contention_sentence": "",
        "contention_other_cpu_cores_mean": 0.02, "figures": FIGURES}))
    window.history.refresh()
    window.show_stored_run(busy)
    assert f"Warning: {CONTENDED['contention_sentence']}" in window.notice_text()
    window.history.select(busy)
    note = window.summary_view.note.text()
    assert CONTENDED["contention_sentence"] in note and "other processes 1.42 cores" in note
    window.show_stored_run(quiet)
    assert "other processes used" not in window.notice_text()
    window.history.select(quiet)
    note = window.summary_view.note.text()
    assert "other processes used" not in note and "other processes 0.0200 cores" in note


@pytest.mark.parametrize("other, shown, amber", [
    ("1.3", "other processes: 1.30 cores of 2 now: speeds unreliable", True),
    ("0.02", "other processes: 0.0200 cores of 2 now", False),
])
def test_the_status_bar_shows_other_processes_cpu_while_a_run_goes(qtbot, window, monkeypatch,
                                                                     other, shown, amber):
    """Each sample carries the meter's newest reading: the status bar says it while the run
    goes, amber when the speeds it shows are unreliable, and clears it when the run is over."""
    monkeypatch.setenv("EFFISCOPE_FAKE_OTHER_CORES", other)
    window.worker_command = fake_worker(0.02)
    window.form.device.setCurrentText("cpu")
    window.form.steps.setValue(2000)
    qtbot.mouseClick(window.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.run_controls.last_step >= 5, timeout=30_000)
    assert window.load_label.text() == shown and window.load_label.isVisible()
    assert ("#b45309" in window.load_label.styleSheet()) is amber
    qtbot.mouseClick(window.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.running, timeout=30_000)
    assert window.load_label.text() == ""  # no reading of a run that is over stays
