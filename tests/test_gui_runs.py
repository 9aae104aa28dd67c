"""Runs through the window: mid-run toggles and their markers, restart with a change, the
profile view, two finished runs overlaid with their delta table, history actions, export.

One test drives a real nano worker (toggles and a torch.profiler capture end to end); the rest
use tests/fake_worker.py, which answers in milliseconds.
"""

from __future__ import annotations

import gzip
import json

import pytest
from PySide6.QtWidgets import QMessageBox

from app.compare_view import cell_value, summary_value
from profiler.config import RunConfig
from profiler.figures.metrics import format_change, format_value
from profiler.store import RunStore
from tests.gui_support import click, fake_worker

RUN_TIMEOUT_MS = 90_000


def tiny(win, steps: int, batch: int = 4) -> None:
    win.form.preset.setCurrentText("nano")
    win.form.device.setCurrentText("cpu")
    win.form.steps.setValue(steps)
    win.form.batch_size.setValue(batch)
    win.form.seq_len.setValue(64)


def stream(run_id: str) -> list[dict]:
    return list(RunStore().open_run(run_id).messages())


@pytest.mark.slow
def test_mid_run_toggle_marks_every_chart_and_is_recorded(qtbot, window, tmp_path):
    """Real worker: a mid-run switch is sent, applied, marked and stored; a change that cannot
    apply mid-run offers a restart instead; a profile capture fills the profile view."""
    tiny(window, steps=3000)
    click(qtbot, window.run_button)
    qtbot.waitUntil(lambda: window.link.recorder.samples >= 3, timeout=RUN_TIMEOUT_MS)
    run_id = window.run_id

    clip = window.techniques.rows["grad_clip"]
    assert "enabled" in clip.info.mid_run
    clip.enable.click()  # switch gradient clipping on while the run goes
    qtbot.waitUntil(lambda: len(window.charts.marker_steps) >= 1, timeout=30_000)
    step, label = window.charts.marker_steps[0]
    assert label == "Gradient clipping on"  # defaults are not repeated
    shown = set(window.charts.shown_charts())
    marked = {plot for plot, _line in window.charts.markers}
    assert {window.charts.plots[name] for name in shown} <= marked  # on every chart
    toggles = [m for m in stream(run_id) if m.get("type") == "event" and m.get("kind") == "toggle"]
    assert toggles and toggles[0]["technique"] == "grad_clip" and toggles[0]["step"] == step
    assert toggles[0]["params"] == {"enabled": True, "max_norm": 1.0}
    assert any(m.get("origin") == "front" and "set grad_clip" in m.get("message", "")
               for m in stream(run_id))

    window.form.learning_rate.setValue(window.form.learning_rate.value() / 2)  # mid-run LR
    qtbot.waitUntil(lambda: len(window.charts.marker_steps) >= 2, timeout=30_000)

    compile_row = window.techniques.rows["compile"]
    assert not compile_row.info.mid_run
    compile_row.enable.setChecked(True)  # cannot change mid-run: offered as a restart
    assert window.techniques.offer.isVisible()
    assert window.techniques.restart_button.isVisible()
    click(qtbot, window.techniques.undo_button)
    assert not compile_row.enable.isChecked() and not window.techniques.offer.isVisible()

    window.profile.steps.setValue(2)
    click(qtbot, window.profile.capture_button)
    qtbot.waitUntil(lambda: bool(window.profile.profiles), timeout=60_000)
    assert window.profile.table.rowCount() > 0
    assert window.profile.table.item(0, 0).text()
    assert "n/a" not in window.profile.part_labels["backward_s"].text()
    saved = tmp_path / "trace.json.gz"
    assert window.profile.save_trace(str(saved))
    with gzip.open(saved, "rt") as fh:
        assert json.load(fh)["traceEvents"]

    click(qtbot, window.stop_button)
    qtbot.waitUntil(lambda: not window.running, timeout=30_000)
    window.charts.clear()
    window.show_stored_run(run_id)  # the markers come back from the stored stream
    assert len(window.charts.marker_steps) >= 2
    assert window.profile.profiles  # and so does the profile


def test_restart_with_a_change_that_cannot_apply_mid_run(qtbot, window):
    window.worker_command = fake_worker()
    tiny(window, steps=100_000)
    click(qtbot, window.run_button)
    qtbot.waitUntil(lambda: window.link.recorder.samples >= 2, timeout=10_000)
    first = window.run_id
    window.techniques.rows["compile"].enable.setChecked(True)
    click(qtbot, window.techniques.restart_button)
    qtbot.waitUntil(lambda: window.running and window.run_id != first, timeout=10_000)
    assert RunStore().open_run(first).meta()["status"] == "stopped"
    assert "compile" in RunConfig.from_dict(
        RunStore().open_run(window.run_id).config_dict()).techniques
    window.send_change("refuse_me", {"enabled": True})  # the fake worker refuses this one
    qtbot.waitUntil(lambda: window.techniques.offer.isVisible(), timeout=10_000)
    assert "Not applied" in window.techniques.offer_label.text()
    click(qtbot, window.stop_button)
    qtbot.waitUntil(lambda: not window.running, timeout=10_000)


def test_profile_view_shows_a_capture_and_saves_its_trace(qtbot, window, tmp_path):
    window.worker_command = fake_worker()
    tiny(window, steps=100_000)
    assert not window.profile.capture_button.isEnabled()  # nothing runs yet
    click(qtbot, window.run_button)
    qtbot.waitUntil(lambda: window.link.recorder.samples >= 2, timeout=10_000)
    window.profile.steps.setValue(3)
    click(qtbot, window.profile.capture_button)
    qtbot.waitUntil(lambda: bool(window.profile.profiles), timeout=10_000)
    assert window.tabs.currentWidget() is window.profile
    table = window.profile.table
    assert table.rowCount() == 2 and table.item(0, 0).text() == "aten::mm"
    assert table.isColumnHidden(4)  # no CUDA columns on a CPU capture
    assert "6.00 ms (30.0 %)" in window.profile.part_labels["other_s"].text()
    out = tmp_path / "saved.json.gz"
    assert window.profile.save_trace(str(out)) and out.exists()
    click(qtbot, window.stop_button)
    qtbot.waitUntil(lambda: not window.running, timeout=10_000)
    assert not window.profile.capture_button.isEnabled()


def finished_run(qtbot, win, batch: int, steps: int = 12) -> str:
    tiny(win, steps=steps, batch=batch)
    click(qtbot, win.run_button)
    qtbot.waitUntil(lambda: not win.running, timeout=20_000)
    assert win.history.row_status(win.run_id) == "completed"
    return win.run_id


def test_two_finished_runs_overlay_and_their_deltas_equal_the_summaries(qtbot, window, tmp_path,
                                                                         monkeypatch):
    window.worker_command = fake_worker(0.005)
    base_id = finished_run(qtbot, window, batch=4)
    other_id = finished_run(qtbot, window, batch=8)
    window.history.set_checked(base_id, True)
    window.history.set_checked(other_id, True)
    assert window.history.checked_run_ids() == [base_id, other_id]
    charts = window.charts
    # the run just finished is on the charts already: drawn once, not again as an overlay
    assert set(charts.overlay_ids()) == {base_id}
    stored = sum(1 for m in stream(base_id) if m.get("type") == "sample")
    assert charts.overlay_curve(base_id, "loss_train").xData is not None
    assert len(charts.overlay_curve(base_id, "loss_train").xData) == stored

    compare = window.compare
    compare.set_baseline(base_id)
    assert compare.wait()
    summaries = {r: RunStore().open_run(r).summary() for r in (base_id, other_id)}
    for key, unit in (("tokens_per_s", "tokens/s"), ("step_time_p50_s", "s"),
                      ("peak_rss_bytes", "bytes"), ("loss_val_final", "nats/token")):
        base, value = (summary_value(summaries[r], key) for r in (base_id, other_id))
        assert compare.cell_text(key, base_id) == cell_value(base, unit)
        assert compare.cell_text(key, other_id) == cell_value(value, unit)
        assert cell_value(value, unit) in format_value(value, unit)  # the same number
        delta = compare.cell_text(key, other_id, delta=True).split(" (")[0]
        assert delta == format_change((value - base) / abs(base) * 100)  # the verdict aside
    assert compare.cell_text("tokens_per_s", other_id, delta=True) == "+100 %"  # fake: x batch
    diff_keys = [compare.diff_keys.item(r, 0).text() for r in range(compare.diff_keys.rowCount())]
    assert diff_keys == ["train.batch_size"]
    assert "-batch_size = 4" in compare.diff_text.toPlainText()
    assert "+batch_size = 8" in compare.diff_text.toPlainText()

    out = window.export_report(str(tmp_path / "compare.md"), "md")
    assert out and "tokens/s" in open(out, encoding="utf-8").read()

    # history: search, rename, tag, delete with confirmation
    history = window.history
    history.rename_run(base_id, "small batch")
    history.set_tags(base_id, ["baseline", "cpu"])
    history.search.setText("baseline")
    assert history.run_ids() == [base_id]
    assert history.table.cell(base_id, "name") == "small batch"
    history.search.setText("")
    history.select(other_id)
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: QMessageBox.StandardButton.Cancel)
    click(qtbot, history.delete_button)
    assert other_id in history.run_ids()  # cancelled: kept
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    click(qtbot, history.delete_button)
    assert other_id not in history.run_ids()
    assert charts.overlay_ids() == [base_id]
    assert not (RunStore().runs_dir / other_id).exists()
