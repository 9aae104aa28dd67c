"""The window's messages: an error banner (a failure, what to do, its log a click away) and
the run's notices (warnings, a compression's quality cost), kept in view for the run instead of
a status-bar line that scrolls away. They float over the foot of the centre column instead of
taking a place in its layout: a message that appears never moves the tabs, the toolbar or a
chart under the user's mouse, so a click lands where it was aimed. Each has its own close
button; together they take at most half the column's height.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QToolButton, QWidget

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


def _frame(name: str, margins: tuple[int, int, int, int]) -> tuple[QFrame, QHBoxLayout, QLabel]:
    frame = QFrame()
    frame.setObjectName(name)
    layout = QHBoxLayout(frame)
    layout.setContentsMargins(*margins)
    label = QLabel()
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    layout.addWidget(label, 1)
    frame.hide()
    return frame, layout, label


def _dismiss(layout: QHBoxLayout, slot) -> None:
    button = QToolButton()
    button.setText("×")
    button.setToolTip("Dismiss")
    button.clicked.connect(slot)
    layout.addWidget(button, 0, Qt.AlignmentFlag.AlignTop)


class MessageArea(QObject):
    """The banner and the notices of one window, floating over `host`'s foot."""

    def __init__(self, host: QWidget, show_log: Callable[[str | None], None]):
        super().__init__(host)
        self.banner, layout, self.banner_label = _frame("errorBanner", (10, 6, 6, 6))
        self.log_button = QPushButton("Show log")
        self.log_button.setObjectName("smallButton")
        self.log_button.setToolTip("The worker's log (its stderr) for this run")
        self.log_button.clicked.connect(lambda: show_log(self.run_id))
        layout.addWidget(self.log_button, 0, Qt.AlignmentFlag.AlignTop)
        _dismiss(layout, self.clear_error)
        self.notice, layout, self.notice_label = _frame("noticeBar", (10, 4, 6, 4))
        self.notice_label.setObjectName("noticeText")
        _dismiss(layout, self.notice.hide)
        self.run_id: str | None = None
        """The run the banner is about (its log; selecting another run puts it away)."""
        self.notices: list[str] = []
        self.floating = FloatingMessages(host, (self.banner, self.notice))

    def show_error(self, message: str, hint: str = "", run_id: str | None = None) -> None:
        text = f"<b>{escape(message)}</b>"
        if hint:
            text += f"<br>{escape(hint)}"
        self.banner_label.setText(text)
        self.run_id = run_id
        self.log_button.setVisible(run_id is not None)
        self.banner.show()
        self.floating.place()

    def clear_error(self) -> None:
        self.banner_label.setText("")
        self.banner.hide()

    def error_text(self) -> str:
        """The banner's text ("" when no error is shown)."""
        return self.banner_label.text() if self.banner.isVisible() else ""

    def add_notice(self, text: str) -> None:
        if text in self.notices:
            return
        self.notices.append(text)
        self.notice_label.setText("<br>".join(escape(t) for t in self.notices))
        self.notice.show()
        self.floating.place()

    def clear_notices(self) -> None:
        self.notices = []
        self.notice_label.setText("")
        self.notice.hide()

    def notice_text(self) -> str:
        return "\n".join(self.notices) if self.notice.isVisible() else ""
