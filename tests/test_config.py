"""Run config: TOML round trip and errors that name the field and the fix."""

from __future__ import annotations

import pytest

from profiler.config import ConfigError, RunConfig, list_presets, resolve, validate


def test_toml_round_trip(tmp_path):
    config = RunConfig(name="mine")
    config.train.batch_size = 3
    config.techniques = {}
    path = tmp_path / "run.toml"
    config.save(path)
    again = RunConfig.load(path)
    assert again == config
    assert 'batch_size = 3' in path.read_text()


def test_presets_load_and_validate():
    assert {"nano", "mini", "gpt2-small", "gpt2-medium"} <= set(list_presets())
    for name in list_presets():
        assert resolve(name).model.preset


@pytest.mark.parametrize("text, field, words", [
    ("train = 3", "train", "table"),
    ("[train]\nbatch_sise = 3", "train.batch_sise", "valid settings"),
    ("[train]\nbatch_size = 2.5", "train.batch_size", "integer"),
    ("[train]\nbatch_size = true", "train.batch_size", "integer"),
    ("[train]\nlearning_rate = 'fast'", "train.learning_rate", "number"),
    ("[train]\nbatch_size = 0", "train.batch_size", "1 or more"),
    ("[train]\nlearning_rate = -1e-3", "train.learning_rate", "above 0 and at most 10"),
    ("[train]\nseq_len = 4096", "train.seq_len", "context"),
    ("[model]\npreset = 'gpt-5'", "model.preset", "choose one of"),
    ("device = 'tpu'", "device", "auto, cpu, cuda"),
    ("[data]\nsource = 'path'", "data.path", "text file or folder"),
    ("[data]\nsource = 'path'\npath = '/nonexistent/x'", "data.path", "does not exist"),
    ("[limits]\nsteps = 0", "limits.steps", "1 or more"),
    ("[limits]\nsteps = 5\nwarmup_steps = 5", "limits.warmup_steps", "below"),
    ("workload = 'dance'", "workload", "choose one of"),
    ("this is = not toml", "", "not valid TOML"),
])
def test_bad_configs_say_what_to_fix(text, field, words):
    with pytest.raises(ConfigError) as info:
        validate(RunConfig.from_toml(text))
    assert info.value.field == field
    assert words in str(info.value)


def test_unknown_technique_is_named():
    with pytest.raises(ConfigError, match="unknown technique"):
        validate(RunConfig.from_toml("[techniques.warp_drive]\nspeed = 9"))


def test_resolve_unknown_target():
    with pytest.raises(ConfigError, match="neither a preset"):
        resolve("no-such-preset")
