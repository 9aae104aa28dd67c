"""Repeats in the window: Repeats at 3 and one click on Run give three stored runs of one group,
one after the other, and the spread across them in the notice (profiler.cli.repeats decides it, as
for `effiscope run --repeats`). Stopping a repeat ends the series. Fake worker: milliseconds."""

from __future__ import annotations

from PySide6.QtCore import Qt

from profiler.cli.repeats import spread
from profiler.figures.metrics import format_value
from profiler.store import RunStore
from tests.gui_support import fake_worker


def setup(win, repeats: int, steps: int = 6) -> None:
    win.worker_command = fake_worker(0.005)
    win.form.preset.setCurrentText("nano")
    win.form.device.setCurrentText("cpu")
    win.form.steps.setValue(steps)
    win.launch_form.repeats.setValue(repeats)


def grouped_runs() -> list[dict]:
    store = RunStore()
    return sorted((store.open_run(r["id"]).meta() | {"id": r["id"]} for r in store.list_runs()),
                  key=lambda m: m["repeat"]["index"] if "repeat" in m else 0)


def test_three_repeats_run_one_after_another_and_show_their_spread(qtbot, window):
    setup(window, 3)
    qtbot.mouseClick(window.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(RunStore().list_runs()) == 3 and not window.running
                    and not window.repeats.active, timeout=60_000)
    metas = grouped_runs()
    assert [m["repeat"]["index"] for m in metas] == [1, 2, 3]
    assert len({m["repeat"]["group"] for m in metas}) == 1
    assert all(m["name"].endswith(f"repeat {m['repeat']['index']}/3") for m in metas)
    assert all(m["status"] == "completed" for m in metas)
    notice = window.notice_text()
    assert "spread across 3 of 3 repeats" in notice
    rates = [RunStore().open_run(m["id"]).summary()["figures"]["tokens_per_s"]["value"]
             for m in metas]
    line = next(x for x in notice.splitlines() if x.startswith("Throughput:"))
    assert format_value(spread(rates)["median"], "tokens/s") in line
    window.launch_form.repeats.setValue(1)  # a single run after the series: a new number
    qtbot.mouseClick(window.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(RunStore().list_runs()) == 4 and not window.running,
                    timeout=30_000)
    names = {r["name"] for r in RunStore().list_runs()}
    assert metas[0]["name"].split(" repeat")[0] == "nano #1" and "nano #2" in names


def test_stopping_a_repeat_ends_the_series(qtbot, window):
    setup(window, 3, steps=400)
    qtbot.mouseClick(window.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.link is not None and window.link.recorder.samples >= 2,
                    timeout=30_000)
    qtbot.mouseClick(window.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.running and not window.repeats.active, timeout=30_000)
    qtbot.wait(200)  # no next repeat is started
    assert len(RunStore().list_runs()) == 1 and not window.running
    assert "spread across 0 of 3 repeats" in window.notice_text()
