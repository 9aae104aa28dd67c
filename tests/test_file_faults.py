"""Files a user or the store names: every output is written whole
by write-then-rename onto a regular file or a new path only, and a FIFO, a device, a symlink or a
folder in its place is refused with a sentence and left as it was; every file read from the
store is a regular file inside the run folder, bounded, never a symlink, never a FIFO that
would block open().

A device node is made in the test's folder (mknod, as root) so that nothing under /dev is at
risk; where that is not allowed /dev/null is used, and a guard makes any rename onto a device
fail the test instead of replacing it.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from profiler import cli, files
from profiler.config import RunConfig
from profiler.store import RunStore, StoreError
from profiler.store.recorder import RunRecorder
from tests.faults import assert_sentence

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KINDS = ("fifo", "symlink", "device", "folder")
WHAT = {"fifo": "a pipe (FIFO)", "symlink": "a symbolic link", "device": "a device",
        "folder": "a folder"}


def recorded_run(store: RunStore, name: str = "kept", steps: int = 3) -> str:
    run = store.create_run(RunConfig(name=name))
    recorder = RunRecorder(store, run)
    for step in range(1, steps + 1):
        recorder.handle_line(f'{{"type":"sample","step":{step},"time":{step},'
                             f'"metrics":{{"loss_train":{4 - step / 10}}}}}')
    recorder.handle_line('{"type":"done","status":"completed","summary":{"steps_completed":'
                         f'{steps},"figures":{{"tokens_per_s":{{"value":10.0,"unit":"tokens/s"}}}}}}}}')
    recorder.finish(0)
    return run.run_id


@pytest.fixture(autouse=True)
def no_rename_onto_a_device(monkeypatch):
    """A rename onto a device node would replace it (as root): fail the test instead."""
    real_replace, real_rename = os.replace, os.rename

    def guarded(real):
        def rename(src, dst, *args, **kwargs):
            try:
                mode = os.lstat(dst).st_mode
            except OSError:
                mode = 0
            assert not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)), f"renamed onto device {dst}"
            return real(src, dst, *args, **kwargs)
        return rename

    monkeypatch.setattr(os, "replace", guarded(real_replace))
    monkeypatch.setattr(os, "rename", guarded(real_rename))


def hostile(tmp_path: Path, kind: str, name: str = "out.md") -> tuple[Path, Path | None]:
    """A path of `kind` (and, for a symlink, the file it points at, which must stay as it is)."""
    path = tmp_path / name
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "symlink":
        target = tmp_path / "precious.txt"
        target.write_text("precious\n")
        path.symlink_to(target)
        return path, target
    elif kind == "device":
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a null device, here
        except (PermissionError, AttributeError):
            return Path("/dev/null"), None
    return path, None


def unchanged(path: Path, kind: str, target: Path | None) -> None:
    mode = os.lstat(path).st_mode
    assert {"fifo": stat.S_ISFIFO, "symlink": stat.S_ISLNK, "device": stat.S_ISCHR,
            "folder": stat.S_ISDIR}[kind](mode), f"{path} was replaced"
    if target is not None:
        assert target.read_text() == "precious\n"
    leftovers = [p for p in path.parent.iterdir() if p.name.endswith(".part")]
    assert leftovers == [], leftovers


# --- outputs ----------------------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_report_out_onto_anything_but_a_file_is_refused_and_left_as_it_is(tmp_path, kind, capsys):
    run_id = recorded_run(RunStore())
    path, target = hostile(tmp_path, kind)
    code = cli.main(["report", run_id, "--format", "md", "--out", str(path)])
    err = capsys.readouterr().err
    if kind == "folder":  # an existing folder is a place to put the default file name in
        assert code == 0 and (path / f"{run_id}.md").is_file()
        return
    assert code == 2, err
    assert_sentence(err)
    assert WHAT[kind] in err and "not a regular file" in err and "choose another --out" in err
    assert "wrote" not in err
    unchanged(path, kind, target)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ("fifo", "symlink", "device"))
def test_a_trace_export_onto_anything_but_a_file_is_refused(tmp_path, kind, capsys):
    store = RunStore()
    run_id = recorded_run(store)
    (store.open_run(run_id).path / "trace.json").write_text('{"traceEvents": []}')
    path, target = hostile(tmp_path, kind, "trace.json.gz")
    code = cli.main(["report", run_id, "--format", "trace", "--out", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and WHAT[kind] in err, err
    unchanged(path, kind, target)


def test_a_report_replaces_a_regular_file_whole_and_keeps_its_mode(tmp_path, capsys):
    run_id = recorded_run(RunStore())
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "report.md"
    out.write_text("old report\n")
    os.chmod(out, 0o640)
    assert cli.main(["report", run_id, "--out", str(out)]) == 0
    assert run_id in out.read_text() and stat.S_IMODE(os.stat(out).st_mode) == 0o640
    assert cli.main(["report", "no-such-run", "--out", str(out)]) == 2  # fails: old file kept
    assert run_id in out.read_text()
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.md"]  # no temporary left


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ("fifo", "symlink", "device"))
def test_doctor_files_are_never_written_onto_anything_but_a_file(tmp_path, kind):
    from profiler.cli.doctor import command as doctor

    report = {"created": "2026-01-01T00:00:00Z", "environment": {"device_kind": "cpu"},
              "result": {"text": "0 checks"}, "checks": []}
    stem = "doctor-20260101T000000Z-cpu"
    path, target = hostile(tmp_path, kind, f"{stem}.json")
    if path.parent != tmp_path:
        pytest.skip("no device node can be made in a folder here")  # /dev has no such name
    with pytest.raises(files.FileRefused, match="not a regular file.*choose another --out"):
        doctor.write_files(report, str(tmp_path))
    unchanged(path, kind, target)
    fifo = tmp_path / "a-fifo"
    os.mkfifo(fifo)
    with pytest.raises(files.FileRefused, match="is a pipe \\(FIFO\\), not a folder"):
        doctor.write_files(report, str(fifo))  # --out DIR that is a FIFO: a sentence


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ("fifo", "symlink", "device"))
def test_a_saved_config_and_an_appended_table_never_replace_a_non_file(tmp_path, kind):
    """RunConfig.save writes tune's best.toml and the app's Save config; append_text writes
    `bench compress --record`."""
    path, target = hostile(tmp_path, kind, "best.toml")
    with pytest.raises(OSError, match="not a regular file"):
        RunConfig(name="tuned").save(path)
    with pytest.raises(OSError, match="not a regular file|not read|not followed"):
        files.append_text(path, "| a | b |\n")
    unchanged(path, kind, target)


@pytest.mark.timeout(60)
def test_a_store_file_that_is_a_fifo_is_not_replaced(tmp_path):
    store = RunStore()
    run = store.open_run(recorded_run(store))
    (run.path / "summary.json").unlink()
    os.mkfifo(run.path / "summary.json")
    with pytest.raises(StoreError, match="pipe \\(FIFO\\), not a regular file"):
        run.write_summary({"status": "completed"})
    assert stat.S_ISFIFO(os.lstat(run.path / "summary.json").st_mode)


def test_the_cli_says_a_refused_path_in_a_sentence_with_exit_2(monkeypatch, tmp_path, capsys):
    """Any command whose writer refuses a path (doctor --out, tune's best.toml) ends with the
    sentence and exit 2, never a traceback."""
    from profiler.cli.doctor import command as doctor

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def writes(args):
        files.write_text(fifo, "x")
        return 0

    monkeypatch.setattr(doctor, "run", writes)
    assert cli.main(["doctor"]) == 2
    err = capsys.readouterr().err
    assert_sentence(err)
    assert "is a pipe (FIFO)" in err and stat.S_ISFIFO(os.lstat(fifo).st_mode)


# --- what the store reads ---------------------------------------------------------------------
@pytest.fixture
def secret(tmp_path) -> Path:
    """A private file outside the store (as /etc/shadow would be)."""
    path = tmp_path / "shadow"
    path.write_text('root = "SECRET-LINE"\n')
    os.chmod(path, 0o600)
    return path


def linked(run_path: Path, name: str, target: Path) -> None:
    (run_path / name).unlink(missing_ok=True)
    (run_path / name).symlink_to(target)


@pytest.mark.parametrize("fmt", ("json", "html", "md"))
def test_a_symlinked_config_is_never_embedded_in_a_report(secret, fmt, capsys):
    store = RunStore()
    run_id = recorded_run(store)
    run = store.open_run(run_id)
    linked(run.path, "config.toml", secret)
    assert cli.main(["report", run_id, "--format", fmt, "--out", "-"]) == 0
    out, err = capsys.readouterr()
    assert "SECRET-LINE" not in out
    assert "config.toml" in err and "symbolic link" in err and "not followed" in err
    assert cli.main(["show", run_id, "--json"]) == 0
    out, err = capsys.readouterr()
    assert "SECRET-LINE" not in out and json.loads(out)["config"] is None
    assert "symbolic link" in err


@pytest.mark.parametrize("name", ("meta.json", "summary.json", "stream.jsonl"))
def test_a_symlinked_store_file_is_refused_with_a_warning_naming_it(tmp_path, name, capsys):
    store = RunStore()
    run_id = recorded_run(store)
    other = store.open_run(recorded_run(store, "other")).path / name
    linked(store.open_run(run_id).path, name, other)  # a valid file, but not this run's
    assert cli.main(["report", run_id, "--format", "json", "--out", "-"]) == 0
    out, err = capsys.readouterr()
    assert name in err and "symbolic link" in err, err
    doc = json.loads(out)["runs"][0]
    if name == "stream.jsonl":
        assert doc["samples"] == 0 and any("stream.jsonl" in w for w in doc["load_warnings"])
    if name == "meta.json":
        assert doc["name"] == run_id  # the other run's name was not read


def test_store_files_are_read_up_to_a_size(capsys, monkeypatch):
    from profiler.store import runfolder as store_module

    store = RunStore()
    run_id = recorded_run(store)
    run = store.open_run(run_id)
    meta = json.loads((run.path / "meta.json").read_text())
    meta["tags"] = ["x" * 1000] * 2000  # 2 MB: over meta.json's limit
    (run.path / "meta.json").write_text(json.dumps(meta))
    assert cli.main(["runs", "--rebuild"]) == 0
    out, err = capsys.readouterr()
    assert run_id in out and f"more than the {store_module.META_LIMIT:,}" in err
    assert "meta.json" in err


def test_a_symlinked_run_folder_or_traces_folder_is_not_followed(tmp_path, capsys):
    store = RunStore()
    run_id = recorded_run(store)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "traces").mkdir(parents=True)
    (elsewhere / "traces" / "trace.json").write_text('{"traceEvents": ["SECRET"]}')
    os.symlink(elsewhere / "traces", store.open_run(run_id).path / "traces")
    assert cli.main(["report", run_id, "--format", "trace", "--out", str(tmp_path / "t.gz")]) == 2
    assert "has no torch.profiler trace" in capsys.readouterr().err
    forged = store.runs_dir / "20990101-000000-forged-0000"
    forged.symlink_to(store.open_run(run_id).path)
    assert cli.main(["runs"]) == 0
    out, err = capsys.readouterr()
    assert "forged" not in out and "symbolic link" in err and "forged" in err
    assert cli.main(["show", forged.name]) == 2
    assert "symbolic link" in capsys.readouterr().err


# --- FIFOs and /dev/zero never block or grow memory -------------------------------------------
READS = {"show": ("meta.json", "summary.json"),
         "show-json": ("meta.json", "summary.json", "config.toml"),
         "report": ("meta.json", "summary.json", "config.toml", "stream.jsonl"),
         "runs": ("meta.json", "summary.json")}
"""The files each command reads (the listing reads config.toml only for runs without meta)."""


@pytest.mark.timeout(30)
@pytest.mark.parametrize("command", ("show", "show-json", "report", "runs"))
@pytest.mark.parametrize("name", ("summary.json", "stream.jsonl", "meta.json", "config.toml"))
def test_a_fifo_in_a_run_folder_never_blocks(name, command, capsys):
    store = RunStore()
    run_id = recorded_run(store)
    keep = recorded_run(store, "other")
    path = store.open_run(run_id).path / name
    path.unlink()
    os.mkfifo(path)
    argv = {"show": ["show", run_id], "show-json": ["show", run_id, "--json"],
            "report": ["report", run_id, "--format", "md", "--out", "-"],
            "runs": ["runs", "--rebuild"]}[command]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    if name in READS[command]:
        assert name in err and "pipe (FIFO)" in err, err
    if command == "runs":
        assert run_id in out and keep in out
    assert stat.S_ISFIFO(os.lstat(path).st_mode)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ("stream.jsonl", "meta.json", "summary.json", "config.toml"))
def test_a_link_to_dev_zero_is_not_read(name, capsys):
    store = RunStore()
    run_id = recorded_run(store)
    keep = recorded_run(store, "other")
    linked(store.open_run(run_id).path, name, Path("/dev/zero"))
    assert cli.main(["runs", "--rebuild"]) == 0  # one bad folder never takes the history down
    out, err = capsys.readouterr()
    assert run_id in out and keep in out
    assert cli.main(["report", run_id, "--format", "md", "--out", "-"]) == 0
    out, err = capsys.readouterr()
    assert name in err and "symbolic link" in err


@pytest.mark.timeout(60)
def test_a_stream_line_without_end_is_read_in_bounded_memory(monkeypatch):
    """A stream of 24 MB of zero bytes without a newline (what /dev/zero copied in would be):
    read in pieces, the line skipped with a warning, memory bounded by the line limit."""
    import tracemalloc

    from profiler.store import runfolder as store_module

    monkeypatch.setattr(store_module, "STREAM_LINE_LIMIT", 1 << 20)
    store = RunStore()
    run = store.open_run(recorded_run(store))
    with run.stream_path.open("ab") as fh:
        for _ in range(24):
            fh.write(b"\0" * (1 << 20))
        fh.write(b'\n{"type":"sample","step":9,"time":9,"metrics":{}}\n')
    warnings: list[str] = []
    tracemalloc.start()
    try:
        messages = list(run.messages(warnings))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [m.get("step") for m in messages if m["type"] == "sample"] == [1, 2, 3, 9]
    assert any("longer than 1,048,576 bytes" in w for w in warnings)
    assert peak < 8 * (1 << 20), peak  # a few line buffers, not the 24 MB


@pytest.mark.timeout(60)
def test_the_roofline_cache_as_a_fifo_never_blocks(monkeypatch, capsys, effiscope_home):
    import copy

    from profiler.measure import roofline

    result = roofline.measure("cpu", sizes=(32,), repeats=3, warmup=1, copy_bytes=1 << 16)
    monkeypatch.setattr(roofline, "measure", lambda device="cpu", **kw: copy.deepcopy(result))
    effiscope_home.mkdir(parents=True, exist_ok=True)
    os.mkfifo(roofline.cache_path())
    cached, why = roofline.load("cpu")
    assert cached is None and "pipe (FIFO)" in why
    value, how, _ = roofline.mfu_vs_measured(1000.0, 1e6, "cpu", "fp32")
    assert value is None and "pipe (FIFO)" in how
    assert cli.main(["roofline", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert_sentence(err)
    assert "could not be written" in err and "pipe (FIFO)" in err
    assert stat.S_ISFIFO(os.lstat(roofline.cache_path()).st_mode)


# --- a long stream is exported in bounded memory ----------------------------------------------
def long_run(store: RunStore, lines: int) -> str:
    """A run whose stream holds `lines` samples of four metrics (a gap every 1000th step)."""
    run = store.open_run(recorded_run(store, "long", steps=0))
    with run.stream_path.open("a", encoding="utf-8") as fh:
        for step in range(1, lines + 1):
            loss = "null" if step % 1000 == 0 else f"{5 - step / lines:.6f}"
            fh.write(f'{{"type":"sample","step":{step},"time":{step / 100},"phase":"measure",'
                     f'"metrics":{{"loss_train":{loss},"tokens_per_s":{1000 + step % 7},'
                     f'"step_time_s":{0.01 + (step % 5) / 1000},"peak_rss_bytes":{step}}}}}\n')
    return run.run_id


def peak_bytes(work) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fmt", ("json", "csv", "md"))
def test_a_long_stream_is_exported_in_bounded_memory(tmp_path, fmt):
    """Four times the readings may not need much more memory: the series held for drawing are
    bounded, the JSON / CSV readings are streamed from the stream to the file."""
    from profiler.report import export

    store = RunStore()
    small, large = long_run(store, 6_000), long_run(store, 24_000)
    peaks = {}
    for run_id in (small, large):
        out = tmp_path / f"{run_id}.{fmt}"
        peaks[run_id] = peak_bytes(lambda: export([run_id], fmt, out, store=store))  # noqa: B023
    # Before, every reading was held (and the JSON text whole): 4x the readings took ~4x.
    assert peaks[large] < peaks[small] * 1.3 + (2 << 20), peaks
    assert peaks[large] < 32 << 20, peaks
    text = (tmp_path / f"{large}.{fmt}").read_text(encoding="utf-8")
    if fmt == "json":
        doc = json.loads(text)["runs"][0]
        loss = doc["series"]["loss_train"]
        assert doc["points"] == 4 * 24_000 and len(loss["value"]) == 24_000  # every reading
        assert loss["step"][:3] == [1, 2, 3] and loss["value"][999] is None
        assert doc["series"]["peak_rss_bytes"]["value"][-1] == 24_000.0
    elif fmt == "csv":
        assert text.count("\n") == 1 + 4 * 24_000
    else:
        assert "long" in text and "<svg" not in text


def test_a_long_series_is_drawn_from_its_extremes_and_judged_from_every_reading():
    from profiler.figures.evidence import run_samples
    from profiler.report.load import DRAWN_BUCKETS, load_run

    store = RunStore()
    run = load_run(store.open_run(long_run(store, 12_000)))
    loss = run.series["loss_train"]
    assert loss.decimated and loss.count == 12_000 and len(loss.values) <= 3 * DRAWN_BUCKETS
    present = [v for v in loss.values if v is not None]
    assert min(present) == pytest.approx(5 - 11_999 / 12_000) and max(present) == pytest.approx(
        5 - 1 / 12_000)
    assert None in loss.values  # the gaps are kept
    assert loss.steps == sorted(loss.steps) and run.points == 4 * 12_000 and not run.complete
    samples = run_samples(run, ("tokens_per_s",))
    assert len(samples["tokens_per_s"]) == 12_000  # a verdict reads every reading again


@pytest.mark.timeout(30)
def test_the_apps_log_view_never_opens_a_fifo(tmp_path):
    from app.dialogs import read_log_tail

    log = tmp_path / "worker.log"
    os.mkfifo(log)
    text = read_log_tail(log)
    assert "cannot be read" in text and "pipe (FIFO)" in text
    log.unlink()
    log.symlink_to(Path("/dev/zero"))
    assert "symbolic link" in read_log_tail(log)
    log.unlink()
    log.write_bytes(b"x" * 300_000 + b"the end\n")
    assert read_log_tail(log).endswith("the end\n")


def test_a_roofline_cache_under_a_home_that_is_a_file_is_a_sentence(monkeypatch, tmp_path,
                                                                   capsys):
    import copy

    from profiler.measure import roofline

    result = roofline.measure("cpu", sizes=(32,), repeats=3, warmup=1, copy_bytes=1 << 16)
    monkeypatch.setattr(roofline, "measure", lambda device="cpu", **kw: copy.deepcopy(result))
    home = tmp_path / "home-file"
    home.write_text("not a folder")
    monkeypatch.setenv("EFFISCOPE_HOME", str(home))
    assert cli.main(["roofline", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert_sentence(err)
    assert "could not be written" in err and "not a folder" in err


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ("fifo", "symlink"))
def test_a_run_s_weights_that_are_not_a_regular_file_are_refused(tmp_path, kind):
    """model.source = "run" reads the run folder's model.safetensors: never a FIFO (it would
    block) and never through a link (to a file outside the store)."""
    from profiler.errors import CheckpointError
    from profiler.models.source import FILENAME, checkpoint_path

    store = RunStore()
    run = store.open_run(recorded_run(store))
    path, _ = hostile(run.path, kind, FILENAME)
    config = RunConfig()
    config.model.source, config.model.run_id = "run", run.run_id
    with pytest.raises(CheckpointError, match="not a regular file"):
        checkpoint_path(config.model)


def test_doctor_out_onto_a_fifo_is_refused_before_any_check(tmp_path, capsys):
    """`doctor --out DIR` that cannot hold the report: exit 2 with the sentence, no check run."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert cli.main(["doctor", "--only", "versions", "--out", str(fifo)]) == 2
    captured = capsys.readouterr()
    assert "is a pipe (FIFO)" in captured.err and "choose another --out" in captured.err
    assert "PASS" not in captured.out and stat.S_ISFIFO(os.lstat(fifo).st_mode)
