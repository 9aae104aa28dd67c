"""The app's side of issue 39: File > Export to > TensorBoard / MLflow / CSV for the selected
runs, and the Launch section's TensorBoard folder, which mirrors a run live."""

from __future__ import annotations

import sys

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

from profiler.report.trackers.tensorboard_events import event_path
from profiler.store import RunStore
from tests import gui_support
from tests.gui_support import fake_worker, stored_run, train_messages

window = gui_support.window  # the fixture: a MainWindow, freed at teardown


def _points(path) -> list[tuple[str, int]]:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return [(v.tag, e.step) for e in EventFileLoader(str(path)).Load() for v in e.summary.value
            if v.metadata.plugin_data.plugin_name == "scalars"]


def _select(window, run_id: str) -> None:
    window.history.refresh(select_id=run_id)
    assert window.export_targets() == ([run_id], None)


def test_file_export_to_writes_the_selected_run(qtbot, window, tmp_path, monkeypatch):
    run_id = stored_run(RunStore(), "menu", train_messages(5, summary={"figures": {}}))
    _select(window, run_id)
    menu = window.tracker_menu
    assert [a.text() for a in menu.actions()] == ["&TensorBoard…", "&MLflow…", "&CSV (long)…"]
    assert menu.menuAction() in window.menuBar().actions()[0].menu().actions()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory",
                        staticmethod(lambda *args, **kw: str(tmp_path)))
    window.tracker_actions["tensorboard"].trigger()
    points = _points(event_path(tmp_path, run_id))
    assert [s for t, s in points if t == "speed/tokens_per_s"] == [1, 2, 3, 4, 5]
    window.tracker_actions["csv-long"].trigger()
    rows = (tmp_path / f"{run_id}.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "step,timestamp,metric,value,unit" and len(rows) == 1 + 5 * 4
    assert "exported 1 run" in window.statusBar().currentMessage()


def test_a_refused_export_is_said_in_the_window(qtbot, window, tmp_path, monkeypatch):
    run_id = stored_run(RunStore(), "refused", train_messages(2))
    _select(window, run_id)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setattr(QFileDialog, "getExistingDirectory",
                        staticmethod(lambda *args, **kw: str(blocker)))
    window.tracker_actions["tensorboard"].trigger()
    assert "is a file, not a folder" in window.error_text()
    window.clear_error()
    monkeypatch.setitem(sys.modules, "mlflow", None)  # the optional extra not installed
    window.tracker_actions["mlflow"].trigger()
    assert "pip install &#x27;effiscope[mlflow]&#x27;" in window.error_text()  # HTML-escaped


def test_the_launch_sections_tensorboard_folder_mirrors_the_run_live(qtbot, window, tmp_path):
    window.worker_command = fake_worker()
    window.form.preset.setCurrentText("nano")
    window.form.device.setCurrentText("cpu")
    window.form.steps.setValue(100_000)
    window.launch_form.tensorboard.setText(str(tmp_path / "tb"))
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

    export_runs(window, "tensorboard", str(tmp_path / "exported"))
    assert live.read_bytes() == event_path(tmp_path / "exported", window.run_id).read_bytes()
