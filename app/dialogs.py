"""Small dialogs: About (versions and device), a run's worker log, the quick start and the
keyboard shortcuts."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from pathlib import Path

from PySide6 import __version__ as pyside_version
from PySide6.QtCore import Qt, qVersion
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPlainTextEdit,
    QVBoxLayout,
    QWidget,
)

LOG_TAIL_BYTES = 200_000


def versions() -> dict[str, str]:
    """Installed versions, read from package metadata (torch is never imported by the app)."""
    out = {"EffiScope": _version("effiscope"), "Python": platform.python_version(),
           "Qt": qVersion(), "PySide6": pyside_version}
    for name in ("torch", "pyqtgraph", "numpy", "psutil", "nvidia-ml-py"):
        out[name] = _version(name)
    return out


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        if name == "effiscope":
            from profiler import __version__

            return f"{__version__} (source tree)"
        return "not installed"


def about_text(host: dict, data_dir: str) -> str:
    rows = "".join(f"<tr><td>{k}</td><td>&nbsp;&nbsp;{v}</td></tr>" for k, v in versions().items())
    gpus = host.get("gpus") or []
    gpu = (", ".join(f"{g.get('name')} ({(g.get('memory_total_bytes') or 0) / 2**30:.0f} GiB, "
                     f"driver {g.get('driver')})" for g in gpus)
           if gpus else f"none ({host.get('gpu_note') or 'no NVIDIA GPU found'})")
    memory = (host.get("memory_total_bytes") or 0) / 2**30
    return (
        "<h3>EffiScope</h3>"
        "<p>A desktop lab for the efficiency techniques of large language models: pick a model "
        "and techniques, run, watch, compare.</p>"
        f"<table>{rows}</table>"
        f"<p><b>Device</b><br>CPU: {host.get('cpu', '?')}, {host.get('cpu_cores_logical', '?')} "
        f"logical cores, {memory:.1f} GiB RAM<br>GPU: {gpu}<br>"
        f"{host.get('os', platform.system())}, {sys.platform}</p>"
        f"<p><b>Data</b><br>{data_dir}</p>")


def show_about(parent: QWidget, host: dict, data_dir: str) -> QDialog:
    dialog = QDialog(parent)
    dialog.setWindowTitle("About EffiScope")
    layout = QVBoxLayout(dialog)
    label = QLabel(about_text(host, data_dir))
    label.setObjectName("aboutText")
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
    layout.addWidget(label)
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
    buttons.rejected.connect(dialog.reject)
    layout.addWidget(buttons)
    dialog.resize(520, 440)
    dialog.show()
    return dialog


def read_log_tail(path: Path) -> str:
    from profiler import files

    try:  # a regular file in the run folder only: a FIFO would freeze the window
        data, size = files.read_tail(path, LOG_TAIL_BYTES, inside=path.parent)
        text = data.decode("utf-8", errors="replace")
    except OSError as exc:
        return f"The log {path} cannot be read ({exc.strerror or exc})."
    if size > LOG_TAIL_BYTES:
        text = f"… (the first {size - LOG_TAIL_BYTES:,} bytes are not shown)\n" + text
    return text or "(the worker wrote nothing to its log)"


def show_log(parent: QWidget, run_id: str, path: Path) -> QDialog:
    dialog = QDialog(parent)
    dialog.setWindowTitle(f"Worker log: {run_id}")
    layout = QVBoxLayout(dialog)
    where = QLabel(str(path))
    where.setObjectName("hint")
    layout.addWidget(where)
    text = QPlainTextEdit(read_log_tail(path))
    text.setObjectName("logText")
    text.setReadOnly(True)
    mono = QFont("monospace")
    mono.setStyleHint(QFont.StyleHint.Monospace)
    text.setFont(mono)
    text.moveCursor(text.textCursor().MoveOperation.End)
    layout.addWidget(text, 1)
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
    buttons.rejected.connect(dialog.reject)
    layout.addWidget(buttons)
    dialog.resize(860, 520)
    dialog.show()
    return dialog


QUICK_START = (
    ("Pick what to run", "Workload (train, inference, compress, distill), a preset and a model "
     "in the left column; the line under Run says whether it fits in memory."),
    ("Switch techniques on", "Tick techniques in the Techniques section; a greyed one says why "
     "it cannot run here in its tooltip."),
    ("Run", "Press Run (Ctrl+R). The charts fill as it goes; the headline above them gives "
     "the answer when it ends, the Summary tab every figure with its spread."),
    ("Change it mid-run", "Tick a technique that can change mid-run: a marker shows the step, "
     "and the segment table under the charts gives each configuration's own figures."),
    ("Compare", "Tick runs in the history to lay them over the charts; the Compare tab gives "
     "the deltas against a baseline and says which are within noise. File ▸ Export report "
     "writes it all to HTML."),
)


def _text_dialog(parent: QWidget, title: str, html: str, name: str) -> QDialog:
    dialog = QDialog(parent)
    dialog.setWindowTitle(title)
    layout = QVBoxLayout(dialog)
    label = QLabel(html)
    label.setObjectName(name)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    layout.addWidget(label)
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
    buttons.rejected.connect(dialog.reject)
    layout.addWidget(buttons)
    dialog.resize(560, 420)
    dialog.show()
    return dialog


def show_quick_start(parent: QWidget) -> QDialog:
    steps = "".join(f"<li><b>{title}.</b> {text}</li>" for title, text in QUICK_START)
    return _text_dialog(parent, "Quick start", f"<h3>Quick start</h3><ol>{steps}</ol>",
                        "quickStart")


def show_shortcuts(parent: QWidget, rows: list[tuple[str, str]]) -> QDialog:
    table = "".join(f"<tr><td><b>{keys}</b></td><td>&nbsp;&nbsp;{what}</td></tr>"
                    for keys, what in rows)
    extra = ("<p>In the run table: arrows move between runs (the one selected is drawn), "
             "Delete deletes the selected runs, Tab leaves the table. On a chart: the wheel "
             "zooms the steps, a double click shows the whole run again.</p>")
    return _text_dialog(parent, "Keyboard shortcuts",
                        f"<h3>Keyboard shortcuts</h3><table>{table}</table>{extra}",
                        "shortcutList")
