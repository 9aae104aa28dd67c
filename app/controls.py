"""Input widgets built from a parameter's type and range, with one way to read and write them.

A technique parameter (techniques.registry.Param) becomes a check box (bool), a combo box (a
fixed set of choices), a spin box (int, within its range) or a number box (float: a plain one
for ranges like 0..1, a scientific one that steps by doubling for rates like 1e-8..10).
"""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QAbstractItemView,
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QHeaderView,
    QLineEdit,
    QSpinBox,
    QTableWidget,
    QWidget,
)

INT_LIMIT = 2**31 - 1
TYPED_INT_LOW = -INT_LIMIT
"""Spin boxes take any number typed into them; validate() says in words what is out of range,
instead of the box silently turning 0 into 1 or 100000 into its maximum."""


class WheelScrollsPanel(QObject):
    """An event filter for a scrolled settings panel: the mouse wheel over a spin box or combo
    box scrolls the panel instead of changing the value (values change by typing, the arrows or
    the keyboard), so scrolling down a form never edits it."""

    def __init__(self, scroll_area, parent: QObject | None = None):
        super().__init__(parent)
        self.scroll_area = scroll_area

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if event.type() == QEvent.Type.Wheel and isinstance(watched, (QAbstractSpinBox,
                                                                      QComboBox)):
            bar = self.scroll_area.verticalScrollBar()
            delta = event.angleDelta().y()
            if delta:
                bar.setValue(bar.value() - int(delta / 120 * bar.singleStep() * 3))
            return True
        return False

    def watch(self, root: QWidget) -> None:
        """Filter every spin box and combo box under root (call again after adding fields)."""
        for widget in root.findChildren(QAbstractSpinBox) + root.findChildren(QComboBox):
            if not widget.property("wheel_filtered"):
                widget.installEventFilter(self)
                widget.setProperty("wheel_filtered", True)
                widget.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # no focus from the wheel


class _PopupWidth(QObject):
    """Before a combo box's list opens, it takes the width of its longest choice."""

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if event.type() == QEvent.Type.Show:
            view = watched.findChild(QAbstractItemView) if not isinstance(
                watched, QAbstractItemView) else watched
            if view is not None:
                view.setMinimumWidth(view.sizeHintForColumn(0) + 24)
        return False


_POPUP_WIDTH = _PopupWidth()


def fit_popup(combo: QComboBox) -> None:
    """The open list of `combo` shows every choice whole (its width follows the longest)."""
    combo.view().window().installEventFilter(_POPUP_WIDTH)


class ScientificSpinBox(QDoubleSpinBox):
    """Shows 6e-04 as "0.0006", accepts "6e-4", and steps by doubling / halving."""

    def __init__(self, low: float = 1e-8, high: float = 10.0, parent: QWidget | None = None):
        super().__init__(parent)
        self.setDecimals(12)
        self.advised = (low, high)
        """The range the arrows stay inside; a typed value outside it is kept (and refused in
        words by validate) rather than silently corrected."""
        self.setRange(-1e12, 1e12)
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
        low, high = self.advised
        value = self.value() if self.value() > 0 else low
        self.setValue(min(max(value * (2.0**steps), low), high))


class ParamControl(QObject):
    """Not a widget itself: `widget` is; this only gives every kind the same value API.

    A QObject, never a QWidget: an invisible widget parented to the row would lie over the
    row's check box and swallow the clicks meant for it."""

    changed = Signal()

    def __init__(self, param: Any, parent: QObject | None = None):
        super().__init__(parent)
        self.param = param
        self.widget = _build(param)
        bounds = [f"{name} {value:g}" for name, value in (("at least", param.min),
                                                           ("at most", param.max))
                  if isinstance(value, (int, float))]
        self.widget.setToolTip(param.help + (f" ({', '.join(bounds)})" if bounds else ""))
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
        spin.setRange(TYPED_INT_LOW, INT_LIMIT)  # validate() refuses what is out of range
        spin.setKeyboardTracking(False)
        return spin
    if param.type is float:
        low = param.min if param.min is not None else -1e12
        high = param.max if param.max is not None else 1e12
        if low > 0 and high / low >= 1e4:  # rates and bounds spanning decades
            return ScientificSpinBox(low, high)
        spin = QDoubleSpinBox()
        spin.setRange(-1e12, 1e12)  # validate() refuses what is out of range, in words
        spin.setDecimals(3)
        spin.setSingleStep(10 ** (round(math.log10(max(high - low, 1e-3))) - 2))
        spin.setKeyboardTracking(False)
        return spin
    edit = QLineEdit()
    edit.setAlignment(Qt.AlignmentFlag.AlignLeft)
    return edit


def figure_table(columns: list[str] | tuple[str, ...], name: str, wrap: bool) -> QTableWidget:
    """A read-only table of figures that shows every row and column (no scroll bars of its own:
    the tab scrolls), columns sized to their contents and the last one taking the rest."""
    table = QTableWidget(0, len(columns))
    table.setObjectName(name)
    table.setHorizontalHeaderLabels(list(columns))
    table.verticalHeader().setVisible(False)
    table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
    table.setWordWrap(wrap)
    table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setStretchLastSection(True)
    return table
