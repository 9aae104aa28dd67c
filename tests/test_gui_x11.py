"""The app on a real X server (Xvfb, started here) driven by xdotool, as a user's mouse and keyboard
drive it: every technique's check box square is clicked and toggles; Ctrl+R works at launch with
no click first; at QT_SCALE_FACTOR=1.5 on a 1600x1000 screen the whole window fits.

Xvfb and xdotool come from scripts/install_xvfb.sh (test.sh runs it). In CI (CI=true) a missing
tool fails the test; elsewhere it skips with the command that installs them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.gui_support import FAKE_WORKER

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("Xvfb", "xdotool")


@pytest.fixture
def xserver(tmp_path):
    """A private Xvfb display at 1600x1000; yields the environment for apps on it."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        message = (f"{', '.join(missing)} missing: run scripts/install_xvfb.sh "
                   "(apt-get install xvfb xdotool libxcb-cursor0)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    display = None
    for number in range(90, 130):
        if not Path(f"/tmp/.X11-unix/X{number}").exists() and \
                not Path(f"/tmp/.X{number}-lock").exists():
            display = number
            break
    assert display is not None, "no free X display number"
    server = subprocess.Popen(["Xvfb", f":{display}", "-screen", "0", "1600x1000x24",
                               "-nolisten", "tcp"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30  # a hang guard, not a timing
        while not Path(f"/tmp/.X11-unix/X{display}").exists():
            assert server.poll() is None, "Xvfb exited at start"
            assert time.monotonic() < deadline, "Xvfb did not come up"
            time.sleep(0.05)
        env = {**os.environ, "DISPLAY": f":{display}", "QT_QPA_PLATFORM": "xcb",
               "EFFISCOPE_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
        env.pop("QT_SCALE_FACTOR", None)
        yield env
    finally:
        server.terminate()
        server.wait(10)


def run_app_script(env: dict, script: str, timeout: int = 240) -> dict:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


CLICK_EVERY_BOX = """
    import json, subprocess, time
    from PySide6.QtWidgets import QApplication, QCheckBox, QStyle, QStyleOptionButton
    app = QApplication([])
    from app.main import MainWindow
    from app.theme import apply_theme
    apply_theme(app, "light")
    win = MainWindow()
    win.setGeometry(100, 60, 1280, 860)
    win.show()
    for _ in range(50):
        app.processEvents(); time.sleep(0.02)
    results = {}
    for name, row in win.techniques.rows.items():
        box = row.enable
        if not isinstance(box, QCheckBox) or not box.isEnabled():
            continue
        win.settings_scroll.ensureWidgetVisible(box)
        for _ in range(10):
            app.processEvents(); time.sleep(0.01)
        option = QStyleOptionButton()
        box.initStyleOption(option)
        square = box.style().subElementRect(QStyle.SubElement.SE_CheckBoxIndicator, option, box)
        point = box.mapToGlobal(square.center())
        before = box.isChecked()
        subprocess.run(["xdotool", "mousemove", str(point.x()), str(point.y()), "click", "1"],
                       check=True)
        deadline = time.monotonic() + 5  # a hang guard
        while box.isChecked() == before and time.monotonic() < deadline:
            app.processEvents(); time.sleep(0.01)
        results[name] = box.isChecked() != before
        # The next click must not read as the second half of a double click.
        deadline = time.monotonic() + app.doubleClickInterval() / 1000 + 0.2
        while time.monotonic() < deadline:
            app.processEvents(); time.sleep(0.01)
    win.close()
    print(json.dumps(results))
"""


@pytest.mark.slow
def test_xdotool_clicks_on_every_check_box_square_toggle_it(xserver):
    results = run_app_script(xserver, CLICK_EVERY_BOX)
    assert len(results) >= 5
    assert all(results.values()), f"a click on the square did nothing: {results}"


CTRL_R_AT_LAUNCH = """
    import json, subprocess, sys, time
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication
    import app.main as main_module

    class Window(main_module.MainWindow):
        def __init__(self, *args, **kwargs):
            kwargs["warm_worker"] = False
            super().__init__(*args, **kwargs)
            self.worker_command = [sys.executable, {fake!r}, "0.01"]
            self.form.device.setCurrentText("cpu")
            self.form.steps.setValue(3)

    main_module.MainWindow = Window
    found = {{}}
    application = QApplication(sys.argv[:1])

    def press():
        win = next(w for w in QApplication.topLevelWidgets() if isinstance(w, Window))
        deadline = time.monotonic() + 10  # a hang guard: the window takes focus by itself
        while not win.isActiveWindow() and time.monotonic() < deadline:
            QApplication.processEvents(); time.sleep(0.01)
        found["active"] = win.isActiveWindow()
        subprocess.run(["xdotool", "key", "ctrl+r"], check=True)
        deadline = time.monotonic() + 10
        while win.run_id is None and time.monotonic() < deadline:
            QApplication.processEvents(); time.sleep(0.01)
        found["started"] = win.run_id is not None
        while win.running and time.monotonic() < deadline + 20:
            QApplication.processEvents(); time.sleep(0.01)
        QApplication.instance().quit()

    QTimer.singleShot(1500, press)
    code = main_module.main([])
    print(json.dumps(found))
    sys.exit(code)
"""


@pytest.mark.slow
def test_ctrl_r_works_at_launch_without_a_click(xserver):
    found = run_app_script(xserver, CTRL_R_AT_LAUNCH.format(fake=str(FAKE_WORKER)))
    assert found == {"active": True, "started": True}


FITS_AT_150 = """
    import json, time
    from PySide6.QtCore import QPoint
    from PySide6.QtWidgets import QApplication
    app = QApplication([])
    from app.main import MainWindow
    from app.theme import apply_theme
    apply_theme(app, "light")
    win = MainWindow()
    screen = app.primaryScreen().availableGeometry()
    win.setGeometry(screen)
    win.show()
    for _ in range(50):
        app.processEvents(); time.sleep(0.02)
    inside = win.rect()
    def within(widget):
        rect = widget.rect().translated(widget.mapTo(win, QPoint(0, 0)))
        return inside.contains(rect) and widget.isVisible()
    out = {"screen": [screen.width(), screen.height()], "window": [win.width(), win.height()],
           "history": within(win.history), "status": within(win.statusBar()),
           "run": within(win.run_button), "charts": within(win.charts)}
    win.close()
    print(json.dumps(out))
"""


@pytest.mark.slow
def test_the_window_fits_at_150_percent_on_1600x1000(xserver):
    out = run_app_script({**xserver, "QT_SCALE_FACTOR": "1.5"}, FITS_AT_150)
    assert out["screen"][0] <= 1067 and out["screen"][1] <= 667  # the scale is in force
    assert out["window"][0] <= out["screen"][0] and out["window"][1] <= out["screen"][1]
    assert out["history"] and out["status"] and out["run"] and out["charts"]
