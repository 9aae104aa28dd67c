"""A damaged, full or read-only store: what can be read is read, what cannot be written is said.

Full-disk and read-only cases use a real tmpfs where this process may mount one (root on Linux);
elsewhere the same failures are injected into the writes.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from profiler import cli
from profiler.config import RunConfig
from profiler.store import RunStore, StoreError, StreamWriter
from profiler.store import runfolder as store_module
from profiler.store.recorder import RunRecorder
from tests.faults import write_config
from tests.helpers import run_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sample(step: int) -> bytes:
    return (f'{{"type":"sample","step":{step},"time":{step / 10},'
            f'"metrics":{{"loss_train":{5 - step / 10}}}}}\n').encode()


def _recorded_run(store: RunStore, steps: int = 6, finish: bool = True):
    run = store.create_run(RunConfig(name="damaged"))
    recorder = RunRecorder(store, run)
    recorder.handle_line(b'{"type":"started","run":{"device":"cpu"}}\n')
    for step in range(1, steps + 1):
        recorder.handle_line(_sample(step))
    if finish:
        recorder.handle_line(b'{"type":"done","status":"completed","summary":{}}\n')
        recorder.finish(0)
    return run, recorder


# --- damaged files ----------------------------------------------------------------------------
def test_garbled_and_truncated_lines_are_skipped_and_the_rest_loads(tmp_path):
    store = RunStore()
    run, _ = _recorded_run(store)
    lines = run.stream_path.read_bytes().splitlines(keepends=True)
    lines.insert(3, b"\x00\xff\xfe garbage from a bad sector\n")
    lines.insert(5, b"[1, 2, 3]\n")
    lines.append(b'{"type":"sample","step":7,"ti')  # cut by a crash mid-write
    run.stream_path.write_bytes(b"".join(lines))
    warnings: list[str] = []
    messages = list(run.messages(warnings))
    assert [m["step"] for m in messages if m["type"] == "sample"] == [1, 2, 3, 4, 5, 6]
    assert messages[-1]["type"] == "done"
    assert len(warnings) == 3 and all("damaged and was skipped" in w for w in warnings)
    assert "line 4" in warnings[0]
    report = pytest.importorskip("profiler.report")
    path = report.export([run.run_id], "json", str(tmp_path / "r.json"))
    exported = json.loads(Path(path).read_text())["runs"][0]
    assert exported["samples"] == 6 and len(exported["load_warnings"]) >= 3


def test_deleted_or_damaged_index_is_rebuilt_from_the_folders(effiscope_home):
    store = RunStore()
    ids = {_recorded_run(store)[0].run_id for _ in range(2)}
    store.index_path.unlink()
    assert {r["id"] for r in RunStore().list_runs()} == ids
    store.index_path.write_bytes(b"this is not an sqlite database" * 100)
    assert {r["id"] for r in RunStore().list_runs()} == ids
    assert all(r["status"] == "completed" for r in RunStore().list_runs())


def test_a_run_whose_front_end_is_gone_is_marked_crashed(effiscope_home):
    store = RunStore()
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan, recorder = _recorded_run(store, steps=4, finish=False)
    recorder.writer.close()
    orphan.write_meta({**orphan.meta(), "front": {"pid": dead.pid, "started": time.time()}})
    reused, _ = _recorded_run(store, steps=2, finish=False)  # our pid, another start time
    reused.write_meta({**reused.meta(), "front": {"pid": os.getpid(), "started": 1.0}})
    alive, _ = _recorded_run(store, steps=2, finish=False)  # recorded by this live process
    assert alive.meta()["front"]["started"] == psutil.Process().create_time()
    elsewhere, _ = _recorded_run(store, steps=2, finish=False)  # a store shared by two machines
    elsewhere.write_meta({**elsewhere.meta(), "front": {"pid": dead.pid, "started": 1.0,
                                                        "host": "another-machine"}})
    rows = {r["id"]: r["status"] for r in store.list_runs()}
    assert rows == {orphan.run_id: "crashed", reused.run_id: "crashed", alive.run_id: "running",
                    elsewhere.run_id: "running"}
    summary = orphan.summary()
    assert summary["end"] == "the front end ended without closing the run"
    assert summary["samples_received"] == 4 and summary["last_step"] == 4


def test_run_folders_are_private(effiscope_home):
    run, _ = _recorded_run(RunStore())
    assert stat.S_IMODE(os.stat(effiscope_home).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(run.path).st_mode) == 0o700


# --- writes that fail -------------------------------------------------------------------------
def test_a_failed_write_keeps_the_messages_and_says_so(monkeypatch, effiscope_home):
    store = RunStore()
    run, recorder = _recorded_run(store, steps=2, finish=False)
    real_write = StreamWriter.append
    full = {"on": True, "calls": 0}

    def append(self, message):
        if full["on"]:
            full["calls"] += 1
            # The first failure cuts a line short, as a full disk does.
            if full["calls"] == 1:
                self._fh.write(b'{"type":"sample","st')
                self._cut = True
            raise StoreError(store_module.write_failure(self.path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
        real_write(self, message)

    monkeypatch.setattr(StreamWriter, "append", append)
    for step in (3, 4, 5):
        assert recorder.handle_line(_sample(step))["step"] == step  # the front end still sees it
    assert "No space left on device" in recorder.write_error
    assert "free disk space" in recorder.write_error
    assert [m["step"] for m in recorder.unwritten] == [3, 4, 5]
    full["on"] = False  # room again: the kept messages go first, in order
    recorder.handle_line(_sample(6))
    assert recorder.unwritten == []
    warnings: list[str] = []
    steps = [m["step"] for m in run.messages(warnings) if m["type"] == "sample"]
    assert steps == [1, 2, 3, 4, 5, 6] and len(warnings) == 1  # only the cut line


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                             str(path)], capture_output=True)
    return result.returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.mark.slow
def test_a_full_disk_mid_run_is_a_clear_error_and_a_nonzero_exit(tmp_path, monkeypatch, capsys):
    home = tmp_path / "small-disk"
    mounted = _mount_tmpfs(home, "96k")
    if not mounted:  # no tmpfs here: the disk fills after 20 stored lines
        count = {"lines": 0}
        real_write = StreamWriter.append

        def append(self, message):
            count["lines"] += 1
            if count["lines"] > 20:
                raise StoreError(store_module.write_failure(
                    self.path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
            real_write(self, message)

        monkeypatch.setattr(StreamWriter, "append", append)
    monkeypatch.setenv("EFFISCOPE_HOME", str(home))
    try:
        toml = write_config(tmp_path / "run.toml", run_config(100_000, data="random"))
        code = cli.main(["run", str(toml)])
        err = capsys.readouterr().err
        run_dir = next((home / "runs").iterdir())
        warnings: list[str] = []
        stored = list(RunStore(home).open_run(run_dir.name).messages(warnings))
    finally:
        if mounted:
            _umount(home)
    assert code == 1
    assert "No space left on device" in err and "free disk space" in err
    assert "received messages could not be stored" in err
    assert stored[0]["type"] == "hello" and len(warnings) <= 1  # the stream stays readable
    assert len([m for m in stored if m["type"] == "sample"]) >= 3


def test_a_read_only_data_dir_is_a_clear_error(tmp_path, monkeypatch, capsys):
    home = tmp_path / "read-only"
    mounted = _mount_tmpfs(home, "1m")
    try:
        (home / "runs").mkdir(exist_ok=True)
        if mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(home)], check=True)
        else:
            real_access = os.access
            monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if mode == os.W_OK
                                else real_access(p, mode, **kw))
        monkeypatch.setenv("EFFISCOPE_HOME", str(home))
        with pytest.raises(StoreError, match="(?i)read-only.*set EFFISCOPE_HOME to a writable"):
            RunStore().create_run(RunConfig())
        code = cli.main(["run", str(write_config(tmp_path / "run.toml", run_config(steps=2, data="random")))])
    finally:
        if mounted:
            _umount(home)
    assert code == 2
    err = capsys.readouterr().err
    assert "ead-only" in err and "set EFFISCOPE_HOME to a writable folder" in err


# --- a name that is not valid text ------------------------------------------------------------
@pytest.mark.parametrize("field", ["name", "config_toml"])
def test_invalid_utf8_is_refused_before_the_run_folder_is_made(effiscope_home, field):
    record = {"config_toml": 'name = "x"\n', "name": "ok", "model": "gpt-nano",
              "workload": "train", "device": "cpu"}
    record[field] += "bad\udcffbytes"  # what a name of invalid UTF-8 bytes becomes in argv
    with pytest.raises(StoreError, match="not valid text.*plain UTF-8"):
        RunStore().create_run(record)
    runs = effiscope_home / "runs"
    assert not runs.exists() or list(runs.iterdir()) == []  # nothing left behind


def test_a_run_named_in_invalid_utf8_on_the_cli_is_a_sentence_and_leaves_nothing(
        effiscope_home, capsys):
    code = cli.main(["run", "nano", "--steps", "10", "--warmup", "1", "--name", "caf\udce9"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "UTF-8" in err
    runs = effiscope_home / "runs"
    assert not runs.exists() or list(runs.iterdir()) == []
    assert cli.main(["runs"]) == 0 and "unknown" not in capsys.readouterr().out


def test_a_run_folder_that_cannot_be_written_whole_is_removed(effiscope_home, monkeypatch):
    def no_room(path, text):
        raise StoreError(store_module.write_failure(path, OSError(errno.ENOSPC, "No space left")))

    monkeypatch.setattr(store_module, "atomic_write", no_room)
    with pytest.raises(StoreError, match="No space left"):
        RunStore().create_run(RunConfig(name="half"))
    assert list((effiscope_home / "runs").iterdir()) == []


# --- figures that are not finite numbers ------------------------------------------------------
def _strict_json(text: str):
    """json.loads that refuses NaN / Infinity, as strict JSON readers (browsers, jq) do."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _forge_figures(run_path, figures: str) -> None:
    """Put figures into summary.json as raw JSON text (Infinity, NaN, 1e999 are not JSON)."""
    summary = json.loads((run_path / "summary.json").read_text())
    summary["figures"] = {"__FIGURES__": 0}
    text = json.dumps(summary).replace('{"__FIGURES__": 0}', figures)
    (run_path / "summary.json").write_text(text)


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN", "1e999"])
def test_non_finite_figures_are_n_a_with_their_reason_everywhere(effiscope_home, literal,
                                                                 capsys):
    store = RunStore()
    base, _ = _recorded_run(store)
    other, _ = _recorded_run(store)
    _forge_figures(base.path, '{"tokens_per_s": {"value": 1000.0, "unit": "tokens/s"}, '
                              '"step_time_p50_s": {"value": 0.5, "unit": "s"}}')
    _forge_figures(other.path, f'{{"tokens_per_s": {{"value": {literal}, "unit": "tokens/s"}}, '
                               f'"step_time_p50_s": {{"value": {literal}, "unit": "s"}}}}')
    assert cli.main(["show", other.run_id]) == 0
    out, err = capsys.readouterr()
    assert "inf" not in out.lower().replace("info", "") and "nan" not in out.lower()
    assert "n/a" in out and literal in err and "shown as n/a" in err
    assert cli.main(["report", other.run_id, "--format", "json", "--out", "-"]) == 0
    out, err = capsys.readouterr()
    doc = _strict_json(out)["runs"][0]
    assert doc["figures"]["tokens_per_s"]["value"] is None
    assert any(literal in w for w in doc["load_warnings"]) and literal in err
    for argv in (["compare", base.run_id, other.run_id],
                 ["report", base.run_id, other.run_id, "--format", "md", "--out", "-"]):
        assert cli.main(argv) == 0
        out, _ = capsys.readouterr()
        figures = "\n".join(line for line in out.splitlines() if "shown as n/a" not in line)
        assert "inf %" not in figures and "+inf" not in figures
        assert "nan" not in figures.lower() and "n/a" in figures
    assert cli.main(["compare", base.run_id, other.run_id, "--json"]) == 0
    rows = _strict_json(capsys.readouterr().out)["deltas"]
    speed = next(r for r in rows if r["key"] == "tokens_per_s")
    assert speed["cells"][1]["value"] is None and speed["cells"][1]["change_pct"] is None


def test_a_change_too_large_for_a_float_is_n_a_not_inf(effiscope_home, capsys):
    store = RunStore()
    base, _ = _recorded_run(store)
    other, _ = _recorded_run(store)
    _forge_figures(base.path, '{"step_time_p50_s": {"value": -1e308, "unit": "s"}}')
    _forge_figures(other.path, '{"step_time_p50_s": {"value": 1e308, "unit": "s"}}')
    assert cli.main(["compare", base.run_id, other.run_id]) == 0
    out = capsys.readouterr().out
    assert "inf" not in out and "n/a" in out
    assert cli.main(["compare", base.run_id, other.run_id, "--json"]) == 0
    _strict_json(capsys.readouterr().out)


def test_nan_in_a_stream_or_a_config_still_gives_strict_json(effiscope_home, capsys):
    store = RunStore()
    run, _ = _recorded_run(store)
    with run.stream_path.open("a") as fh:
        fh.write('{"type":"event","kind":"warning","message":"x","value":NaN}\n')
        fh.write('{"type":"sample","step":99,"time":1e999,"metrics":{"loss_train":Infinity}}\n')
    (run.path / "config.toml").write_text("[train]\nlearning_rate = inf\nweight_decay = nan\n")
    assert cli.main(["report", run.run_id, "--format", "json", "--out", "-"]) == 0
    out, err = capsys.readouterr()
    doc = _strict_json(out)["runs"][0]
    assert doc["config"]["train"]["learning_rate"] is None
    assert doc["series"]["loss_train"]["value"][-1] is None
    assert "NaN where a finite number belongs" in err
    assert cli.main(["show", run.run_id, "--json"]) == 0
    assert _strict_json(capsys.readouterr().out)["config"]["train"]["weight_decay"] is None


def test_the_one_formatting_rule_says_n_a_for_what_is_not_finite():
    from profiler.figures.metrics import (
        format_change,
        format_delta,
        format_summary_figure,
        format_value,
    )

    for value in (float("inf"), float("-inf"), float("nan")):
        assert format_value(value, "s") == "n/a"
        assert format_delta(value, "tokens/s") == "n/a"
        assert format_change(value) == "n/a"
        assert format_summary_figure("tokens_per_s", {"value": value}) == "n/a"


# --- compare refuses one run early and says what it skipped -----------------------------------
def test_compare_of_one_run_with_itself_is_refused_before_loading(effiscope_home, monkeypatch,
                                                                  capsys):
    from profiler.report import load as report_load

    store = RunStore()
    run, _ = _recorded_run(store)

    def loads(*args, **kwargs):
        raise AssertionError("a run was loaded")

    monkeypatch.setattr(report_load, "load_run", loads)
    for argv in (["compare", run.run_id, run.run_id], ["compare", run.run_id[:20], run.run_id],
                 ["compare", run.run_id, "--baseline", run.run_id]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "two or more different runs" in err and "Traceback" not in err


def test_compare_says_which_stream_lines_it_skipped(effiscope_home, capsys):
    store = RunStore()
    base, _ = _recorded_run(store)
    other, _ = _recorded_run(store)
    with other.stream_path.open("ab") as fh:
        fh.write(b"\x00 a bad sector\n")
    assert cli.main(["compare", base.run_id, other.run_id]) == 0
    err = capsys.readouterr().err
    assert "line 9 is damaged and was skipped" in err and other.run_id in err


def test_one_wording_for_a_figure_without_spread(effiscope_home, capsys):
    """A figure with neither samples nor an interval is "not comparable: no spread" in the
    table (the one verdict rule's words), and the legend of `compare` and of the Markdown report
    says what that means."""
    store = RunStore()
    base, _ = _recorded_run(store)
    other, _ = _recorded_run(store)
    _forge_figures(base.path, '{"model_bytes": {"value": 1000, "unit": "bytes"}}')
    _forge_figures(other.path, '{"model_bytes": {"value": 2000, "unit": "bytes"}}')
    assert cli.main(["compare", base.run_id, other.run_id]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.strip().startswith("Weights in memory"))
    assert "not comparable: no spread" in line and "within noise" not in line
    assert '"no spread" where a figure has neither per-step samples nor an interval' in out
    assert cli.main(["report", base.run_id, other.run_id, "--format", "md", "--out", "-"]) == 0
    assert '"no spread" where a figure has neither' in capsys.readouterr().out
