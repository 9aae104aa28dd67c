"""`effiscope export --to tensorboard|mlflow|csv-long` and the live TensorBoard mirror, read back
with the trackers' own readers (tensorboard's event loader and hparams protos, mlflow's client)."""

from __future__ import annotations

import csv
import datetime
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from profiler.cli import main
from profiler.store import RunStore
from tests.helpers import stored_run

ROOT = Path(__file__).resolve().parent.parent


def _messages(steps: int = 6) -> list[dict]:
    out = [{"type": "hello", "protocol": 1, "versions": {}, "device": {}, "environment": {}},
           {"type": "started", "run": {"workload": "train", "device": "cpu", "steps": steps}}]
    for step in range(1, steps + 1):
        out.append({"type": "sample", "step": step, "time": step * 0.25, "phase": "measure",
                    "metrics": {"loss_train": 4.0 - step * 0.125, "tokens_per_s": 1000.0 + step,
                                "rss_bytes": 409_223_168 + step, "cpu_percent": 50.0 + step,
                                "torch_allocated_bytes": None}})
        if step == 3:
            out.append({"type": "event", "kind": "toggle", "message": "amp switched on",
                        "step": 3, "technique": "amp"})
    out.append({"type": "done", "status": "completed", "summary": {"figures": {
        "tokens_per_s": {"value": 1003.5, "unit": "tokens/s", "how": "median"},
        "mfu": {"value": None, "unit": "fraction", "how": "n/a on CPU"}}}})
    return out


@pytest.fixture
def store() -> RunStore:
    return RunStore()


def _stream(store: RunStore, run_id: str) -> list[dict]:
    return list(store.open_run(run_id).messages([]))


def _events(path: Path) -> list:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return list(EventFileLoader(str(path)).Load())


def _scalars(events: list) -> list[tuple[str, int, float, float]]:
    from tensorboard.util import tensor_util

    return [(v.tag, e.step, e.wall_time, float(tensor_util.make_ndarray(v.tensor)))
            for e in events for v in e.summary.value
            if v.metadata.plugin_data.plugin_name == "scalars"]


def _hparams(events: list) -> dict:
    from tensorboard.plugins.hparams import plugin_data_pb2

    out: dict = {}
    for event in events:
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name == "hparams":
                data = plugin_data_pb2.HParamsPluginData.FromString(
                    value.metadata.plugin_data.content)
                out.setdefault(value.tag, []).append(data)
    return out


def _mlflow_client():
    """mlflow's own client: a skip with the reason where the optional extra is not installed,
    a failure in CI (test.sh installs the test extra, which holds it)."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        message = ("the mlflow extra is not installed here: pip install 'effiscope[mlflow]' "
                   "(./test.sh installs it with the test extra)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return MlflowClient


def test_tensorboard_export_holds_every_sample_at_its_step_and_wall_time(store, tmp_path,
                                                                          capsys):
    run_id = stored_run(store, "tb", _messages())
    out = tmp_path / "tb"
    assert main(["export", run_id, "--to", "tensorboard", "--dir", str(out)]) == 0
    # One event directory for the run, one file in it: no hparams sub-run beside it.
    assert [p.name for p in out.iterdir()] == [run_id]
    (event_file,) = (out / run_id).iterdir()
    assert "tfevents" in event_file.name
    events = _events(event_file)
    samples = [m for m in _stream(store, run_id) if m["type"] == "sample"]
    expected = [(f"{group}/{key}", m["step"], m["received"], m["metrics"][key])
                for m in samples for key, group in (("loss_train", "loss"),
                                                    ("tokens_per_s", "speed"),
                                                    ("rss_bytes", "memory"),
                                                    ("cpu_percent", "system"))]
    got = [s for s in _scalars(events) if not s[0].startswith("summary/")]
    assert len(got) == len(expected) == 24  # every reading; the missing one is no point
    for (tag, step, wall, value), (etag, estep, ewall, evalue) in zip(got, expected, strict=True):
        assert (tag, step) == (etag, estep)
        assert wall == pytest.approx(ewall, abs=1e-6)  # the front end's receipt, per sample
        assert value == float(np.float32(evalue))  # TensorBoard keeps float32 (7 digits)
    # The unit is in the tag's description, written with its first reading.
    described = {v.tag: v.metadata.summary_description for e in events for v in e.summary.value
                 if v.metadata.summary_description}
    assert described["speed/tokens_per_s"].startswith("Throughput, in tokens/s.")
    assert described["memory/rss_bytes"].startswith("Process RSS, in bytes.")
    assert ", in %." in described["system/cpu_percent"]
    assert described["loss/loss_train"].split(".")[0].endswith("in nats/token")
    # The mid-run change is a text event at its step.
    texts = [(e.step, v.tag, v.tensor.string_val[0].decode()) for e in events
             for v in e.summary.value if v.metadata.plugin_data.plugin_name == "text"]
    assert texts == [(3, "techniques/text_summary", "step 3: amp switched on")]
    # The summary figures at the last step, n/a ones left out, and the hparams once.
    assert [(t, s, v) for t, s, _w, v in _scalars(events) if t.startswith("summary/")] == \
        [("summary/tokens_per_s", 6, 1003.5)]
    hparams = _hparams(events)
    assert {tag: len(items) for tag, items in hparams.items()} == {
        "_hparams_/experiment": 1, "_hparams_/session_start_info": 1,
        "_hparams_/session_end_info": 1}
    experiment = hparams["_hparams_/experiment"][0].experiment
    assert [m.name.tag for m in experiment.metric_infos] == ["summary/tokens_per_s"]
    start = hparams["_hparams_/session_start_info"][0].session_start_info.hparams
    assert start["effiscope.run_id"].string_value == run_id
    assert start["device"].string_value == "cpu"
    assert start["train.batch_size"].number_value > 0
    assert {i.name for i in experiment.hparam_infos} == set(start)
    from tensorboard.plugins.hparams import api_pb2

    end = hparams["_hparams_/session_end_info"][0].session_end_info
    assert end.status == api_pb2.Status.Value("STATUS_SUCCESS")
    assert "wrote" in capsys.readouterr().err
    # TensorBoard itself, reading the folder, sees one run holding the three hparams tags.
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    seen = EventMultiplexer().AddRunsFromDirectory(str(out))
    seen.Reload()
    assert list(seen.Runs()) == [run_id]
    assert {run: sorted(tags) for run, tags in seen.PluginRunToTagToContent("hparams").items()} \
        == {run_id: ["_hparams_/experiment", "_hparams_/session_end_info",
                     "_hparams_/session_start_info"]}
    # Exported again: the same file replaced, not a second one beside it (no doubled curves).
    before = event_file.read_bytes()
    assert main(["export", run_id, "--to", "tensorboard", "--dir", str(out)]) == 0
    assert list((out / run_id).iterdir()) == [event_file]
    assert event_file.read_bytes() == before


def test_a_long_run_is_exported_without_down_sampling(store, tmp_path):
    """More readings than a report keeps for drawing (4,096 per curve): all of them go out."""
    steps = 5000
    messages = [{"type": "sample", "step": s, "time": s * 0.01, "metrics": {"loss_train": s}}
                for s in range(1, steps + 1)]
    run_id = stored_run(store, "long", messages)
    assert main(["export", run_id, "--to", "tensorboard", "--dir", str(tmp_path)]) == 0
    (event_file,) = (tmp_path / run_id).iterdir()
    got = [(s[1], s[3]) for s in _scalars(_events(event_file)) if s[0] == "loss/loss_train"]
    assert got == [(s, float(s)) for s in range(1, steps + 1)]


def test_csv_long_has_one_row_per_reading(store, tmp_path):
    run_id = stored_run(store, "csv", _messages())
    assert main(["export", run_id, "--to", "csv-long", "--dir", str(tmp_path)]) == 0
    with open(tmp_path / f"{run_id}.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["step", "timestamp", "metric", "value", "unit"]
    samples = [m for m in _stream(store, run_id) if m["type"] == "sample"]
    assert len(rows) == 24
    by_tag = {row["metric"]: row for row in rows if row["step"] == "2"}
    assert by_tag["memory/rss_bytes"]["value"] == "409223170.0"  # exact: no float32 here
    assert by_tag["memory/rss_bytes"]["unit"] == "bytes"
    assert by_tag["loss/loss_train"]["unit"] == "nats/token"
    when = datetime.datetime.fromisoformat(by_tag["speed/tokens_per_s"]["timestamp"]
                                           .replace("Z", "+00:00"))
    assert when.timestamp() == pytest.approx(samples[1]["received"], abs=1e-5)


def test_the_live_mirror_keeps_every_message_when_the_front_end_dies(store, tmp_path):
    """Each event is on disk as soon as its message is stored: a front end killed before
    finish() leaves a readable file with every sample so far."""
    from profiler.config import RunConfig
    from profiler.report.trackers.tensorboard_events import TensorBoardMirror
    from profiler.store.recorder import RunRecorder

    run = store.create_run(RunConfig(name="mirror", device="cpu"))
    mirror = TensorBoardMirror(tmp_path, run)
    recorder = RunRecorder(store, run, mirror)
    for message in _messages()[:6]:  # hello, started, samples 1..3, the toggle
        recorder.handle_message(message)
    events = _events(mirror.path)  # read while the writer is still open, never finished
    assert [(t, s) for t, s, _w, _v in _scalars(events) if t == "loss/loss_train"] == \
        [("loss/loss_train", 1), ("loss/loss_train", 2), ("loss/loss_train", 3)]
    assert not _hparams(events)
    recorder.finish(0)
    assert _hparams(_events(mirror.path))


def test_a_mirror_that_cannot_write_never_stops_the_run(store, tmp_path):
    from profiler.config import RunConfig
    from profiler.report.trackers.tensorboard_events import TensorBoardMirror
    from profiler.store.recorder import RunRecorder

    run = store.create_run(RunConfig(name="full disk", device="cpu"))
    mirror = TensorBoardMirror(tmp_path, run)

    def full(_data: bytes) -> int:
        raise OSError(28, "No space left on device")

    mirror._writer._write = full
    recorder = RunRecorder(store, run, mirror)
    for message in _messages():
        recorder.handle_message(message)
    assert recorder.finish(0) == "completed"
    stream = _stream(store, run.run_id)
    assert len([m for m in stream if m["type"] == "sample"]) == 6  # the store has it all
    notes = [m["message"] for m in stream if m.get("kind") == "warning"]
    assert len(notes) == 1 and "No space left on device" in notes[0]
    assert "--to tensorboard" in notes[0]


def test_the_recorder_stamps_each_message_with_its_arrival(store):
    """The wall time is the front end's: a worker cannot set it."""
    run_id = stored_run(store, "stamps", [
        {"type": "sample", "step": 1, "time": 0.1, "metrics": {"loss_train": 1.0},
         "received": 1.0}])
    (sample,) = [m for m in _stream(store, run_id) if m["type"] == "sample"]
    assert sample["received"] > 1.0e9


def test_tensorboard_is_written_without_importing_torch(store, tmp_path):
    """The app exports and mirrors runs, and never imports torch: tensorboardX is loaded with
    torch kept out."""
    run_id = stored_run(store, "no torch", _messages())
    code = ("import sys\n"
            "from profiler.report.trackers import export\n"
            f"print(export([{run_id!r}], 'tensorboard', {str(tmp_path)!r}))\n"
            "assert 'tensorboardX' in sys.modules\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env={**os.environ})
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / run_id).is_dir()


# --- bad input: a sentence and exit code 2 ------------------------------------------------------
def test_an_unknown_run_id_is_refused(store, tmp_path, capsys):
    stored_run(store, "known", _messages())
    out = tmp_path / "out"
    for target in ("tensorboard", "csv-long", "mlflow"):
        assert main(["export", "no-such-run", "--to", target, "--dir", str(out)]) == 2
        err = capsys.readouterr().err
        assert "no-such-run" in err and "effiscope runs" in err
    assert not out.exists()  # nothing written


@pytest.mark.parametrize("target", ["tensorboard", "csv-long", "mlflow"])
def test_a_folder_that_cannot_be_written_is_refused(store, tmp_path, capsys, target):
    if target == "mlflow":
        _mlflow_client()  # without the extra, the sentence is about the extra (tested below)
    run_id = stored_run(store, "dir", _messages())
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["export", run_id, "--to", target, "--dir", str(blocker)]) == 2
    assert "is a file, not a folder; choose another --dir" in capsys.readouterr().err
    assert main(["export", run_id, "--to", target, "--dir", str(blocker / "below")]) == 2
    assert "(Not a directory); choose another --dir" in capsys.readouterr().err
    assert blocker.read_text() == "not a folder"


def test_an_event_file_that_is_a_fifo_is_left_alone(store, tmp_path, capsys):
    run_id = stored_run(store, "fifo", _messages())
    (tmp_path / run_id).mkdir()
    fifo = tmp_path / run_id / f"events.out.tfevents.{run_id}.effiscope"
    os.mkfifo(fifo)
    assert main(["export", run_id, "--to", "tensorboard", "--dir", str(tmp_path)]) == 2
    assert "not a regular file" in capsys.readouterr().err
    assert fifo.is_fifo()


def test_run_refuses_a_tensorboard_folder_it_cannot_write_before_any_run(store, tmp_path,
                                                                          capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["run", "nano", "--steps", "3", "--warmup", "1", "--tensorboard",
                 str(blocker)]) == 2
    assert "--tensorboard:" in capsys.readouterr().err
    assert store.list_runs() == []  # nothing was run


def test_mlflow_missing_extra_is_a_sentence(store, tmp_path, capsys, monkeypatch):
    run_id = stored_run(store, "no mlflow", _messages())
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the extra were not installed
    assert main(["export", run_id, "--to", "mlflow", "--dir", str(tmp_path / "ml")]) == 2
    assert "pip install 'effiscope[mlflow]'" in capsys.readouterr().err
    assert not (tmp_path / "ml").exists()


def test_mlflow_export_read_back_with_mlflows_client(store, tmp_path, capsys):
    MlflowClient = _mlflow_client()  # noqa: N806 - the class itself

    first = stored_run(store, "first", _messages())
    second = stored_run(store, "second", _messages(3)[:-1], exit_code=1)  # crashed
    folder = tmp_path / "mlruns"
    assert main(["export", first, second, "--to", "mlflow", "--dir", str(folder)]) == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{folder.resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("effiscope")
    runs = {r.data.tags["effiscope.run_id"]: r for r in
            client.search_runs([experiment.experiment_id])}
    assert set(runs) == {first, second}  # one MLflow run per EffiScope run
    run = runs[first]
    samples = [m for m in _stream(store, first) if m["type"] == "sample"]
    history = client.get_metric_history(run.info.run_id, "speed/tokens_per_s")
    assert [(h.step, h.timestamp, h.value) for h in history] == [
        (m["step"], int(round(m["received"] * 1000)), m["metrics"]["tokens_per_s"])
        for m in samples]
    rss = client.get_metric_history(run.info.run_id, "memory/rss_bytes")
    assert [h.value for h in rss] == [409_223_168.0 + s for s in range(1, 7)]  # exact
    assert client.get_metric_history(run.info.run_id, "memory/torch_allocated_bytes") == []
    assert run.data.metrics["summary/tokens_per_s"] == 1003.5
    assert run.data.params["device"] == "cpu"
    assert run.data.params["model.preset"] == "gpt-nano"
    assert run.info.status == "FINISHED" and runs[second].info.status == "FAILED"
    assert run.info.start_time == int(round(samples[0]["received"] * 1000))
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert artifacts == ["report.html"]
    report = Path(client.download_artifacts(run.info.run_id, "report.html", str(tmp_path)))
    assert first in report.read_text(encoding="utf-8")
    # Exported again: the runs are there already, none is doubled.
    capsys.readouterr()
    assert main(["export", first, "--to", "mlflow", "--dir", str(folder)]) == 0
    assert "already MLflow run" in capsys.readouterr().err
    assert len(client.search_runs([experiment.experiment_id])) == 2


def test_the_live_mirror_of_a_nano_run_equals_its_export(store, tmp_path):
    """`effiscope run --tensorboard DIR` writes, while the run goes, the very file that
    `effiscope export --to tensorboard` writes from the store afterwards."""
    from tests.helpers import run_config

    config_path = tmp_path / "nano.toml"
    run_config(4, eval_interval=2).save(config_path)
    live = tmp_path / "live"
    assert main(["run", str(config_path), "--tensorboard", str(live)]) == 0
    (run_id,) = [p.name for p in live.iterdir()]
    exported = tmp_path / "exported"
    assert main(["export", run_id, "--to", "tensorboard", "--dir", str(exported)]) == 0
    (live_file,) = (live / run_id).iterdir()
    (exported_file,) = (exported / run_id).iterdir()
    assert live_file.name == exported_file.name
    assert live_file.read_bytes() == exported_file.read_bytes()
    events = _events(live_file)
    readings = [(key, m["step"]) for m in _stream(store, run_id) if m["type"] == "sample"
                for key, value in m["metrics"].items() if value is not None]
    points = [(tag.split("/", 1)[1], step) for tag, step, _w, _v in _scalars(events)
              if not tag.startswith("summary/")]
    assert points == readings and len(points) > 20
    assert len(_hparams(events)["_hparams_/session_start_info"]) == 1


def test_a_run_recorded_before_the_arrival_stamps_gets_its_wall_time_from_the_stream(store,
                                                                                       tmp_path):
    """Runs stored before the recorder stamped arrivals: the stream's last write less the last
    sample's time, plus each sample's own time."""
    import json

    run_id = stored_run(store, "legacy", _messages())
    stream = store.open_run(run_id).stream_path
    lines = [json.loads(line) for line in stream.read_text(encoding="utf-8").splitlines()]
    for message in lines:
        message.pop("received", None)
    stream.write_text("".join(json.dumps(m) + "\n" for m in lines), encoding="utf-8")
    written = 1_700_000_000.0
    os.utime(stream, (written, written))
    assert main(["export", run_id, "--to", "csv-long", "--dir", str(tmp_path)]) == 0
    with open(tmp_path / f"{run_id}.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["metric"] == "loss/loss_train"]
    last_time = 6 * 0.25
    got = [datetime.datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00")).timestamp()
           for r in rows]
    assert got == pytest.approx([written - last_time + s * 0.25 for s in range(1, 7)], abs=1e-5)


def test_a_tracking_uri_is_for_mlflow_only(store, tmp_path, capsys):
    run_id = stored_run(store, "uri", _messages())
    assert main(["export", run_id, "--to", "tensorboard", "--tracking-uri",
                 "http://localhost:5000"]) == 2
    assert "--tracking-uri is for --to mlflow" in capsys.readouterr().err
