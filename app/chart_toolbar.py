"""The charts' toolbar: the X axis, smoothing, Follow and Clear comparison.

A part of its own (LiveCharts composes it): it owns its controls and says what the user chose
through signals; the charts decide what that means. One row, or two rows when the charts are
narrow (a 1024 px window with both side panels), so no word is cut.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QWidget,
)


class ChartToolbar(QWidget):
    axis_chosen = Signal(str)
    """The X axis the user picked ("step", "time", "tokens", "wall")."""
    smoothing_chosen = Signal(float)
    """The EMA weight the slider is at, 0 to 0.99."""

    def __init__(self, modes: dict[str, str], parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("chartToolbar")
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(0, 0, 0, 4)
        self.grid.setHorizontalSpacing(8)
        self.grid.setVerticalSpacing(2)
        self.axis_group = QWidget()
        axis = QHBoxLayout(self.axis_group)
        axis.setContentsMargins(0, 0, 0, 0)
        axis.addWidget(QLabel("X axis"))
        self.axis_combo = QComboBox()
        self.axis_combo.setObjectName("axisCombo")
        for mode in modes:
            self.axis_combo.addItem(mode, mode)
        self.axis_combo.setToolTip("Draw every chart against the step, the seconds since the "
                                   "first step, the tokens seen (step x tokens per step) or the "
                                   "time of day (wall clock: a live run's from when its samples "
                                   "arrived; a stored run's from when its last message was "
                                   "written, to about a second)")
        self.axis_combo.currentTextChanged.connect(self.axis_chosen.emit)
        axis.addWidget(self.axis_combo)
        self.axis_note = QLabel("")
        self.axis_note.setObjectName("hint")
        self.axis_note.hide()
        axis.addWidget(self.axis_note)
        self.smooth_group = QWidget()
        smooth = QHBoxLayout(self.smooth_group)
        smooth.setContentsMargins(0, 0, 0, 0)
        smooth.addWidget(QLabel("Smoothing"))
        self.smoothing_slider = QSlider(Qt.Orientation.Horizontal)
        self.smoothing_slider.setObjectName("smoothingSlider")
        self.smoothing_slider.setRange(0, 99)
        self.smoothing_slider.setFixedWidth(90)
        self.smoothing_slider.setToolTip("Exponential moving average of every curve (the raw "
                                         "curve stays, faint, behind it); 0 = off")
        self.smoothing_slider.valueChanged.connect(
            lambda value: self.smoothing_chosen.emit(value / 100))
        smooth.addWidget(self.smoothing_slider)
        self.smoothing_label = QLabel("off")
        self.smoothing_label.setMinimumWidth(30)
        smooth.addWidget(self.smoothing_label)
        self.follow_button = QPushButton("Follow")
        self.follow_button.setObjectName("smallButton")
        self.follow_button.setToolTip("Undo the zoom: every chart shows the whole run again and "
                                      "follows new steps (or double-click a chart). The wheel "
                                      "zooms the steps, a drag pans them; y always fits.")
        self.follow_button.setEnabled(False)
        smooth.addWidget(self.follow_button)
        self.clear_button = QPushButton("Clear comparison")
        self.clear_button.setObjectName("smallButton")
        self.clear_button.setToolTip("Remove the compared runs from the charts (and untick "
                                     "them in the history)")
        self.clear_button.hide()
        self._rows = 0
        self._place(1)

    def show_axis(self, mode: str) -> None:
        """Show `mode` as the choice (without saying it was chosen again)."""
        if self.axis_combo.currentText() != mode:
            self.axis_combo.setCurrentText(mode)

    def say_axis(self, note: str, why: str) -> None:
        """Beside the choice: what the charts really draw by ("" hides it), why in its tooltip."""
        self.axis_note.setText(note)
        self.axis_note.setToolTip(why)
        self.axis_note.setVisible(bool(note))
        self.fit(self.width())

    def show_smoothing(self, weight: float) -> None:
        if self.smoothing_slider.value() != round(weight * 100):
            self.smoothing_slider.setValue(round(weight * 100))
        self.smoothing_label.setText(f"{weight:.2f}" if weight else "off")

    def show_compared(self, count: int) -> None:
        self.clear_button.setText(f"Clear comparison ({count})")
        self.clear_button.setVisible(bool(count))
        self.fit(self.width())

    def _place(self, rows: int) -> None:
        if rows == self._rows:
            return
        self._rows = rows
        for widget in (self.axis_group, self.smooth_group, self.clear_button):
            self.grid.removeWidget(widget)
        self.grid.addWidget(self.axis_group, 0, 0)
        self.grid.addWidget(self.smooth_group, 0 if rows == 1 else 1, 1 if rows == 1 else 0,
                            1, 1 if rows == 1 else 3, Qt.AlignmentFlag.AlignLeft)
        self.grid.addWidget(self.clear_button, 0, 3)
        for column in range(4):
            self.grid.setColumnStretch(column, 1 if column == 2 else 0)

    def fit(self, width: int) -> None:
        """One row when every control fits `width` whole, else two."""
        needed = sum(w.sizeHint().width() for w in (self.axis_group, self.smooth_group,
                                                    self.clear_button)
                     if not w.isHidden()) + 3 * self.grid.horizontalSpacing()
        self._place(1 if needed <= width else 2)
