"""Shared pieces of the GUI tests: `dispose`, which really frees a window after a test (deferred
deletes are flushed, so a session of GUI tests does not accumulate thousands of widgets that make
every later restyle slow; the `window` fixture in conftest.py uses it), the fake worker's command
line, and the clicks a user makes."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QCheckBox, QStyle, QStyleOptionButton

from app.main import MainWindow
from tests.helpers import stored_run  # noqa: F401 - the GUI tests import it from here

FAKE_WORKER = Path(__file__).with_name("fake_worker.py")
DATA = Path(__file__).with_name("data")  # real stored summaries and profiles


def fake_worker(step_delay_s: float = 0.02) -> list[str]:
    return [sys.executable, str(FAKE_WORKER), str(step_delay_s)]


def dispose(win: MainWindow) -> None:
    """Close (ending any worker) and delete the window now, not at some later event loop turn;
    with it the hidden parentless widgets it left (pyqtgraph gives each plot's context menu no
    parent): kept across hundreds of tests, every style-sheet change would restyle them all."""
    win.close()
    win.deleteLater()
    for widget in QApplication.topLevelWidgets():
        # Only widgets nothing owns: a popup with a parent goes with its parent.
        if widget is not win and widget.parent() is None and not widget.isVisible():
            widget.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


WARM_FAKE = """
import sys
sys.path.insert(0, {tests!r})
import fake_worker
send = fake_worker.send
send({{"type": "hello", "protocol": 1, "versions": {{"torch": "fake"}},
       "device": {{"name": "fake", "default": "cpu"}}, "environment": {{}}, "warm": True}})
fake_worker.send = lambda m: None if m.get("type") == "hello" else send(m)
fake_worker.main()
"""


def warm_fake_worker(step_delay_s: float = 0.02) -> list[str]:
    """A fake worker that behaves like the real one towards a warm start: hello first (as soon as
    it is up), then it waits for `start`."""
    code = WARM_FAKE.format(tests=str(FAKE_WORKER.parent))
    return [sys.executable, "-c", code, str(step_delay_s)]


def train_messages(steps: int, loss0: float = 3.0, rss_mib: float = 100.0,
                   summary: dict | None = None) -> list[dict]:
    out = [{"type": "hello", "protocol": 1, "versions": {}, "device": {}, "environment": {}},
           {"type": "started", "run": {"workload": "train", "device": "cpu", "steps": steps,
                                       "tokens_per_step": 256, "model": {"preset": "gpt-nano"},
                                       "theory": {"predicted_memory_bytes": {
                                           "total": int(80 * 2**20)}}}}]
    for step in range(1, steps + 1):
        out.append({"type": "sample", "step": step, "time": step * 0.1, "phase": "measure",
                    "metrics": {"loss_train": loss0 / step ** 0.2, "tokens_per_s": 1000.0 + step,
                                "step_time_s": 0.05, "rss_bytes": int(rss_mib * 2**20)}})
    if summary is not None:
        out.append({"type": "done", "status": "completed", "summary": summary})
    return out


def hover_at(chart, x: float, y: float) -> None:
    """Move the mouse over a chart (a pyqtgraph PlotWidget) to the data point (x, y), the way a
    user's pointer gets there: a real mouse-move event on its viewport."""
    from PySide6.QtCore import QPointF
    from PySide6.QtTest import QTest

    scene = chart.getPlotItem().getViewBox().mapViewToScene(QPointF(x, y))
    QTest.mouseMove(chart.viewport(), chart.mapFromScene(scene))



def click(qtbot, widget, pos=None) -> None:
    """A left click where a user clicks: the middle of the widget (or `pos` in it)."""
    from PySide6.QtCore import Qt

    if pos is None:
        qtbot.mouseClick(widget, Qt.MouseButton.LeftButton)
    else:
        qtbot.mouseClick(widget, Qt.MouseButton.LeftButton, pos=pos)


def click_menu(qtbot, window, *titles: str) -> None:
    """Click through the menu bar as a user does: the menu's title in the bar, then each entry
    by its text in the menu that opened (an entry with a submenu opens it on the click)."""
    from PySide6.QtCore import Qt

    bar = window.menuBar()
    entries = bar.actions()
    menu = None
    for title in titles:
        action = next((a for a in entries if a.text() == title), None)
        assert action is not None, f"{title!r} is not among {[a.text() for a in entries]}"
        assert action.isVisible() and action.isEnabled(), f"{title!r} cannot be clicked"
        where = menu if menu is not None else bar
        qtbot.mouseMove(where, where.actionGeometry(action).center())
        qtbot.mouseClick(where, Qt.MouseButton.LeftButton,
                         pos=where.actionGeometry(action).center())
        if action.menu() is not None:
            menu = action.menu()
            qtbot.waitUntil(menu.isVisible, timeout=3000)
            entries = menu.actions()


def choose(qtbot, combo, value) -> None:
    """Pick an entry of a combo box as a user does: click the box, then click the entry in the
    list that opens. `value` is the entry's data or its text."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    index = combo.findData(value)
    if index < 0:
        index = combo.findText(str(value))
    assert index >= 0, f"{value!r} is not a choice of {combo.objectName()}"
    qtbot.mouseClick(combo, Qt.MouseButton.LeftButton)
    view = combo.view()
    qtbot.waitUntil(lambda: view.isVisible(), timeout=3000)
    model_index = combo.model().index(index, combo.modelColumn())
    view.scrollTo(model_index)
    # Qt ignores a release on the list within a double-click interval of the click that opened
    # it (so the opening click never picks an entry); a user's second click comes later.
    qtbot.wait(QApplication.doubleClickInterval() + 50)
    rect = view.visualRect(model_index)
    assert rect.isValid() and view.viewport().rect().contains(rect.center()), \
        "the entry is not in the open list"
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.waitUntil(lambda: not view.isVisible(), timeout=3000)
    assert combo.currentIndex() == index, f"the click did not choose {value!r}"


def tick(qtbot, history, run_id: str) -> None:
    """Click the run's tick box in the run table, where a user clicks."""
    from PySide6.QtCore import Qt

    table = history.table
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton,
                     pos=table.check_point(run_id))


def click_run(qtbot, history, run_id: str, key: str = "name", modifier=None) -> None:
    """Click a run's row in the run table (on a column's text), as a user picks it."""
    from PySide6.QtCore import Qt

    table = history.table
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton,
                     modifier or Qt.KeyboardModifier.NoModifier, table.point_of(run_id, key))


def indicator_centre(box: QCheckBox) -> QPoint:
    """The middle of the check box's square, as the style draws it."""
    option = QStyleOptionButton()
    box.initStyleOption(option)
    rect = box.style().subElementRect(QStyle.SubElement.SE_CheckBoxIndicator, option, box)
    return rect.center()


def click_square(qtbot, window, name: str) -> None:
    """Turn technique `name` on or off as a user does: scroll to its check box and click its
    square (which must be what is drawn there)."""
    box = window.techniques.rows[name].enable
    window.settings_scroll.ensureWidgetVisible(box)
    QApplication.processEvents()
    point = indicator_centre(box)
    assert box.window().childAt(box.mapTo(box.window(), point)) is box
    qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=point)


def run_fake(qtbot, win, steps: int = 6) -> str:
    """Press Run (with the fake worker) and wait until the run has ended; its id."""
    win.worker_command = fake_worker(0.01)
    win.form.steps.setValue(steps)
    click(qtbot, win.run_button)
    qtbot.waitUntil(lambda: win.run_id is not None and not win.running, timeout=30000)
    return win.run_id


def global_rect(widget):
    from PySide6.QtCore import QRect

    return QRect(widget.mapToGlobal(QPoint(0, 0)), widget.size())


def open_tab(qtbot, win, widget) -> None:
    """Click the tab that holds `widget`, as a user does."""
    bar = win.tabs.tabBar()
    qtbot.mouseClick(bar, Qt.MouseButton.LeftButton,
                     pos=bar.tabRect(win.tabs.indexOf(widget)).center())
    assert win.tabs.currentWidget() is widget


def type_into(spin, text: str) -> None:
    """Select the field's text, type over it and press Enter, like a user."""
    spin.setFocus()
    spin.lineEdit().selectAll()
    QTest.keyClicks(spin.lineEdit(), text)
    QTest.keyClick(spin.lineEdit(), Qt.Key.Key_Return)


def wheel(widget, notches: int) -> None:
    """Mouse-wheel notches over the middle of a widget (negative: towards the user)."""
    centre = QPointF(widget.rect().center())
    event = QWheelEvent(centre, QPointF(widget.mapToGlobal(centre.toPoint())), QPoint(0, 0),
                        QPoint(0, 120 * notches), Qt.MouseButton.NoButton,
                        Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)
