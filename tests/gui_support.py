"""Shared pieces of the GUI tests: a main-window fixture that really frees the window after the
test (deferred deletes are flushed, so a session of GUI tests does not accumulate thousands of
widgets that make every later restyle slow), and the fake worker's command line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QCoreApplication, QEvent

from app.main import MainWindow

FAKE_WORKER = Path(__file__).with_name("fake_worker.py")


def fake_worker(step_delay_s: float = 0.02) -> list[str]:
    return [sys.executable, str(FAKE_WORKER), str(step_delay_s)]


def dispose(win: MainWindow) -> None:
    """Close (ending any worker) and delete the window now, not at some later event loop turn."""
    win.close()
    win.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


@pytest.fixture
def window(qtbot):
    win = MainWindow()
    win.resize(1280, 860)
    win.show()
    qtbot.waitExposed(win)
    yield win
    dispose(win)
