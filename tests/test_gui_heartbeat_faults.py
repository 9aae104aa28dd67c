"""The app's heartbeat watch: the desktop front end says within seconds that its
worker has sent nothing, and keeps heartbeats out of the run's record. Uses a hostile worker
(tests/faults.py) that says hello and then stays silent, and one that sends heartbeats."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")

from app.worker_link import WorkerLink  # noqa: E402
from profiler.store import RunStore  # noqa: E402
from profiler.store.recorder import RunRecorder  # noqa: E402
from profiler.wire import protocol  # noqa: E402
from tests.faults import hostile_worker
from tests.helpers import run_config


def _link(tmp_path, lines, mode):
    store = RunStore()
    config = run_config(steps=2, data="random")
    run = store.create_run(config)
    link = WorkerLink(RunRecorder(store, run), command=hostile_worker(tmp_path, lines, mode),
                      stop_grace_s=1.0)
    return link, run, config


def test_the_app_says_a_silent_worker_has_sent_nothing(qtbot, tmp_path):
    link, run, config = _link(tmp_path, [], "hang")
    link.silence = protocol.SilenceWatch(quiet_after_s=1.0)
    said: list[str] = []
    link.messages.connect(lambda batch: said.extend(
        m["message"] for m in batch if m.get("origin") == "front"))
    link.start(config.to_dict())
    qtbot.waitUntil(lambda: any("has sent nothing" in s for s in said), timeout=20_000)
    with qtbot.waitSignal(link.ended, timeout=20_000):
        link.kill()
    notes = [m["message"] for m in run.messages() if m.get("origin") == "front"]
    assert any("may be stopped (SIGSTOP)" in n for n in notes)


def test_heartbeats_reach_neither_the_charts_nor_the_stream(qtbot, tmp_path):
    beat = protocol.encode({"type": "heartbeat", "time": 1.0}).strip()
    done = '{"type":"done","status":"completed","summary":{}}'
    link, run, config = _link(tmp_path, [beat, beat, done], "exit")
    types: list[str] = []
    link.messages.connect(lambda batch: types.extend(m["type"] for m in batch))
    with qtbot.waitSignal(link.ended, timeout=30_000) as ended:
        link.start(config.to_dict())
    assert ended.args == ["completed"]
    assert "heartbeat" not in types and "done" in types
    assert "heartbeat" not in [m["type"] for m in run.messages()]
