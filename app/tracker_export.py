"""File > Export to > TensorBoard / MLflow / CSV: the selected runs (or the ticked ones) into the
trackers people keep their training runs in, through profiler.report.trackers (read from the
store; the app imports neither torch nor the engine for it)."""

from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFileDialog, QMenu

TARGETS = {
    "tensorboard": ("&TensorBoard…", "TensorBoard event files, one folder per run (open the "
                                     "chosen folder with tensorboard --logdir)"),
    "mlflow": ("&MLflow…", "One MLflow run per run in a local store in the chosen folder "
                           "(mlflow.db and artifacts; needs pip install 'effiscope[mlflow]')"),
    "csv-long": ("&CSV (long)…", "One CSV per run: step, timestamp, metric, value, unit"),
}


def build_menu(window) -> QMenu:
    """The submenu; its actions are window.tracker_actions[target]."""
    menu = QMenu("Export &to", window)
    menu.setToolTipsVisible(True)
    window.tracker_menu, window.tracker_actions = menu, {}
    for target, (text, tip) in TARGETS.items():
        action = QAction(text, window)
        action.setStatusTip(tip)
        action.setToolTip(tip)
        action.triggered.connect(lambda _checked=False, t=target: export_runs(window, t))
        menu.addAction(action)
        window.tracker_actions[target] = action
    return menu


class ExportJob(QObject):
    """One export, written on a thread of its own so the window keeps drawing (a first MLflow
    store takes seconds to create); `finished` is delivered on the window's thread, where the
    result is shown. `lines` is what was written, `error` the refusal (a sentence)."""

    finished = Signal()
    _ended = Signal()  # emitted on the export's thread, delivered queued on this object's

    def __init__(self, run_ids: list[str], target: str, folder: str, store) -> None:
        super().__init__()
        self._ended.connect(self.finished.emit, Qt.ConnectionType.QueuedConnection)
        self.run_ids, self.target, self.folder = run_ids, target, folder
        self.lines: list[str] | None = None
        self.error = ""
        self.warnings: list[str] = []
        self._thread = threading.Thread(target=self._run, args=(store,), daemon=True,
                                        name=f"export to {target}")

    def start(self) -> None:
        self._thread.start()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the files are written (the window closing waits for them); True if done."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self, store) -> None:
        from profiler.report.trackers import TrackerError, export

        try:
            self.lines = export(self.run_ids, self.target, self.folder, store=store,
                                warnings=self.warnings)
        except TrackerError as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - said in the window, never a dead thread
            self.error = f"{type(exc).__name__}: {exc}"
        self._ended.emit()


def export_runs(window, target: str, folder: str | None = None) -> ExportJob | None:
    """Export the runs File > Export would report to `target` under `folder` (asked when None),
    on a thread; the job (its `finished` says the result in the window), or None (nothing
    selected, cancelled, or an export still being written)."""
    if window.export_job is not None:
        window.statusBar().showMessage("An export is still being written; wait for it.", 8000)
        return None
    run_ids, _baseline = window.export_targets()
    if not run_ids:
        window.statusBar().showMessage("Select a run (or tick several) to export it.", 8000)
        return None
    if folder is None:
        title = TARGETS[target][0].replace("&", "").rstrip("…")
        folder = QFileDialog.getExistingDirectory(window, f"Export to {title}: choose a folder",
                                                  str(Path.home()))
        if not folder:
            return None
    runs = f"{len(run_ids)} run{'s' if len(run_ids) > 1 else ''}"
    job = ExportJob(run_ids, target, folder, window.store)
    window.export_job = job
    for action in window.tracker_actions.values():
        action.setEnabled(False)
    window.statusBar().showMessage(f"exporting {runs} to {folder}…")

    def done() -> None:
        window.export_job = None
        for action in window.tracker_actions.values():
            action.setEnabled(True)
        if job.error:
            window.statusBar().clearMessage()
            window.show_error(f"Export failed: {job.error}", "Choose another folder or run.")
            return
        for warning in job.warnings[:5]:
            window.add_notice(warning)
        window.statusBar().showMessage(f"exported {runs} to {folder}", 10000)

    job.finished.connect(done)
    job.start()
    return job
