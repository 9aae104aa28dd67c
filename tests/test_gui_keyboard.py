"""The keyboard: a visible focus ring, Tab never switches the shown run, Ctrl+Q during a run asks
first, and Help lists a quick start and every shortcut."""

from __future__ import annotations

from PySide6.QtCore import Qt

from tests.gui_support import click, click_run, fake_worker, stored_run, train_messages


def test_focus_ring_is_visible(qtbot, window):
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from app.theme import apply_theme

    app = QApplication.instance()
    previous = (app.property("effiscope_theme"), app.styleSheet(), app.palette(), app.style().name())
    apply_theme(app, "light")
    try:
        for widget in (window.history.load_button, window.charts.follow_button,
                       window.form.steps):
            widget.setEnabled(True)
            window.run_button.setFocus()
            QApplication.processEvents()
            before = widget.grab().toImage()
            widget.setFocus(Qt.FocusReason.TabFocusReason)
            qtbot.waitUntil(widget.hasFocus, timeout=2000)
            QTest.qWait(20)
            after = widget.grab().toImage()
            assert before != after, f"{widget.objectName() or widget.text()}: no focus ring"
    finally:  # the theme as it was for the tests after this one
        app.setStyle(previous[3])
        app.setPalette(previous[2])
        app.setStyleSheet(previous[1])
        app.setProperty("effiscope_theme", previous[0])


def test_tab_never_switches_the_shown_run(qtbot, window):
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from profiler.store import RunStore

    store = RunStore()
    first = stored_run(store, "first", train_messages(5))
    stored_run(store, "second", train_messages(8))
    window.history.refresh()
    click_run(qtbot, window.history, first)
    assert window._shown_run_id == first
    seen = set()
    for _ in range(60):  # Tab through the whole window, the run table included
        QTest.keyClick(QApplication.focusWidget() or window, Qt.Key.Key_Tab)
        seen.add(QApplication.focusWidget())
        assert window._shown_run_id == first
    assert window.history.table in seen
    assert window.charts.point_count("loss_train") == 5


def test_ctrl_q_during_a_run_asks_first(qtbot, window, monkeypatch):
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QMessageBox

    window.worker_command = fake_worker(0.05)
    window.form.steps.setValue(100_000)
    click(qtbot, window.run_button)
    qtbot.waitUntil(lambda: window.link is not None and window.link.recorder.samples >= 1,
                    timeout=30_000)
    asked = []
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: asked.append(a[2]) or QMessageBox.StandardButton.Cancel)
    QTest.keyClick(window, Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier)
    assert asked and "A run is in progress" in asked[0]
    assert window.isVisible() and window.running  # cancelled: the run goes on
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    QTest.keyClick(window, Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: not window.running, timeout=30_000)
    assert not window.isVisible()


def test_help_has_a_quick_start_and_every_shortcut(qtbot, window):
    from PySide6.QtWidgets import QLabel

    menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Help")
    titles = [a.text() for a in menu.actions()]
    assert "&Quick start" in titles and "&Keyboard shortcuts" in titles
    next(a for a in menu.actions() if a.text() == "&Keyboard shortcuts").trigger()
    text = window._shortcuts_dialog.findChild(QLabel, "shortcutList").text()
    for keys, what in window.shortcut_rows():
        assert keys in text and what in text
    assert "Ctrl+R" in text and "Ctrl+Q" in text and "Esc" in text
    window._shortcuts_dialog.close()
    next(a for a in menu.actions() if a.text() == "&Quick start").trigger()
    quick = window._quick_start.findChild(QLabel, "quickStart").text()
    assert "Run" in quick and "Compare" in quick
    window._quick_start.close()
