"""The history is never hidden: an index that is empty, a
folder, damaged or locked, damaged run folders, a read-only store, odd run ids and hostile names
each leave every readable run listed, with a warning that names what was skipped, and the CLI
says so in sentences. The folders are the truth; index.sqlite is a cache of them."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from profiler import cli
from profiler.config import RunConfig
from profiler.store import RunStore, StoreError
from profiler.store.recorder import RunRecorder
from profiler.wire.client import worker_env
from tests.faults import assert_sentence

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run(store: RunStore, name: str = "kept", steps: int = 3) -> str:
    run = store.create_run(RunConfig(name=name))
    recorder = RunRecorder(store, run)
    for step in range(1, steps + 1):
        recorder.handle_line(f'{{"type":"sample","step":{step},"time":{step},"metrics":{{}}}}')
    recorder.handle_line('{"type":"done","status":"completed","summary":{"steps_completed":'
                         f'{steps},"figures":{{"tokens_per_s":{{"value":10.0,"unit":"tokens/s"}}}}}}}}')
    recorder.finish(0)
    return run.run_id


@pytest.fixture
def two_runs(effiscope_home) -> tuple[RunStore, set[str]]:
    store = RunStore()
    return store, {_run(store, "first"), _run(store, "second")}


def _listed(capsys) -> tuple[int, str, str]:
    code = cli.main(["runs"])
    out, err = capsys.readouterr()
    return code, out, err


# --- an index that lies, damaged folders ------------------------------------------------------
@pytest.mark.parametrize("damage", ["zero-bytes", "garbage", "no-table", "truncated"])
def test_an_index_that_is_no_index_never_hides_the_runs(two_runs, damage, capsys):
    store, ids = two_runs
    if damage == "zero-bytes":  # what a full disk during a rebuild used to leave
        store.index_path.write_bytes(b"")
    elif damage == "garbage":
        store.index_path.write_bytes(b"not sqlite" * 500)
    elif damage == "no-table":
        store.index_path.unlink()
        sqlite3.connect(store.index_path).execute("CREATE TABLE other (x)").connection.commit()
    else:
        data = store.index_path.read_bytes()
        store.index_path.write_bytes(data[: len(data) // 3])
    assert {r["id"] for r in RunStore().list_runs()} == ids
    code, out, err = _listed(capsys)
    assert code == 0 and all(run_id in out for run_id in ids) and "no runs yet" not in out
    assert {r["id"] for r in RunStore().list_runs()} == ids  # and the index is whole again


DAMAGED_FILES = [
    ("meta-list", "meta.json", "[1, 2]", "meta.json holds list"),
    ("meta-garbage", "meta.json", "{not json", "meta.json is not valid JSON"),
    ("meta-deep", "meta.json", "[" * 100_000, "meta.json is not valid JSON"),
    ("summary-list", "summary.json", "[]", "summary.json holds list"),
    ("summary-string", "summary.json", '"done"', "summary.json holds str"),
    ("summary-not-utf8", "summary.json", b"\xff\xfe{}", "summary.json cannot be read"),
    ("figures-list", "summary.json", '{"figures": [1]}', None),
    ("figure-value-string", "summary.json", '{"figures": {"tokens_per_s": {"value": "x"}}}', None),
    ("steps-string", "summary.json", '{"steps_completed": "many"}', None),
    ("tags-not-list", "meta.json", '{"name": "x", "tags": 5, "status": "completed"}', None),
    ("name-number", "meta.json", '{"name": 7, "status": "completed"}', None),
    ("config-garbage", "config.toml", "= broken [[", None),
    ("config-deep", "config.toml", "a = " + "[" * 100_000, None),
]


@pytest.mark.parametrize("name, content, warning", [c[1:] for c in DAMAGED_FILES],
                         ids=[c[0] for c in DAMAGED_FILES])
def test_a_damaged_run_folder_is_named_and_never_hides_the_others(
        two_runs, name, content, warning, capsys):
    store, ids = two_runs
    damaged = store.runs_dir / sorted(ids)[0]
    data = content if isinstance(content, bytes) else content.encode()
    (damaged / name).write_bytes(data)
    code = cli.main(["runs", "--rebuild"])  # the rebuild itself must survive it
    out, err = capsys.readouterr()
    assert code == 0, err
    assert all(run_id in out for run_id in ids)  # listed with what could be read
    if warning:
        assert warning in err and str(damaged) in err
    assert "Traceback" not in err
    # show and report read the same folder without a traceback.
    assert cli.main(["show", damaged.name]) == 0
    assert cli.main(["show", "--json", damaged.name]) == 0
    assert cli.main(["report", damaged.name, "--format", "json", "--out", "-"]) == 0
    _, err = capsys.readouterr()
    assert "Traceback" not in err


def test_a_folder_that_is_not_a_run_is_skipped_with_a_warning(two_runs, capsys):
    store, ids = two_runs
    stray = store.runs_dir / "lost+found"
    stray.mkdir()
    (stray / "junk").write_text("x")
    store.index_path.unlink()
    code, out, err = _listed(capsys)
    assert code == 0 and all(run_id in out for run_id in ids)
    assert f"run folder {stray} has neither meta.json nor config.toml" in err


def test_a_full_disk_during_a_rebuild_leaves_no_empty_index(two_runs, monkeypatch):
    store, ids = two_runs
    store.index_path.write_bytes(b"damaged" * 100)
    real = sqlite3.connect

    def full(path, *args, **kwargs):
        if str(path).endswith(".new"):
            raise sqlite3.OperationalError("database or disk is full")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", full)
    fresh = RunStore()
    assert {r["id"] for r in fresh.list_runs()} == ids  # listed from the folders
    assert any("cannot be rebuilt now" in w for w in fresh.warnings)
    assert not (store.home / "index.sqlite.new").exists()
    monkeypatch.setattr(sqlite3, "connect", real)
    assert {r["id"] for r in RunStore().list_runs()} == ids  # and rebuilt once there is room


# --- the index is a folder --------------------------------------------------------------------
def test_an_index_that_is_a_folder_is_a_sentence_and_the_runs_are_listed(two_runs, capsys):
    store, ids = two_runs
    store.index_path.unlink()
    store.index_path.mkdir()
    code, out, err = _listed(capsys)
    assert code == 0 and all(run_id in out for run_id in ids)
    assert "is a folder, not an index" in err
    _run(RunStore(), "third")  # a new run is still recorded
    assert cli.main(["runs", "--rebuild"]) == 2
    err = capsys.readouterr().err
    assert "is a folder, not an index; remove it" in err
    assert_sentence(err)


# --- locked is not damaged --------------------------------------------------------------------
def test_a_locked_index_is_waited_for_or_read_around_never_deleted(two_runs, capsys):
    store, ids = two_runs
    holder = sqlite3.connect(store.index_path, timeout=0)
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("UPDATE runs SET name = 'held' WHERE id = ?", (sorted(ids)[0],))
    inode = store.index_path.stat().st_ino
    try:
        result = subprocess.run([sys.executable, "-m", "profiler.cli", "runs"], capture_output=True,
                                text=True, timeout=60, env={**worker_env(), **os.environ})
        _run(RunStore(), "while-locked")  # a run finishing meanwhile is not lost either
    finally:
        holder.commit()  # the lock holder's commit still succeeds
        held = holder.execute("SELECT name FROM runs WHERE id = ?", (sorted(ids)[0],)).fetchone()
        holder.close()
    assert held == ("held",)
    assert result.returncode == 0, result.stderr
    assert all(run_id in result.stdout for run_id in ids)
    assert "locked by another process" in result.stderr
    assert store.index_path.stat().st_ino == inode  # the same index: never unlinked
    # The run recorded meanwhile reaches the index at the next listing (the folders are the truth).
    assert "while-locked" in {r["name"] for r in RunStore().list_runs()}


# --- the data directory's mode, a read-only store ---------------------------------------------
def test_an_existing_home_keeps_its_mode(tmp_path, monkeypatch):
    home = tmp_path / "shared"
    home.mkdir()
    os.chmod(home, 0o1777)
    monkeypatch.setenv("EFFISCOPE_HOME", str(home))
    _run(RunStore())
    assert stat.S_IMODE(home.stat().st_mode) == 0o1777  # the sticky bit is kept
    assert stat.S_IMODE((home / "runs").stat().st_mode) == 0o700  # what we made is private


def test_a_created_home_is_private(tmp_path, monkeypatch):
    home = tmp_path / "new" / "home"
    monkeypatch.setenv("EFFISCOPE_HOME", str(home))
    RunStore().ensure()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def _read_only(path: Path, monkeypatch) -> Path | None:
    """Make the store read-only: a read-only bind mount as root (returned, to unmount), else
    folders without write permission and an os.access that says so."""
    if os.geteuid() == 0 and subprocess.run(
            ["mount", "--bind", str(path), str(path)], capture_output=True).returncode == 0:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], capture_output=True)
        return path
    for folder in [path, *path.rglob("*")]:
        if folder.is_dir():
            os.chmod(folder, 0o555)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if mode == os.W_OK and
                        str(p).startswith(str(path)) else real(p, mode, **kw))
    return None


@pytest.mark.parametrize("index", ["present", "missing"])
def test_a_read_only_store_is_listed_and_reported(two_runs, index, monkeypatch, capsys, tmp_path):
    store, ids = two_runs
    if index == "missing":
        store.index_path.unlink()
    mounted = _read_only(store.home, monkeypatch)
    try:
        code, out, err = _listed(capsys)
        out_file = tmp_path / "report.json"
        reported = cli.main(["report", *sorted(ids), "--out", str(out_file)])
        shown = cli.main(["show", sorted(ids)[0]])
        readonly = not os.access(store.home, os.W_OK) or mounted is not None
    finally:
        if mounted is not None:
            subprocess.run(["umount", "-l", str(mounted)], capture_output=True)
    assert readonly
    assert code == 0, err
    assert all(run_id in out for run_id in ids)
    assert reported == 0 and shown == 0, capsys.readouterr().err
    assert {r["run_id"] for r in json.loads(out_file.read_text())["runs"]} == ids


# --- run ids that are not ids -----------------------------------------------------------------
@pytest.mark.parametrize("run_id", ["2026*", "**", "*", "[a-z]*", "?", "../runs", "a/b", "x\x00y",
                                    "x" * 5000, "", "\x1b[2J"],
                         ids=["star-prefix", "double-star", "star", "class", "question",
                              "dotdot", "slash", "nul", "very-long", "empty", "escape"])
def test_glob_and_odd_characters_in_a_run_id_are_a_sentence(two_runs, run_id, capsys):
    with pytest.raises(StoreError):
        RunStore().open_run(run_id)
    assert cli.main(["show", run_id]) == 2
    err = capsys.readouterr().err
    assert err.startswith("effiscope: ") and "effiscope runs" in err
    assert "\x1b" not in err
    assert_sentence(err)


def test_a_unique_prefix_still_opens_its_run(two_runs):
    store, ids = two_runs
    full = sorted(ids)[0]
    assert store.open_run(full[:-3]).run_id == full
    with pytest.raises(StoreError, match="start of 2 run ids"):
        store.open_run(full[:8])


# --- terminal escapes in names ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["\x1b[2J\x1b[H", "\x1b]0;owned\x07", "a\rb", "bidi\u202eevil",
                                  "\x9b31m"], ids=["clear-screen", "title", "carriage-return",
                                                   "bidi-override", "c1-csi"])
def test_names_are_printed_with_escapes_escaped(effiscope_home, name, capsys):
    run_id = _run(RunStore(), "plain")
    RunStore().rename(run_id, name)
    assert cli.main(["runs"]) == 0
    assert cli.main(["show", run_id]) == 0
    out = capsys.readouterr().out
    for raw in ("\x1b", "\x07", "\r", "\u202e", "\x9b"):
        assert raw not in out
    assert any(f"\\{code}" in out for code in ("x1b", "x0d", "u202e", "u009b"))


# --- the folders are the truth, the index is checked against them -----------------------------
def test_a_run_folder_deleted_by_hand_is_no_longer_listed(two_runs, capsys):
    import shutil

    store, ids = two_runs
    gone, kept = sorted(ids)
    assert cli.main(["runs"]) == 0 and gone in capsys.readouterr().out  # the index has it
    shutil.rmtree(store.runs_dir / gone)
    code, out, err = _listed(capsys)
    assert code == 0 and gone not in out and kept in out
    assert "has no folder" in err and "corrected" in err
    assert cli.main(["runs", "--json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [kept]
    code, out, err = _listed(capsys)
    assert gone not in out and err == ""  # the index was mended: said once
    ids_in_index = {r[0] for r in sqlite3.connect(store.index_path).execute("SELECT id FROM runs")}
    assert ids_in_index == {kept}


def test_forged_index_rows_are_not_listed(two_runs, capsys):
    store, ids = two_runs
    store.list_runs()
    db = sqlite3.connect(store.index_path)
    with db:
        db.execute("INSERT INTO runs (id, name, created, status) VALUES "
                   "('20990101-000000-forged-0000', 'forged', '2099-01-01', 'completed')")
    db.close()
    code, out, err = _listed(capsys)
    assert code == 0 and "forged" not in out and all(run_id in out for run_id in ids)
    assert "has no folder" in err


def test_a_run_folder_the_index_lacks_is_listed(two_runs, capsys):
    store, ids = two_runs
    store.list_runs()
    db = sqlite3.connect(store.index_path)
    with db:
        db.execute("DELETE FROM runs WHERE id = ?", (sorted(ids)[0],))
    db.close()
    code, out, _ = _listed(capsys)
    assert code == 0 and all(run_id in out for run_id in ids)


@pytest.mark.parametrize("where", ["home", "runs"])
def test_a_data_directory_that_is_a_file_is_said_not_called_empty(tmp_path, monkeypatch, where,
                                                                  capsys):
    home = tmp_path / "home"
    if where == "home":
        home.write_text("a file")
    else:
        home.mkdir()
        (home / "runs").write_text("a file")
    monkeypatch.setenv("EFFISCOPE_HOME", str(home))
    for argv in (["runs"], ["show", "x"], ["runs", "--rebuild"]):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert_sentence(err)
        assert "is a file, not a folder" in err and "EFFISCOPE_HOME" in err
        assert "no runs yet" not in err


# --- stdout closed, or its reader gone --------------------------------------------------------
def _cli_with_stdout(args: list[str], stdout) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "profiler.cli", *args], stdout=stdout,
                            stderr=subprocess.PIPE, text=True,
                            env={**worker_env(), **os.environ})


@pytest.mark.timeout(120)
@pytest.mark.parametrize("argv", [["runs", "--json"], ["runs"], ["show", "RUN"],
                                  ["show", "RUN", "--json"], ["report", "RUN", "--out", "-"],
                                  ["compare", "RUN", "OTHER"]])
def test_a_reader_that_goes_away_ends_the_command_quietly(two_runs, argv):
    """`effiscope runs --json | head -1`: the pipe is closed before anything is written, so
    every write meets EPIPE; the command ends without a traceback, with SIGPIPE's status."""
    _, ids = two_runs
    first, other = sorted(ids)
    argv = [first if a == "RUN" else other if a == "OTHER" else a for a in argv]
    read, write = os.pipe()
    os.close(read)
    try:
        proc = _cli_with_stdout(argv, write)
    finally:
        os.close(write)
    _, err = proc.communicate(timeout=100)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == cli.EXIT_PIPE


@pytest.mark.timeout(120)
@pytest.mark.parametrize("when", ["at-start", "after-start"])
def test_report_to_a_closed_stdout_is_a_sentence(two_runs, when):
    """`effiscope report RUN --out - >&-` (Python then has no sys.stdout), and fd 1 closed
    after Python started (sys.stdout is there, its descriptor is not)."""
    _, ids = two_runs
    run_id = sorted(ids)[0]
    if when == "at-start":
        argv = ["bash", "-c", f'exec "$0" -m profiler.cli report {run_id} --out - >&-',
                sys.executable]
    else:
        argv = [sys.executable, "-c", "import os, sys; os.close(1); "
                f"from profiler.cli import main; sys.exit(main(['report', {run_id!r}, "
                "'--out', '-']))"]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True,
                            env={**worker_env(), **os.environ})
    _, err = proc.communicate(timeout=100)
    assert proc.returncode == 2, err
    assert_sentence(err)
    assert "stdout is closed" in err and "--out PATH" in err
