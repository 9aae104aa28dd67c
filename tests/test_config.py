"""Run config: TOML round trip, presets, and the errors no table holds (every bad setting is in
tests/test_bad_input.py's table)."""

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


def test_unknown_technique_is_named():
    with pytest.raises(ConfigError, match="unknown technique"):
        validate(RunConfig.from_toml("[techniques.warp_drive]\nspeed = 9"))


def test_resolve_unknown_target():
    with pytest.raises(ConfigError, match="neither a preset"):
        resolve("no-such-preset")
