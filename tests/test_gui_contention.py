"""The app shows a contended run's sentence beside its figures: a notice above the charts and the
run's note in the history panel; a run measured alone shows neither."""

from __future__ import annotations

from profiler.store import RunStore
from tests import gui_support
from tests.gui_support import stored_run, train_messages
from tests.test_contention import CONTENDED

window = gui_support.window

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
    note = window.history.summary_note.text()
    assert CONTENDED["contention_sentence"] in note and "other processes 1.42 cores" in note
    window.show_stored_run(quiet)
    assert "other processes used" not in window.notice_text()
    window.history.select(quiet)
    note = window.history.summary_note.text()
    assert "other processes used" not in note and "other processes 0.0200 cores" in note
