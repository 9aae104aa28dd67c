"""File > Export to > TensorBoard / MLflow / CSV: the selected runs (or the ticked ones) into the
trackers people keep their training runs in, through profiler.report.trackers (read from the
store; the app imports neither torch nor the engine for it)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QApplication, QFileDialog, QMenu

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


def export_runs(window, target: str, folder: str | None = None) -> list[str] | None:
    """Export the runs File > Export would report to `target` under `folder` (asked when None);
    what was written, or None (nothing selected, cancelled, refused with the sentence shown)."""
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
    from profiler.report.trackers import TrackerError, export

    warnings: list[str] = []
    QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
    try:
        lines = export(run_ids, target, folder, store=window.store, warnings=warnings)
    except TrackerError as exc:
        window.show_error(f"Export failed: {exc}", "Choose another folder or run.")
        return None
    finally:
        QApplication.restoreOverrideCursor()
    for warning in warnings[:5]:
        window.add_notice(warning)
    runs = f"{len(run_ids)} run{'s' if len(run_ids) > 1 else ''}"
    window.statusBar().showMessage(f"exported {runs} to {folder}", 10000)
    return lines
