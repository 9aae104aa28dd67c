"""Finding Hugging Face models offline, and refusing the ones EffiScope must not or cannot load:
missing, damaged, remote code. Also: what imports what (the built-in GPT never needs
transformers; validation and the cache listing need neither torch nor transformers)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from profiler import errors
from profiler.config import ConfigError, RunConfig, validate
from profiler.engine import weights
from profiler.models import source as model_source
from profiler.models.hf_cache import list_cached_models
from tests import hf_fixtures as fx
from tests.helpers import run_config

ROOT = Path(__file__).resolve().parent.parent


def hf_run(path: str, workload: str = "train") -> RunConfig:
    """run_config for a Hugging Face model at `path` (a folder or a model id in the hub cache)."""
    return run_config(workload=workload, seq_len=32, model={"source": "hf", "path": path},
                      infer={"prompt_len": 16, "gen_len": 8, "eval_seq_len": 32})


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A private hub cache holding a usable model, a remote-code model and a broken download."""
    cache = tmp_path / "hub"
    fx.into_hub_cache(cache, "tiny-org/tiny-llama", fx.checkpoints_root() / "llama")
    evil = fx.into_hub_cache(cache, "evil-org/needs-code", fx.checkpoints_root() / "gpt2")
    fx.needs_remote_code(evil)
    (cache / "models--someone--half-downloaded" / "blobs").mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def test_a_model_in_the_local_hub_cache_is_found_and_listed_offline(hub, capsys):
    items = {item["id"]: item for item in list_cached_models()}
    assert set(items) == {"tiny-org/tiny-llama", "evil-org/needs-code", "someone/half-downloaded"}
    llama = items["tiny-org/tiny-llama"]
    assert llama["usable"] and llama["kind"] == "hf-causal" and llama["model_type"] == "llama"
    assert llama["weights"] == "safetensors" and llama["path"].endswith("snapshots/0123abcd")
    assert llama["parameters"] == model_source.model_shape(
        hf_run(str(fx.checkpoints_root() / "llama")).model).parameters
    assert not items["evil-org/needs-code"]["usable"]
    assert "remote code" in items["evil-org/needs-code"]["reason"]
    assert "incomplete download" in items["someone/half-downloaded"]["reason"]
    config = validate(hf_run("tiny-org/tiny-llama"))  # a model id resolves to its snapshot
    assert model_source.model_shape(config.model).description.endswith("snapshots/0123abcd")
    from profiler.cli import main

    assert main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["hf_cache"] == str(hub)
    assert "tiny-org/tiny-llama" in {item["id"] for item in listed["cached"]}
    assert {"gpt2", "llama", "qwen2", "gpt-neox", "bert"} <= {a["name"] for a in
                                                             listed["architectures"]}
    assert "gpt-nano" in {p["name"] for p in listed["presets"]}


def test_a_model_that_is_not_on_disk_gets_a_sentence_saying_where_effiscope_looked(hub):
    with pytest.raises(ConfigError) as caught:
        validate(hf_run("nobody/nothing-here"))
    text = str(caught.value)
    assert text.startswith("model.path: 'nobody/nothing-here' is not on this machine")
    assert str(hub / "models--nobody--nothing-here") in text and "nothing is downloaded" in text
    with pytest.raises(ConfigError, match="model.path: is empty; give a local Hugging Face"):
        validate(hf_run(""))


def test_damaged_and_unsafe_checkpoints_are_refused_with_a_sentence(tmp_path):
    def copy(name: str, to: str):
        return shutil.copytree(fx.checkpoints_root() / name, tmp_path / to)

    truncated = fx.truncate_weights(copy("llama", "truncated"))
    with pytest.raises(ConfigError, match=r"model.path: .*model.safetensors is truncated: .*"
                                          r"re-download or re-save"):
        validate(hf_run(str(truncated)))
    evil = fx.needs_remote_code(copy("gpt2", "evil"))
    with pytest.raises(ConfigError, match="auto_map.*never runs remote code"):
        validate(hf_run(str(evil)))
    with pytest.raises(errors.CheckpointError, match="model.path: .*auto_map"):  # loader too
        weights.load_model(hf_run(str(evil)).model)
    assert "modeling_evil" not in sys.modules
    bare = copy("gpt2", "no-weights")
    (bare / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="holds no weights"):
        validate(hf_run(str(bare)))
    (bare / "config.json").unlink()
    with pytest.raises(ConfigError, match="has no config.json"):
        validate(hf_run(str(bare)))
    seq2seq = copy("gpt2", "seq2seq")
    (seq2seq / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 32}))
    with pytest.raises(ConfigError, match="encoder-decoder"):
        validate(hf_run(str(seq2seq)))


def test_bin_weights_are_read_with_torch_load_weights_only(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    folder = shutil.copytree(fx.checkpoints_root() / "llama", tmp_path / "bin")
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    config = validate(hf_run(str(folder)))
    assert model_source.model_shape(config.model).parameters_how == "estimated from config.json"
    model, _ = weights.load_model(config.model)
    assert calls and all(flag is True for flag in calls)
    assert model.parameter_count() == model_source.model_shape(config.model).parameters


def _python(code: str, **env) -> str:
    import os

    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_validation_and_listing_import_neither_torch_nor_transformers(hub):
    out = _python(
        "import sys\n"
        "from profiler.config import RunConfig, validate\n"
        "from profiler.models.hf_cache import list_cached_models\n"
        "c = RunConfig(device='cpu'); c.model.source = 'hf'; c.model.path = 'tiny-org/tiny-llama'\n"
        "c.train.seq_len = 32; validate(c)\n"
        "c.model.source = 'hf-config'; validate(c)\n"
        "assert len(list_cached_models()) == 3\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n",
        HF_HUB_CACHE=str(hub))
    assert out.strip() == "[]"


def test_the_built_in_gpt_never_imports_transformers():
    out = _python(
        "import sys, torch\n"
        "from profiler.engine import weights\n"
        "from profiler.config import RunConfig\n"
        "model, _ = weights.load_model(RunConfig().model)\n"
        "model(torch.zeros(1, 8, dtype=torch.long))\n"
        "print('transformers' in sys.modules)\n")
    assert out.strip() == "False"
