"""The launch section: processes per node (torchrun for more than one) and a remote host (ssh).

The remote host maps to `config.launch.ssh`; whether it is accepted is for
profiler.config.validate to say, and its sentence is shown under the field as soon as the field
is used, so nobody discovers it only after pressing Run. The TensorBoard folder is the front
end's, not the run config's: the recorder writes each run's event file there while it goes
(`effiscope run --tensorboard DIR`).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFormLayout, QLabel, QLineEdit, QSpinBox, QWidget

from profiler.cli.repeats import MAX_REPEATS
from profiler.config import ConfigError, RunConfig, validate


class LaunchForm(QWidget):
    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.processes = QSpinBox()
        self.processes.setObjectName("processesSpin")
        self.processes.setRange(1, 1024)
        self.processes.setKeyboardTracking(False)
        self.processes.setToolTip("Worker processes on this machine; 2 or more start the worker "
                                  "under torchrun and need Data parallel (DDP) or FSDP")
        self.processes.valueChanged.connect(lambda _v: self.changed.emit())
        form.addRow("Processes per node", self.processes)
        self.repeats = QSpinBox()
        self.repeats.setObjectName("repeatsSpin")
        self.repeats.setRange(1, MAX_REPEATS)
        self.repeats.setToolTip("Run the same config this many times, one after the other, and "
                                "show the spread of the headline figures across the runs (like "
                                "`effiscope run --repeats N`)")
        form.addRow("Repeats", self.repeats)
        self.remote = QLineEdit()
        self.remote.setObjectName("remoteEdit")
        self.remote.setPlaceholderText("empty: this machine; or user@host")
        self.remote.setToolTip("Run the worker on another machine through ssh (launch.ssh)")
        self.remote.editingFinished.connect(self._remote_edited)
        form.addRow("Remote host", self.remote)
        self.remote_note = QLabel()
        self.remote_note.setObjectName("fieldError")
        self.remote_note.setWordWrap(True)
        self.remote_note.hide()
        form.addRow(self.remote_note)
        self.nodes_note = QLabel()
        self.nodes_note.setObjectName("hint")
        self.nodes_note.setWordWrap(True)
        form.addRow(self.nodes_note)
        self.tensorboard = QLineEdit()
        self.tensorboard.setObjectName("tensorboardEdit")
        self.tensorboard.setPlaceholderText("empty: none; or a folder for tensorboard --logdir")
        self.tensorboard.setToolTip("Write each run's TensorBoard event file into this folder "
                                    "while it goes (FOLDER/RUN_ID/), so a TensorBoard already "
                                    "open shows it live (like `effiscope run --tensorboard`)")
        form.addRow("TensorBoard folder", self.tensorboard)
        self._base_config: RunConfig | None = None

    def set_config(self, config: RunConfig) -> None:
        self.blockSignals(True)
        self.processes.setValue(config.launch.nproc_per_node)
        self.remote.setText(config.launch.ssh)
        self.blockSignals(False)
        nodes = config.launch.nnodes
        self.nodes_note.setText(f"{nodes} nodes from the config file (node rank "
                                f"{config.launch.node_rank})" if nodes > 1 else "")
        self.nodes_note.setVisible(nodes > 1)
        self.check(config)

    def apply(self, config: RunConfig) -> RunConfig:
        """The launch settings written into config (in place; returned for chaining)."""
        config.launch.nproc_per_node = self.processes.value()
        config.launch.ssh = self.remote.text().strip()
        return config

    def _remote_edited(self) -> None:
        self.changed.emit()

    def check(self, config: RunConfig) -> None:
        """Show validate's sentence about launch.ssh under the field (nothing when it is fine)."""
        message = _ssh_problem(config) if config.launch.ssh else ""
        self.remote_note.setText(message)
        self.remote_note.setVisible(bool(message))

    def set_running(self, running: bool) -> None:
        self.processes.setEnabled(not running)
        self.repeats.setEnabled(not running)
        self.remote.setEnabled(not running)
        self.tensorboard.setEnabled(not running)

    def mirror_for(self, run):
        """(the recorder's mirror for this run, a sentence when the TensorBoard folder cannot be
        written): the null mirror when the field is empty or the folder refused, and the run
        goes on either way (it can be exported afterwards)."""
        from profiler.store.recorder import NO_MIRROR

        folder = self.tensorboard.text().strip()
        if not folder:
            return NO_MIRROR, ""
        from profiler.report.trackers.tensorboard_events import TensorBoardMirror

        try:
            return TensorBoardMirror(Path(folder).expanduser(), run,
                                     fix="choose another TensorBoard folder"), ""
        except OSError as exc:
            return NO_MIRROR, (f"TensorBoard: {exc}. The run goes on without the live file; "
                               "File > Export to > TensorBoard writes it afterwards.")


def _ssh_problem(config: RunConfig) -> str:
    """validate's sentence for launch.ssh: from the whole config, or — when another field fails
    first — from a default config that differs only in the remote host."""
    alone = RunConfig()
    alone.launch.ssh = config.launch.ssh
    for candidate in (config, alone):
        try:
            validate(candidate)
            return ""
        except ConfigError as exc:
            if exc.field.startswith("launch.ssh"):
                return str(exc)
        except Exception:  # noqa: BLE001 - another field's checker failing is not ours to show
            pass
    return ""
