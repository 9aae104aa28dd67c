"""Input widgets built from a parameter's type and range, with one way to read and write them.

A technique parameter (techniques.registry.Param) becomes a check box (bool), a combo box (a
fixed set of choices), a spin box (int, within its range) or a number box (float: a plain one
for ranges like 0..1, a scientific one that steps by doubling for rates like 1e-8..10).
"""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QLineEdit,
    QSpinBox,
    QWidget,
)

INT_LIMIT = 2**31 - 1


class ScientificSpinBox(QDoubleSpinBox):
    """Shows 6e-04 as "0.0006", accepts "6e-4", and steps by doubling / halving."""

    def __init__(self, low: float = 1e-8, high: float = 10.0, parent: QWidget | None = None):
        super().__init__(parent)
        self.setDecimals(12)
        self.setRange(low, high)
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
            ok = all(c in "0123456789.e-+" for c in text.strip().lower())
            state = QValidator.State.Intermediate if ok else QValidator.State.Invalid
            return state, text, pos
        inside = self.minimum() <= value <= self.maximum()
        return (QValidator.State.Acceptable if inside else QValidator.State.Intermediate), text, pos

    def stepBy(self, steps: int) -> None:  # noqa: N802 - Qt override
        self.setValue(self.value() * (2.0**steps))


class ParamControl(QWidget):
    """Not a widget itself: `widget` is; this only gives every kind the same value API."""

    changed = Signal()

    def __init__(self, param: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.param = param
        self.widget = _build(param)
        self.widget.setToolTip(param.help)
        self.widget.setObjectName(f"param_{param.name}")
        w = self.widget
        if isinstance(w, QCheckBox):
            signal = w.toggled
        elif isinstance(w, QComboBox):
            signal = w.currentIndexChanged
        elif isinstance(w, (QSpinBox, QDoubleSpinBox)):
            signal = w.valueChanged
        else:
            signal = w.editingFinished
        signal.connect(lambda *_: self.changed.emit())
        self.set_value(param.default)

    @property
    def kind(self) -> str:
        """"check", "choice", "int", "float" or "text": what the parameter became."""
        w = self.widget
        if isinstance(w, QCheckBox):
            return "check"
        if isinstance(w, QComboBox):
            return "choice"
        if isinstance(w, QSpinBox):
            return "int"
        if isinstance(w, QDoubleSpinBox):
            return "float"
        return "text"

    def value(self) -> Any:
        w = self.widget
        if isinstance(w, QCheckBox):
            return w.isChecked()
        if isinstance(w, QComboBox):
            return w.currentData()
        if isinstance(w, QSpinBox):
            return int(w.value())
        if isinstance(w, QDoubleSpinBox):
            return float(f"{w.value():.6g}")
        return w.text()

    def set_value(self, value: Any) -> None:
        w = self.widget
        w.blockSignals(True)
        try:
            if isinstance(w, QCheckBox):
                w.setChecked(bool(value))
            elif isinstance(w, QComboBox):
                index = w.findData(value)
                if index < 0:  # a value from a config file that the choices lack: show it
                    w.addItem(str(value), value)
                    index = w.count() - 1
                w.setCurrentIndex(index)
            elif isinstance(w, QSpinBox):
                w.setValue(int(value))
            elif isinstance(w, QDoubleSpinBox):
                w.setValue(float(value))
            else:
                w.setText(str(value))
        finally:
            w.blockSignals(False)

    def set_choice_reasons(self, reasons: dict[Any, str | None]) -> None:
        """Grey out the choices this machine cannot run, with the reason as their tooltip."""
        w = self.widget
        if not isinstance(w, QComboBox):
            return
        model = w.model()
        for index in range(w.count()):
            reason = reasons.get(w.itemData(index))
            item = model.item(index)
            item.setEnabled(reason is None)
            item.setToolTip(f"not available here: {reason}" if reason else "")


def _build(param: Any) -> QWidget:
    if param.type is bool:
        return QCheckBox()
    if param.choices:
        box = QComboBox()
        for choice in param.choices:
            box.addItem(str(choice), choice)
        return box
    if param.type is int:
        spin = QSpinBox()
        low = int(param.min) if param.min is not None else -INT_LIMIT
        high = int(min(param.max, INT_LIMIT)) if param.max is not None else INT_LIMIT
        spin.setRange(low, high)
        spin.setKeyboardTracking(False)
        return spin
    if param.type is float:
        low = param.min if param.min is not None else -1e12
        high = param.max if param.max is not None else 1e12
        if low > 0 and high / low >= 1e4:  # rates and bounds spanning decades
            return ScientificSpinBox(low, high)
        spin = QDoubleSpinBox()
        spin.setRange(low, high)
        spin.setDecimals(3)
        spin.setSingleStep(10 ** (round(math.log10(max(high - low, 1e-3))) - 2))
        spin.setKeyboardTracking(False)
        return spin
    edit = QLineEdit()
    edit.setAlignment(Qt.AlignmentFlag.AlignLeft)
    return edit
