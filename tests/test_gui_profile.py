"""The Profile tab: rows merged, no CUDA column on a CPU run, warmup said, and a capture that says
how far it is."""

from __future__ import annotations

from tests.gui_support import (
    DATA,
    click,
    click_run,
    fake_worker,
    open_tab,
    stored_run,
    train_messages,
)


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
