"""A run config read from TOML: the file read bounded (a regular file of at most
MAX_CONFIG_BYTES), its text parsed, and every key and type checked as the dataclasses of
profiler.config.sections are built from it; ConfigError names the setting and the fix.
"""

from __future__ import annotations

import dataclasses
import math
import stat
import sys
import typing
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from profiler.errors import ConfigError

MAX_CONFIG_BYTES = 1_000_000
"""A config file is a few kB; a bigger one (or /dev/zero) is refused before it is read."""
MAX_TEXT_CHARS = 100_000
"""Longest text setting (a name, a path): a config must fit in one protocol message."""


def parse_toml(text: str) -> dict:
    """A config file's text as plain data; ConfigError (a sentence) when it is not usable TOML."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"the file is not valid TOML ({exc}); fix the syntax") from None
    except RecursionError:
        raise ConfigError("", "the file is not a usable TOML config (its tables or arrays "
                          "are nested too deeply); fix the file") from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise ConfigError("", f"the file is not a usable TOML config ({str(exc)[:120]}); "
                          "fix the value") from None


def read_config_file(path: str | Path) -> str:
    """A config file's text: a regular file of at most MAX_CONFIG_BYTES, UTF-8; ConfigError
    (a sentence) otherwise."""
    path = Path(path)
    shown = short_path(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise ConfigError("", f"{shown} is {kind}; give the path of a TOML config file")
        if info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError("", f"{shown} is {info.st_size:,} bytes, over the "
                              f"{MAX_CONFIG_BYTES:,} a config may have; give a TOML config "
                              "file")
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        return raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError("", f"no config file at {shown}; check the path") from None
    except UnicodeDecodeError:
        raise ConfigError("", f"{shown} is not UTF-8 text; give a TOML config file") from None
    except OSError as exc:
        raise ConfigError("", f"cannot read {shown} ({exc.strerror or exc}); give a "
                          "readable TOML file") from None


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, "a table"
    )


def build(cls: type, data: Any, section: str) -> Any:
    where = section or "the top level"
    if not isinstance(data, dict):
        raise ConfigError(section, f"expected a table of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{section + '.' if section else ''}{unknown[0]}",
            f"unknown setting in {where}; valid settings are {', '.join(sorted(names))}",
        )
    values = {}
    for name, raw in data.items():
        tp = hints[name]
        path = f"{section}.{name}" if section else name
        if dataclasses.is_dataclass(tp):
            values[name] = build(tp, raw, path)
        elif typing.get_origin(tp) is dict:
            values[name] = _techniques(raw, path)
        elif typing.get_origin(tp) is list:
            if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
                raise ConfigError(path, f"must be a list of strings, got {raw!r}")
            values[name] = list(raw)
        else:
            values[name] = _scalar(raw, tp, path)
    return cls(**values)


def _scalar(raw: Any, tp: Any, path: str) -> Any:
    if tp is float and isinstance(raw, int) and not isinstance(raw, bool):
        if abs(raw) > 1e300:
            raise ConfigError(path, f"must be a finite number, got an integer of {len(str(abs(raw)))} digits")
        return float(raw)
    if isinstance(raw, bool) and tp is not bool or not isinstance(raw, tp):
        raise ConfigError(path, f"must be {_type_name(tp)}, got {shown(raw)}")
    if isinstance(raw, float) and not math.isfinite(raw):
        raise ConfigError(path, f"must be a finite number, got {raw}; give a number such as 0.1")
    if tp is int and abs(raw) >= 2**63:
        raise ConfigError(path, f"must be an integer below 2**63, got one of {len(str(abs(raw)))} digits")
    if tp is str and len(raw) > MAX_TEXT_CHARS:
        raise ConfigError(path, f"is {len(raw):,} characters long; keep it under {MAX_TEXT_CHARS:,}")
    return raw


def shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text):,} characters)"


def short_path(path: Any) -> str:
    text = str(path)
    return text if len(text) <= 120 else f"{text[:80]}... ({len(text):,} characters)"


def _finite_params(params: dict, path: str) -> None:
    """Technique parameters: inf and nan are refused here with a sentence (TOML allows them)."""
    for key, value in params.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{path}.{key}", f"must be a finite number, got {value}; give a "
                              "number in the range `effiscope techniques` lists")


def _techniques(raw: Any, path: str) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict):
        raise ConfigError(path, "must be a table of [techniques.NAME] sections")
    out = {}
    for name, params in raw.items():
        if params is True:
            params = {}
        if not isinstance(params, dict):
            raise ConfigError(f"{path}.{name}", "must be a table of parameters (or true)")
        _finite_params(params, f"{path}.{name}")
        out[str(name)] = dict(params)
    return out
