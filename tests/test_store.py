"""Run store: runs are written, read back, and the index can be rebuilt from the folders."""

from __future__ import annotations

import os
import stat

import pytest

from profiler.config import RunConfig
from profiler.store import RunStore, StoreError
from profiler.store.recorder import RunRecorder


def _fake_run(store: RunStore, name: str, loss: float) -> str:
    run = store.create_run(RunConfig(name=name))
    recorder = RunRecorder(store, run)
    recorder.handle_line(b'{"type":"started","run":{"device":"cpu"}}\n')
    for step in range(1, 4):
        recorder.handle_line(
            f'{{"type":"sample","step":{step},"time":{step * 0.1},"metrics":{{"loss_train":{loss}}}}}\n'.encode())
    recorder.handle_line(b"garbage from a broken worker\n")
    summary = ('{"type":"done","status":"completed","summary":{"steps_completed":3,'
               '"figures":{"tokens_per_s":{"value":1000.0,"unit":"tokens/s","how":"t"},'
               f'"loss_val_final":{{"value":{loss},"unit":"nats/token","how":"v"}}}}}}}}\n')
    recorder.handle_line(summary.encode())
    assert recorder.finish(0) == "completed"
    return run.run_id


def test_write_read_back_and_rebuild(effiscope_home):
    store = RunStore()
    first = _fake_run(store, "first", 2.0)
    second = _fake_run(store, "second", 1.5)
    rows = {r["id"]: r for r in store.list_runs()}
    assert set(rows) == {first, second}
    assert rows[second]["loss_val_final"] == 1.5 and rows[second]["status"] == "completed"
    run = store.open_run(first)
    kinds = [m["type"] for m in run.messages()]
    assert kinds[:4] == ["started", "sample", "sample", "sample"]
    assert "done" in kinds
    # The garbage line was rejected and recorded as the front end's warning, not lost silently.
    assert any(m.get("origin") == "front" and "rejected" in m["message"] for m in run.messages())
    assert run.summary()["figures"]["tokens_per_s"]["value"] == 1000.0

    store.rename(first, "renamed")
    os.remove(store.index_path)
    rebuilt = {r["id"]: r for r in RunStore().list_runs()}
    assert rebuilt == {**rows, first: {**rows[first], "name": "renamed"}}
    assert store.rebuild_index() == 2


def test_prefix_lookup_and_unknown_run(effiscope_home):
    store = RunStore()
    run_id = _fake_run(store, "only", 1.0)
    assert store.open_run(run_id[:12]).run_id == run_id
    with pytest.raises(StoreError, match="effiscope runs"):
        store.open_run("nope")


def test_damaged_stream_line_is_skipped(effiscope_home):
    store = RunStore()
    run = store.open_run(_fake_run(store, "x", 1.0))
    with run.stream_path.open("a") as fh:
        fh.write('{"type": "sample", "step": 9, "ti')  # a line cut by a crash
    warnings: list[str] = []
    messages = list(run.messages(warnings))
    assert messages[-1]["type"] == "done"
    assert len(warnings) == 1 and "damaged" in warnings[0]


def test_data_dir_is_private(effiscope_home):
    RunStore().ensure()
    assert stat.S_IMODE(os.stat(effiscope_home).st_mode) == 0o700


def test_unwritable_home_is_a_clear_error(tmp_path, monkeypatch):
    # A file where the runs folder should be fails for root too (chmod does not stop root).
    home = tmp_path / "blocked"
    home.mkdir()
    (home / "runs").write_text("not a folder")
    monkeypatch.setenv("EFFISCOPE_HOME", str(home))
    with pytest.raises(StoreError, match="EFFISCOPE_HOME to a writable folder"):
        RunStore().create_run(RunConfig())


@pytest.mark.parametrize("user_stopped", [False, True])
def test_a_stop_the_front_end_made_says_why_and_a_users_stays_on_request(effiscope_home,
                                                                          user_stopped):
    store = RunStore()
    run = store.create_run(RunConfig(name="stopped"))
    recorder = RunRecorder(store, run)
    recorder.handle_line(b'{"type":"started","run":{"device":"cpu"}}\n')
    recorder.stopped_because = "ended by the tuner: every window was measured"
    recorder.stop_requested = user_stopped  # the user's stop came first
    recorder.handle_line(b'{"type":"done","status":"stopped","summary":{}}\n')
    assert recorder.finish(0) == "stopped"
    assert run.summary()["end"] == ("stopped on request" if user_stopped
                                    else "ended by the tuner: every window was measured")
