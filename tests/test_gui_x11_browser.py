"""Issue 35's layout items on a real X server (Xvfb), clicked with xdotool as a user's mouse:
a click on a run's row draws it; a banner and a notice that appear never move the tab the user
aims at; at 1024x700 with both side panels open the chart toolbar and the run table's buttons
are whole. The fixture and runner are tests/test_gui_x11.py's."""

from __future__ import annotations

from tests.test_gui_x11 import run_app_script, xserver  # noqa: F401 - the fixture

CLICKS = """
    import json, subprocess, time
    from PySide6.QtCore import QPoint
    from PySide6.QtWidgets import QApplication, QAbstractButton, QLabel
    app = QApplication([])
    from app.main import MainWindow
    from app.theme import apply_theme
    from profiler.store import RunStore
    from tests.helpers import stored_run
    from tests.gui_support import train_messages
    apply_theme(app, "light")
    run_id = stored_run(RunStore(), "drawn by a click", train_messages(7, summary={"figures": {
        "tokens_per_s": {"value": 1234.0, "unit": "tokens/s"}}}))
    win = MainWindow()
    win.setGeometry(100, 60, 1280, 860)
    win.show()

    def settle(seconds=0.4):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            app.processEvents(); time.sleep(0.01)

    def click(point):
        subprocess.run(["xdotool", "mousemove", str(point.x()), str(point.y()), "click", "1"],
                       check=True)
        settle(app.doubleClickInterval() / 1000 + 0.3)  # never half of a double click

    settle(1.0)
    out = {}
    table = win.history.table
    click(table.viewport().mapToGlobal(table.point_of(run_id)))
    out["shown"] = win._shown_run_id == run_id and win.charts.point_count("loss_train") == 7
    bar = win.tabs.tabBar()
    aim = bar.mapToGlobal(bar.tabRect(win.tabs.indexOf(win.summary_view)).center())
    win.show_error("The run failed: a long sentence that takes a line or two of the banner",
                   "Press Run again.")
    win.add_notice("Warning: other processes used 1.2 of 2 cores during this run")
    settle()
    click(aim)
    out["summary_tab"] = win.tabs.currentWidget() is win.summary_view
    out["headline"] = win.headline.texts()
    win.resize(1024, 700)
    settle(0.8)
    charts = win.charts
    right = charts.mapToGlobal(QPoint(charts.width(), 0)).x()
    cut = []
    for kind in (QLabel, QAbstractButton):
        for widget in charts.toolbar.findChildren(kind) + win.history.findChildren(kind):
            if not widget.isVisible() or widget.parent() is table:
                continue
            if widget.width() < widget.minimumSizeHint().width():
                cut.append(widget.text())
            if widget in charts.toolbar.findChildren(kind) and \\
                    widget.mapToGlobal(QPoint(widget.width(), 0)).x() > right:
                cut.append(widget.text())
    out["cut"] = cut
    win.close()
    print(json.dumps(out))
"""


def test_clicks_land_where_aimed_and_nothing_is_cut(xserver):  # noqa: F811
    out = run_app_script(xserver, CLICKS)
    assert out["shown"], "a click on the run's row did not draw it"
    assert out["summary_tab"], "the banner moved the tab away from the click"
    assert out["headline"] == ["Throughput: 1,230 tokens/s"]  # three significant digits
    assert out["cut"] == []
