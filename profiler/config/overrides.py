"""What `effiscope run TARGET --flag value` names: a preset (assets/presets/NAME.toml) or a TOML
file, loaded, with settings overridden by dotted name, then validated as a whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from profiler.config.loading import short_path, shown
from profiler.config.sections import RunConfig
from profiler.config.validation import validate
from profiler.errors import ConfigError

PRESETS_DIR = Path(__file__).resolve().parent.parent.parent / "assets" / "presets"


def apply_overrides(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """A copy of config with settings replaced by dotted name ({"limits.steps": 50}), each
    value checked for its type and range like the same setting read from TOML (not validated:
    call validate() on the result, after every override, so the file and the overrides are
    judged together)."""
    data = config.to_dict()
    for dotted, value in overrides.items():
        if value is None:
            continue
        table = data
        *sections, name = dotted.split(".")
        for section in sections:
            table = table[section]
        table[name] = value
    return RunConfig.from_dict(data)


def list_presets() -> list[str]:
    """Names of the shipped run presets (assets/presets/*.toml)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def resolve(target: str, overrides: dict[str, Any] | None = None, *,
            on_this_machine: bool = True) -> RunConfig:
    """A preset's name (nano) or the path of a TOML file, loaded, with `overrides` (dotted
    setting -> value, None = not given) applied, then validated as a whole (on_this_machine:
    see validate)."""
    return validate(apply_overrides(load_target(target), overrides or {}),
                    on_this_machine=on_this_machine)


def load_target(target: str) -> RunConfig:
    """A preset's name (nano) or the path of a TOML file, loaded (types checked, not validated)."""
    if "\x00" in target:
        raise ConfigError("", "the config path holds a NUL character; give a preset name or a "
                          "TOML file's path")
    path = Path(target).expanduser()
    try:
        exists = path.exists()
    except OSError as exc:
        raise ConfigError("", f"{short_path(target)} cannot be a config ({exc.strerror or exc}); "
                          "give a preset name or a shorter path") from None
    if path.suffix == ".toml" or exists:
        return RunConfig.load(path)
    preset = PRESETS_DIR / f"{target}.toml"
    if "/" not in target and len(target) < 100 and preset.exists():
        return RunConfig.load(preset)
    raise ConfigError(
        "", f"{shown(target)} is neither a preset ({', '.join(list_presets())}) nor a TOML "
        "file; give one of those names or the path of a config"
    )
