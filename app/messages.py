"""The window's error banner and notices float over the foot of the centre column instead of
taking a place in its layout: a message that appears (a worker's warning, a failed run) never
moves the tabs, the toolbar or a chart under the user's mouse, so a click lands where it was
aimed. Each has its own close button; together they take at most half the column's height.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject
from PySide6.QtWidgets import QFrame, QLabel, QWidget

MARGIN = 8


class FloatingMessages(QObject):
    """Keeps `frames` (children of `host`, outside its layout) stacked at host's foot."""

    def __init__(self, host: QWidget, frames: tuple[QFrame, ...]):
        super().__init__(host)
        self._placing = False
        self.host = host
        self.frames = frames
        for frame in frames:
            frame.setParent(host)
            frame.installEventFilter(self)
        host.installEventFilter(self)

    def place(self) -> None:
        """Stack the visible frames upwards from the host's foot, each as tall as its text."""
        if self._placing:
            return
        self._placing = True
        try:
            self._place()
        finally:
            self._placing = False

    def _place(self) -> None:
        width = max(100, self.host.width() - 2 * MARGIN)
        bottom = self.host.height() - MARGIN
        room = self.host.height() // 2
        for frame in reversed(self.frames):
            if frame.isHidden():
                continue
            layout = frame.layout()
            height = layout.heightForWidth(width) if layout.hasHeightForWidth() else -1
            if height <= 0:
                height = frame.sizeHint().height()
            height = min(height, room)
            for _ in range(2):  # lay its text out now; grow by what a wrapped line still lacks
                frame.setGeometry(MARGIN, bottom - height, width, height)
                if layout is not None:
                    layout.setGeometry(frame.contentsRect())
                lacking = max((label.heightForWidth(label.width()) - label.height()
                               for label in frame.findChildren(QLabel) if label.wordWrap()
                               and label.isVisible()), default=0)
                if lacking <= 0 or height >= room:
                    break
                height = min(height + lacking, room)
            bottom -= height
            frame.raise_()
            bottom -= 4

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt override
        if event.type() in (QEvent.Type.Resize, QEvent.Type.Show, QEvent.Type.Hide) and (
                watched is self.host or watched in self.frames):
            self.place()
        return False
