"""The desktop app, driven through its real widgets with pytest-qt (offscreen).

Runs here start a real worker on the nano preset with a tiny batch; each test has its own
EFFISCOPE_HOME (conftest) and fails if it leaves a process behind.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest
from PySide6.QtCore import Qt, QTimer

from app.charts import LiveCharts
from app.main import MainWindow
from app.worker_link import WorkerLink
from profiler.config import resolve, validate
from profiler.store import RunStore
from profiler.store.recorder import RunRecorder
from tests import gui_support
from tests.gui_support import click_run

RUN_TIMEOUT_MS = 90_000




def quick_settings(win: MainWindow, steps: int) -> None:
    """The smallest real run: nano, 4 sequences of 64 tokens per step."""
    win.form.preset.setCurrentText("nano")
    win.form.device.setCurrentText("cpu")
    win.form.steps.setValue(steps)
    win.form.batch_size.setValue(4)
    win.form.seq_len.setValue(64)


def curve_points(win: MainWindow, key: str) -> int:
    return win.charts.drawn_count(key)


def assert_gone(pid: int) -> None:
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    assert proc.status() == psutil.STATUS_ZOMBIE, f"worker {pid} is still running"


def no_children() -> bool:
    return not [p for p in psutil.Process().children(recursive=True)
                if p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.slow
def test_run_draws_live_charts_and_stops(qtbot, window):
    quick_settings(window, steps=2000)  # far more than we wait for: Stop ends it mid-run
    qtbot.mouseClick(window.run_button, Qt.MouseButton.LeftButton)
    assert window.running
    assert not window.run_button.isEnabled() and window.stop_button.isEnabled()
    pid = window.link.pid
    assert pid is not None
    run_id = window.run_id

    # Each redraw turn paints only the charts that fit its budget (round robin), so the charts
    # fill one after another: wait for each, not for one and then look at the others.
    qtbot.waitUntil(lambda: curve_points(window, "loss_train") >= 3
                    and curve_points(window, "tokens_per_s") > 0
                    and curve_points(window, "rss_bytes") > 0, timeout=RUN_TIMEOUT_MS)
    assert curve_points(window, "loss_val") >= 1  # the validation loss before the first step
    assert not window.charts.curves["torch_allocated_bytes"].isVisible()  # CPU: no CUDA memory
    assert window.run_controls.progress.value() >= 1
    assert "tokens/s" in window.speed_label.text()
    assert window.history.row_status(run_id) == "running"

    qtbot.mouseClick(window.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.running, timeout=30_000)
    status = RunStore().open_run(run_id).meta()["status"]
    assert status in ("stopped", "completed")
    assert window.history.row_status(run_id) == status
    assert window.history.selected_run_id() == run_id
    assert window.summary_view.rows  # the finished run's figures are shown
    assert window.run_button.isEnabled() and not window.stop_button.isEnabled()
    assert window.error_text() == ""
    assert_gone(pid)
    qtbot.waitUntil(no_children, timeout=5_000)

    stored = sum(1 for m in RunStore().open_run(run_id).messages()
                 if m.get("type") == "sample" and "loss_train" in m["metrics"])
    window.charts.clear()
    click_run(qtbot, window.history, run_id)  # a click on its row reloads it from the store
    assert window.charts.point_count("loss_train") == stored > 0


def test_form_and_config_follow_each_other(window):
    form = window.form
    assert form.preset.currentText() == "nano"  # the default
    form.preset.setCurrentText("mini")  # preset -> widgets
    mini = resolve("mini")
    assert form.steps.value() == mini.limits.steps
    assert form.batch_size.value() == mini.train.batch_size
    assert form.seq_len.value() == mini.train.seq_len
    assert form.learning_rate.value() == pytest.approx(mini.train.learning_rate)

    form.device.setCurrentText("cpu")  # widgets -> config
    form.steps.setValue(123)
    form.batch_size.setValue(7)
    form.seq_len.setValue(64)
    form.learning_rate.lineEdit().setText("5e-4")
    form.learning_rate.interpretText()
    config = validate(form.build_config())
    assert config.name == "mini"
    assert config.model.preset == "gpt-mini"
    assert config.device == "cpu"
    assert config.limits.steps == 123
    assert config.train.batch_size == 7
    assert config.train.seq_len == 64
    assert config.train.learning_rate == pytest.approx(5e-4)
    assert config.train.eval_interval == mini.train.eval_interval  # the rest is the preset's
    assert config.data.source == mini.data.source

    form.steps.setValue(3)  # shorter than the preset's warmup: warmup shrinks, the run stays valid
    assert validate(form.build_config()).limits.warmup_steps < 3

    cuda = form.device.model().item(form.device.findText("cuda"))
    if not window.host["gpus"]:
        assert not cuda.isEnabled()
        assert "not available" in cuda.toolTip()
    assert "CPU:" in window.device_label.text()


@pytest.mark.slow
def test_worker_killed_from_outside(qtbot, window):
    quick_settings(window, steps=2000)
    qtbot.mouseClick(window.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.link.recorder.samples >= 3, timeout=RUN_TIMEOUT_MS)
    link, run_id, pid = window.link, window.run_id, window.link.pid
    os.kill(pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: not window.running, timeout=5_000)

    assert "killed" in window.error_text()
    assert window.state_label.text() == "killed"
    run = RunStore().open_run(run_id)
    assert run.meta()["status"] == "killed"
    assert run.summary()["status"] == "killed"
    stored = [m for m in run.messages() if m.get("type") == "sample"]
    assert len(stored) == link.recorder.samples >= 3
    assert window.history.row_status(run_id) == "killed"
    assert_gone(pid)

    assert window.run_button.isEnabled()  # the app carries on: a new run starts and stops
    qtbot.mouseClick(window.run_button, Qt.MouseButton.LeftButton)
    assert window.running and window.run_id != run_id
    assert window.error_text() == ""
    qtbot.waitUntil(lambda: window.link.recorder.samples >= 1, timeout=RUN_TIMEOUT_MS)
    qtbot.mouseClick(window.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.running, timeout=30_000)
    assert RunStore().open_run(window.run_id).meta()["status"] in ("stopped", "completed")


@pytest.mark.slow
def test_closing_the_window_ends_the_worker(qtbot, window):
    quick_settings(window, steps=2000)
    qtbot.mouseClick(window.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.link.recorder.samples >= 1, timeout=RUN_TIMEOUT_MS)
    pid, run_id = window.link.pid, window.run_id
    window.close()  # blocks until the worker has ended its step and exited
    assert not window.running
    assert_gone(pid)
    assert no_children()
    run = RunStore().open_run(run_id)
    assert run.meta()["status"] == "stopped"  # closing stdin ends the run cleanly, not a kill
    assert any(m.get("type") == "done" for m in run.messages())


def test_invalid_setting_is_explained_and_starts_nothing(qtbot, window):
    quick_settings(window, steps=20)
    window.form.seq_len.setValue(1024)  # nano's context is 256 tokens
    qtbot.mouseClick(window.run_button, Qt.MouseButton.LeftButton)
    text = window.error_text()
    # The sentence names the field on screen, not the config key.
    assert "Sequence length: 1024" in text and "context of 256 tokens" in text
    assert "train.seq_len" not in text
    assert "set it to 256 or less" in text
    assert window.link is None and not window.running
    assert RunStore().list_runs() == []
    assert window.run_button.isEnabled()
    assert no_children()


@pytest.mark.slow
def test_stop_pressed_before_the_worker_is_up_stops_cleanly(qtbot, window):
    """A stop sent while the worker still imports torch is kept and honoured, not a kill."""
    quick_settings(window, steps=2000)
    qtbot.mouseClick(window.run_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(window.stop_button, Qt.MouseButton.LeftButton)
    assert window.state_label.text() == "stopping…"
    qtbot.waitUntil(lambda: not window.running, timeout=RUN_TIMEOUT_MS)
    assert RunStore().open_run(window.run_id).meta()["status"] == "stopped"
    assert window.error_text() == ""


# --- pieces without a real worker ------------------------------------------------------------------
BURST_WORKER = textwrap.dedent("""
    import json, sys
    out = sys.stdout.buffer
    lines = [json.dumps({"type": "hello", "protocol": 1, "versions": {}, "device": {},
                         "environment": {}})]
    for step in range(1, N + 1):
        lines.append(json.dumps({"type": "sample", "step": step, "time": step * 0.01,
                                 "phase": "measure", "metrics": {"loss_train": 1.0 / step,
                                 "tokens_per_s": 1000.0, "rss_bytes": None}}))
    lines.append(json.dumps({"type": "done", "status": "completed", "summary": {}}))
    data = ("\\n".join(lines) + "\\n").encode()
    for i in range(0, len(data), 997):  # chunks that cut lines anywhere
        out.write(data[i:i + 997])
        out.flush()
""")


def test_a_burst_of_lines_never_freezes_the_loop(qtbot):
    """20,000 lines arriving at once are handled over many turns; a 10 ms timer keeps ticking."""
    n = 20_000
    config = resolve("nano")
    store = RunStore()
    run = store.create_run(config)
    link = WorkerLink(RunRecorder(store, run),
                      command=[sys.executable, "-c", f"N = {n}\n" + BURST_WORKER])
    charts = LiveCharts()
    qtbot.addWidget(charts)
    batches = []
    order = []  # "b" for a batch, "t" for a timer tick: the loop ran between batches
    link.messages.connect(lambda batch: (batches.append(len(batch)), order.append("b"),
                                         charts.add_samples(batch)))
    ticker = QTimer()
    ticker.timeout.connect(lambda: order.append("t"))
    ticker.start(10)
    with qtbot.waitSignal(link.ended, timeout=60_000) as ended:
        link.start(config.to_dict())
    ticker.stop()
    assert ended.args == ["completed"]
    assert sum(batches) == n + 2
    assert len(batches) > 1  # the burst was split across event-loop turns
    # No wall clock here (that is `effiscope bench gui`): the timer got turns during the burst.
    first, last = order.index("b"), len(order) - 1 - order[::-1].index("b")
    assert "t" in order[first:last], "the timer never ran while the burst was handled"
    assert charts.point_count("loss_train") == n
    charts.redraw_now()
    drawn = charts.curves["loss_train"].yData  # full data kept, decimated only to draw
    assert 0 < len(drawn) < n
    assert max(drawn) == 1.0 and min(drawn) == pytest.approx(1.0 / n)  # peaks survive
    stored = sum(1 for m in run.messages() if m["type"] == "sample")
    assert stored == n


FAILING_WORKER = textwrap.dedent("""
    import json, sys
    def send(message):
        sys.stdout.write(json.dumps(message) + "\\n")
        sys.stdout.flush()
    send({"type": "hello", "protocol": 1, "versions": {}, "device": {"name": "fake"},
          "environment": {}})
    sys.stdout.write("this is not json\\n{\\"type\\": \\"nonsense\\"}\\n")
    send({"type": "sample", "step": 1, "time": 0.1, "phase": "warmup",
          "metrics": {"loss_train": 5.0, "tokens_per_s": None}})
    send({"type": "error", "kind": "oom", "message": "CUDA out of memory (fake)",
          "hint": "lower train.batch_size"})
    send({"type": "done", "status": "failed", "summary": {}})
""")


def test_worker_error_is_shown_with_its_hint(qtbot, window):
    """Bad lines are recorded and skipped; an error message reaches the window with its hint."""
    window.worker_command = [sys.executable, "-c", FAILING_WORKER]
    quick_settings(window, steps=20)
    qtbot.mouseClick(window.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.running, timeout=30_000)
    text = window.error_text()
    assert "CUDA out of memory (fake)" in text and "lower train.batch_size" in text
    run = RunStore().open_run(window.run_id)
    assert run.meta()["status"] == "failed"
    assert len(run.summary()["protocol_warnings"]) == 2  # the two bad lines, kept as warnings
    assert window.charts.point_count("loss_train") == 1
    assert window.charts.point_count("tokens_per_s") == 1  # None is a gap, still a point
    assert window.run_button.isEnabled()
    assert window.log_button.isVisible()  # the error comes with its run's log
    (run.path / "worker.log").write_text("Traceback: the worker's own words\n")
    window.log_button.click()
    assert "the worker's own words" in window._log_dialog.findChild(
        type(window.compare.diff_text), "logText").toPlainText()
    window._log_dialog.close()


def test_charts_gaps_markers_and_growth(qtbot):
    charts = LiveCharts()
    qtbot.addWidget(charts)
    samples = [{"type": "sample", "step": s, "time": s, "phase": "warmup" if s <= 2 else "measure",
                "metrics": {"loss_train": None if s == 5 else 2.0, "rss_bytes": 2**20 * s,
                            "torch_allocated_bytes": None}} for s in range(1, 1001)]
    assert charts.add_samples(samples + [{"type": "event", "kind": "info", "message": "x"}]) == 1000
    charts.redraw_now()
    y = charts.curves["loss_train"].yData
    assert len(y) == 1000 and math.isnan(y[4])  # None is a gap, not a zero
    assert charts.curves["rss_bytes"].yData[9] == pytest.approx(10.0)  # MiB
    assert not charts.curves["torch_allocated_bytes"].isVisible()  # never had a reading
    assert charts.point_count("loss_val") == 0  # absent key: no point at all
    charts.add_marker(500, "fused AdamW on")
    assert len(charts.markers) == len(charts.plots)
    assert {plot for plot, _ in charts.markers} == set(charts.plots.values())
    redraws = charts.redraws
    charts.redraw_now()
    assert charts.redraws == redraws  # nothing changed: no redraw
    charts.clear()
    charts.redraw_now()
    assert charts.point_count("loss_train") == 0 and not charts.markers


def test_app_never_imports_torch():
    code = ("import sys, app.main, app.charts, app.history, app.worker_link, app.run_form; "
            "import json; print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] "
            "== 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "QT_QPA_PLATFORM": "offscreen"}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_main_opens_the_window_and_returns_an_exit_code(tmp_path):
    # In a fresh interpreter: main() runs (and quits) the application's own event loop, which
    # must not happen inside the test session's shared QApplication (a QProcess started after
    # that loop has been quit stays in "Starting" for good).
    script = textwrap.dedent("""
        import sys
        from PySide6.QtCore import QTimer
        from PySide6.QtWidgets import QApplication
        from app.main import main
        app = QApplication(sys.argv[:1])
        QTimer.singleShot(800, app.quit)
        code = main([])
        name = QApplication.instance().applicationName()
        print(name, code)
        sys.exit(code)
    """)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "EFFISCOPE_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=120, cwd=str(gui_support.FAKE_WORKER.parent.parent))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["EffiScope", "0"]
