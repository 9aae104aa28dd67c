"""Hugging Face models through real worker processes (two in all): a GPT-2 checkpoint trains from
the CLI and saves its weights; one worker refuses a missing, a damaged, a remote-code and a
mismatched checkpoint, each with an error naming model.path, and then still serves an encoder."""

from __future__ import annotations

import json
import shutil

import pytest

from profiler.config import validate
from profiler.models import source as model_source
from profiler.wire import protocol
from profiler.wire.client import WorkerProcess
from tests import hf_fixtures as fx
from tests.helpers import collect


@pytest.mark.slow
def test_a_gpt2_checkpoint_trains_from_the_cli_and_saves_its_weights(tmp_path, capsys,
                                                                      effiscope_home):
    from profiler.cli import main

    config = fx.hf_config("gpt2", save_checkpoint=True)
    config.save(tmp_path / "gpt2.toml")
    code = main(["run", str(tmp_path / "gpt2.toml"), "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    summary = json.loads(out)
    figures = summary["figures"]
    assert summary["steps_completed"] == 20
    assert figures["loss_val_final"]["value"] < figures["loss_val_first"]["value"] - 0.3
    saved = effiscope_home / "runs" / summary["run_id"] / "hf-model"
    assert summary["checkpoint"] == str(saved)
    assert (saved / "model.safetensors").is_file() and (saved / "tokenizer.json").is_file()
    again = fx.hf_config("gpt2", workload="infer")
    again.model.path = str(saved)
    shape = model_source.model_shape(validate(again).model)  # the saved folder is a checkpoint
    assert shape.arch == "gpt2" and shape.parameters == summary["parameters"]
    stored = (effiscope_home / "runs" / summary["run_id"] / "config.toml").read_text()
    assert 'source = "hf"' in stored and "[model.arch]" in stored


def _start(worker: WorkerProcess, config) -> list[dict]:
    worker.send(protocol.start(config.to_dict()))
    return collect(worker, until="done", timeout=180)


@pytest.mark.slow
def test_the_worker_refuses_bad_checkpoints_then_runs_an_encoder(tmp_path):
    root = fx.checkpoints_root()
    truncated = fx.truncate_weights(shutil.copytree(root / "llama", tmp_path / "truncated"))
    evil = fx.needs_remote_code(shutil.copytree(root / "gpt2", tmp_path / "evil"))
    mismatched = shutil.copytree(root / "llama", tmp_path / "mismatched")
    config_path = mismatched / "config.json"
    data = json.loads(config_path.read_text())
    data["intermediate_size"] = 96  # the weights are 64 wide: found only when they are read
    config_path.write_text(json.dumps(data))
    cases = [
        (tmp_path / "not-there", "is not on this machine"),
        (truncated, "is truncated"),
        (evil, "never runs remote code"),
        (mismatched, "could not be loaded"),
    ]
    worker = WorkerProcess()
    try:
        assert collect(worker, until="hello")[-1]["type"] == "hello"
        for path, words in cases:
            config = fx.hf_config("llama")
            config.model.path = str(path)
            messages = _start(worker, config)
            error = next(m for m in messages if m["type"] == "error")
            assert error["kind"] == "config", error
            assert error["message"].startswith("model.path:") and words in error["message"]
            assert str(path) in error["message"]
            assert messages[-1] == {"type": "done", "status": "failed",
                                    "summary": messages[-1]["summary"]}
        # The same worker still runs the next config: an encoder's forward-pass latency.
        messages = _start(worker, fx.hf_config("bert", workload="infer"))
        done = messages[-1]
        assert done["status"] == "completed", [m for m in messages if m["type"] == "error"]
        assert done["summary"]["figures"]["encode_latency_p50_s"]["value"] > 0
        assert not (tmp_path / "evil" / "__pycache__").exists()  # its code was never imported
    finally:
        worker.shutdown()
