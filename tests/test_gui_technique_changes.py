"""A technique changed from the panel: a change that cannot apply mid-run is offered where it was
clicked, a segment whose spread is wild is too noisy to tell, and switching workload unticks and
greys what does not apply."""

from __future__ import annotations

from PySide6.QtCore import QPoint

from tests.gui_support import choose, click, click_run, fake_worker, stored_run, train_messages


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
