"""The run form: a shipped preset plus the few settings people change most, as a RunConfig.

The preset supplies everything (data, optimizer, eval cadence); the form overrides model-agnostic
knobs. Values are checked by profiler.config.validate, not here, so the GUI and the CLI refuse
the same things with the same sentence.
"""

from __future__ import annotations

import copy

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QSpinBox,
    QWidget,
)

from profiler.config import PRESETS_DIR, ConfigError, RunConfig, list_presets
from profiler.models.presets import GPT_PRESETS

DEVICES = ("auto", "cpu", "cuda")
DEFAULT_PRESET = "nano"


class LearningRateBox(QDoubleSpinBox):
    """A spin box that shows 6e-04 as "0.0006" and steps by doubling/halving, as people tune it."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setDecimals(8)
        self.setRange(1e-6, 1.0)
        self.setValue(1e-3)
        self.setKeyboardTracking(False)

    def textFromValue(self, value: float) -> str:  # noqa: N802 - Qt override
        return f"{value:.3g}"

    def valueFromText(self, text: str) -> float:  # noqa: N802 - Qt override
        try:
            return float(text)
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int) -> object:
        try:
            value = float(text)
        except ValueError:
            partial = text.strip().lower()
            ok = all(c in "0123456789.e-+" for c in partial)
            state = QValidator.State.Intermediate if ok else QValidator.State.Invalid
            return state, text, pos
        inside = self.minimum() <= value <= self.maximum()
        return (QValidator.State.Acceptable if inside else QValidator.State.Intermediate), text, pos

    def stepBy(self, steps: int) -> None:  # noqa: N802 - Qt override
        self.setValue(self.value() * (2.0**steps))


def preset_description(name: str) -> str:
    """The preset file's first comment line, which says what the preset is for."""
    try:
        with (PRESETS_DIR / f"{name}.toml").open(encoding="utf-8") as fh:
            first = fh.readline().strip()
    except OSError:
        return ""
    return first.lstrip("#").strip()


class RunForm(QWidget):
    """Preset, device, steps, batch, sequence length, learning rate -> RunConfig."""

    preset_loaded = Signal(str)

    def __init__(self, cuda_available: bool, cuda_reason: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.base: RunConfig = RunConfig()
        self.preset_error = ""
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)

        self.preset = QComboBox()
        self.preset.setObjectName("presetCombo")
        for name in list_presets():
            self.preset.addItem(name)
            self.preset.setItemData(self.preset.count() - 1, preset_description(name),
                                    Qt.ItemDataRole.ToolTipRole)
        form.addRow("Preset", self.preset)
        self.model_note = QLabel()
        self.model_note.setObjectName("hint")
        self.model_note.setWordWrap(True)
        form.addRow(self.model_note)

        self.device = QComboBox()
        self.device.setObjectName("deviceCombo")
        for name in DEVICES:
            self.device.addItem(name)
        self.device.setItemData(0, "CUDA when the worker finds a GPU, else the CPU",
                                Qt.ItemDataRole.ToolTipRole)
        if not cuda_available:
            item = self.device.model().item(DEVICES.index("cuda"))
            item.setEnabled(False)
            item.setToolTip(f"not available here: {cuda_reason or 'no NVIDIA GPU found'}")
        form.addRow("Device", self.device)

        self.steps = self._spin(1, 1_000_000, "Optimizer steps to run. Warmup steps (excluded "
                                "from speed figures) are the preset's, fewer for very short runs.")
        form.addRow("Steps", self.steps)
        self.batch_size = self._spin(1, 4096, "Sequences per step")
        form.addRow("Batch size", self.batch_size)
        # Deliberately above every context length: validate() explains the limit in words.
        self.seq_len = self._spin(2, 16_384, "Tokens per sequence; at most the model's context")
        form.addRow("Sequence length", self.seq_len)
        self.learning_rate = LearningRateBox()
        self.learning_rate.setToolTip("Peak learning rate of AdamW (arrows double / halve it)")
        form.addRow("Learning rate", self.learning_rate)

        self.preset.currentTextChanged.connect(self.load_preset)
        start = DEFAULT_PRESET if DEFAULT_PRESET in list_presets() else self.preset.itemText(0)
        self.preset.setCurrentText(start)
        self.load_preset(start)

    @staticmethod
    def _spin(low: int, high: int, tip: str) -> QSpinBox:
        box = QSpinBox()
        box.setRange(low, high)
        box.setToolTip(tip)
        box.setKeyboardTracking(False)
        return box

    def load_preset(self, name: str) -> None:
        """Put a preset's values into the form; a broken preset file is reported, not raised."""
        try:
            config = RunConfig.load(PRESETS_DIR / f"{name}.toml")
        except ConfigError as exc:
            self.preset_error = f"preset {name}: {exc}"
            self.model_note.setText(self.preset_error)
            return
        self.preset_error = ""
        self.base = config
        shape = GPT_PRESETS.get(config.model.preset)
        detail = (f"{config.model.preset}: {shape.description}, context {shape.block_size} tokens"
                  if shape else config.model.preset)
        self.model_note.setText(detail)
        self.model_note.setToolTip(preset_description(name))
        index = self.device.findText(config.device)
        self.device.setCurrentIndex(index if index >= 0 and self._enabled(index) else 0)
        self.steps.setValue(config.limits.steps)
        self.batch_size.setValue(config.train.batch_size)
        self.seq_len.setValue(config.train.seq_len)
        self.learning_rate.setValue(config.train.learning_rate)
        self.preset_loaded.emit(name)

    def _enabled(self, index: int) -> bool:
        return bool(self.device.model().item(index).isEnabled())

    def build_config(self) -> RunConfig:
        """The preset with the form's values on top (not validated: the caller does that)."""
        config = copy.deepcopy(self.base)
        config.name = self.preset.currentText()
        config.device = self.device.currentText()
        config.limits.steps = self.steps.value()
        config.limits.warmup_steps = max(0, min(config.limits.warmup_steps, config.limits.steps - 1))
        config.train.batch_size = self.batch_size.value()
        config.train.seq_len = self.seq_len.value()
        config.train.learning_rate = float(f"{self.learning_rate.value():.6g}")
        return config

    def set_running(self, running: bool) -> None:
        """Settings are frozen while a run uses them."""
        for widget in (self.preset, self.device, self.steps, self.batch_size, self.seq_len,
                       self.learning_rate):
            widget.setEnabled(not running)
