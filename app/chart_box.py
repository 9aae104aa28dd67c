"""One chart as the window shows it: a header (title and legend that wrap, never squeezing the
plot; log scale, CSV and PNG buttons) above its pyqtgraph plot.

The legend sits in a word-wrapping label outside the plot, so a long legend takes another line
instead of widening the plot past its chart (which used to hide the newest steps).
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSizePolicy, QToolButton, QVBoxLayout, QWidget


class ChartBox(QWidget):
    """Header + plot for one chart; LiveCharts wires the buttons."""

    def __init__(self, name: str, title: str, plot: pg.PlotWidget, parent: QWidget | None = None):
        super().__init__(parent)
        self.name = name
        self.title = title
        self.plot = plot
        self.setObjectName(f"chartBox_{name}")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        header = QHBoxLayout()
        header.setContentsMargins(6, 2, 2, 0)
        header.setSpacing(2)
        self.legend = QLabel()
        self.legend.setObjectName("chartLegend")
        self.legend.setWordWrap(True)
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.legend.setTextInteractionFlags(Qt.TextInteractionFlag.LinksAccessibleByMouse)
        self.legend.setToolTip("Click an entry to hide its curve, again to show it")
        policy = self.legend.sizePolicy()
        policy.setHorizontalPolicy(QSizePolicy.Policy.Ignored)  # wraps, never widens the chart
        self.legend.setSizePolicy(policy)
        header.addWidget(self.legend, 1)
        self.log_button = self._button("log", "Logarithmic y axis for this chart", checkable=True)
        self.csv_button = self._button("CSV", "Save every curve of this chart (all readings, "
                                       "every compared run) as CSV")
        self.png_button = self._button("PNG", "Save this chart as a PNG image")
        for button in (self.log_button, self.csv_button, self.png_button):
            header.addWidget(button, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(header)
        layout.addWidget(plot, 1)

    def _button(self, text: str, tip: str, checkable: bool = False) -> QToolButton:
        button = QToolButton()
        button.setText(text)
        button.setObjectName(f"chart_{text.lower()}")
        button.setToolTip(tip)
        button.setCheckable(checkable)
        button.setAutoRaise(True)
        button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        return button
