"""The app's side of issue 39: File > Export to > TensorBoard / MLflow / CSV for the selected
runs (clicked through the menu bar, as a user does), the Launch section's TensorBoard folder,
which mirrors a run live, and the Profile tab's CUDA memory snapshot option."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QFileDialog

from profiler.report.trackers.tensorboard_events import event_path
from profiler.store import RunStore
from tests.gui_support import (
    click,
    click_menu,
    click_run,
    fake_worker,
    stored_run,
    tick,
    train_messages,
)


def _points(path) -> list[tuple[str, int]]:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return [(v.tag, e.step) for e in EventFileLoader(str(path)).Load() for v in e.summary.value
            if v.metadata.plugin_data.plugin_name == "scalars"]


def _select(qtbot, window, run_id: str) -> None:
    """Click the run's row in the run table, as a user picks it."""
    window.history.refresh()
    click_run(qtbot, window.history, run_id)
    assert window.export_targets() == ([run_id], None)


EXPORT_TO = ("&File", "Export &to")


def export_via_menu(qtbot, window, entry: str) -> None:
    """Click File > Export to > entry, then wait for the export's thread to finish writing."""
    click_menu(qtbot, window, *EXPORT_TO, entry)
    qtbot.waitUntil(lambda: window.export_job is None, timeout=60_000)


def test_file_export_to_writes_the_selected_run(qtbot, window, tmp_path, monkeypatch):
    run_id = stored_run(RunStore(), "menu", train_messages(5, summary={"figures": {}}))
    stored_run(RunStore(), "not this one", train_messages(3))
    _select(qtbot, window, run_id)
    menu = window.tracker_menu
    assert [a.text() for a in menu.actions()] == ["&TensorBoard…", "&MLflow…", "&CSV (long)…"]
    out = tmp_path / "out"
    out.mkdir()
    asked = []
    monkeypatch.setattr(QFileDialog, "getExistingDirectory",
                        staticmethod(lambda *args, **kw: asked.append(args[1]) or str(out)))
    export_via_menu(qtbot, window, "&TensorBoard…")
    assert asked == ["Export to TensorBoard: choose a folder"]
    assert [p.name for p in out.iterdir()] == [run_id]  # the selected run only
    points = _points(event_path(out, run_id))
    assert [s for t, s in points if t == "speed/tokens_per_s"] == [1, 2, 3, 4, 5]
    export_via_menu(qtbot, window, "&CSV (long)…")
    rows = (out / f"{run_id}.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "step,timestamp,metric,value,unit" and len(rows) == 1 + 5 * 4
    assert "exported 1 run" in window.statusBar().currentMessage()


def test_the_ticked_runs_are_exported_one_file_each(qtbot, window, tmp_path, monkeypatch):
    first = stored_run(RunStore(), "first", train_messages(3))
    second = stored_run(RunStore(), "second", train_messages(4))
    stored_run(RunStore(), "unticked", train_messages(2))
    window.history.refresh()
    tick(qtbot, window.history, first)
    tick(qtbot, window.history, second)
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory",
                        staticmethod(lambda *args, **kw: str(out)))
    export_via_menu(qtbot, window, "&CSV (long)…")
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{first}.csv", f"{second}.csv"])
    rows = (out / f"{second}.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 1 + 4 * 4  # four readings a step, four steps
    assert "exported 2 runs" in window.statusBar().currentMessage()


def test_a_refused_export_is_said_in_the_window(qtbot, window, tmp_path, monkeypatch):
    run_id = stored_run(RunStore(), "refused", train_messages(2))
    _select(qtbot, window, run_id)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setattr(QFileDialog, "getExistingDirectory",
                        staticmethod(lambda *args, **kw: str(blocker)))
    export_via_menu(qtbot, window, "&TensorBoard…")
    assert "is a file, not a folder" in window.error_text()
    assert blocker.read_text() == ""
    window.clear_error()
    monkeypatch.setitem(sys.modules, "mlflow", None)  # the optional extra not installed
    export_via_menu(qtbot, window, "&MLflow…")
    assert "pip install &#x27;effiscope[mlflow]&#x27;" in window.error_text()  # HTML-escaped


def test_the_launch_sections_tensorboard_folder_mirrors_the_run_live(qtbot, window, tmp_path):
    window.worker_command = fake_worker()
    window.form.preset.setCurrentText("nano")
    window.form.device.setCurrentText("cpu")
    window.form.steps.setValue(100_000)
    qtbot.keyClicks(window.launch_form.tensorboard, str(tmp_path / "tb"))  # typed in
    qtbot.mouseClick(window.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.link is not None and window.link.recorder.samples >= 3,
                    timeout=10_000)
    assert not window.launch_form.tensorboard.isEnabled()
    live = event_path(tmp_path / "tb", window.run_id)
    qtbot.waitUntil(lambda: len(_points(live)) >= 3, timeout=10_000)  # while the run goes
    qtbot.mouseClick(window.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.running, timeout=10_000)
    window.history.refresh(select_id=window.run_id)
    from app.tracker_export import export_runs

    job = export_runs(window, "tensorboard", str(tmp_path / "exported"))  # the menu's own call
    assert job is not None and job.wait(60) and not job.error
    assert live.read_bytes() == event_path(tmp_path / "exported", window.run_id).read_bytes()


def test_nothing_selected_is_said_and_a_cancelled_folder_writes_nothing(qtbot, window, tmp_path,
                                                                      monkeypatch):
    asked = []
    monkeypatch.setattr(QFileDialog, "getExistingDirectory",
                        staticmethod(lambda *args, **kw: asked.append(1) or ""))
    window.history.refresh()
    window.history.table.clearSelection()
    export_via_menu(qtbot, window, "&CSV (long)…")
    assert "Select a run" in window.statusBar().currentMessage() and not asked
    run_id = stored_run(RunStore(), "cancelled", train_messages(2))
    _select(qtbot, window, run_id)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    export_via_menu(qtbot, window, "&CSV (long)…")  # the folder dialog is cancelled
    assert asked == [1] and list(Path.cwd().iterdir()) == [] and not window.error_text()


def test_the_profile_tabs_memory_snapshot_box_asks_for_it_and_shows_the_answer(qtbot, window):
    """Ticked, the capture asks the worker for the CUDA memory snapshot; on a CPU the answer is
    n/a with the reason, shown beside the capture."""
    window.worker_command = fake_worker()
    window.form.preset.setCurrentText("nano")
    window.form.device.setCurrentText("cpu")
    window.form.steps.setValue(100_000)
    click(qtbot, window.run_button)
    qtbot.waitUntil(lambda: window.link is not None and window.link.recorder.samples >= 2,
                    timeout=10_000)
    window.tabs.setCurrentWidget(window.profile)
    view = window.profile
    view.steps.setValue(2)
    click(qtbot, view.memory)
    assert view.memory.isChecked()
    click(qtbot, view.capture_button)
    qtbot.waitUntil(lambda: bool(view.profiles), timeout=10_000)
    assert "Memory snapshot: n/a on CPU" in view.status.text()
    assert "run on a GPU" in view.status.text()
    click(qtbot, view.memory)  # off again: the next capture asks for no snapshot
    click(qtbot, view.capture_button)
    qtbot.waitUntil(lambda: len(view.profiles) == 2, timeout=10_000)
    assert "memory_snapshot_note" not in view.profiles[1]
    assert "snapshot" not in view.status.text()
    click(qtbot, window.stop_button)
    qtbot.waitUntil(lambda: not window.running, timeout=10_000)


def test_the_window_keeps_drawing_while_an_export_is_written(qtbot, window, tmp_path,
                                                             monkeypatch):
    """A slow export (a first MLflow store takes seconds) runs beside the event loop: timers
    fire meanwhile, the menu entries wait for it, a second export is refused until it ends."""
    import threading

    from profiler.report import trackers

    run_id = stored_run(RunStore(), "slow", train_messages(2))
    _select(qtbot, window, run_id)
    release = threading.Event()
    real_export = trackers.export

    def slow_export(*args, **kw):
        release.wait(30)
        return real_export(*args, **kw)

    monkeypatch.setattr(trackers, "export", slow_export)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory",
                        staticmethod(lambda *args, **kw: str(tmp_path)))
    click_menu(qtbot, window, *EXPORT_TO, "&CSV (long)…")
    assert window.export_job is not None
    assert "exporting 1 run" in window.statusBar().currentMessage()
    assert not any(a.isEnabled() for a in window.tracker_actions.values())
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(10)
    qtbot.waitUntil(lambda: len(ticks) >= 5, timeout=5000)  # the loop turns during the export
    timer.stop()
    assert window.export_job is not None and not (tmp_path / f"{run_id}.csv").exists()
    release.set()
    qtbot.waitUntil(lambda: window.export_job is None, timeout=30_000)
    assert (tmp_path / f"{run_id}.csv").is_file()
    assert all(a.isEnabled() for a in window.tracker_actions.values())
    assert "exported 1 run" in window.statusBar().currentMessage()
