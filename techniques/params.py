"""Typed technique parameters, generated from each technique's `Param` tuple (torch-free).

Like torchao's per-config dataclasses, every technique has one frozen dataclass of its settings
(`PrecisionParams(dtype="bf16")`), built and validated in one place: field types, defaults,
choices and ranges come from its Params, and a value that breaks them is a ValueError naming the
setting and the fix. Inside the engine a technique's settings are read as attributes
(`params.dtype`); where they leave it (the wire, a summary, TOML) they are plain data: an
instance is also a read-only mapping of its values, and `as_dict()` gives a plain dict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class Param:
    name: str
    type: type
    default: Any
    help: str
    choices: tuple = ()
    min: float | None = None
    max: float | None = None


ENABLED = Param("enabled", bool, True, "switch the technique on or off")
"""What every mid-run `set` may carry besides a technique's own settings."""

RESERVED = frozenset({"get", "keys", "items", "values", "as_dict", "replace", "technique",
                      "settings", "runtime_settings"})
"""Names a Param cannot take: they are the typed parameters' own methods and attributes."""


class ParamError(ValueError):
    """A technique setting a config cannot have: str() is "FIELD: what to fix", `field` names
    the setting (techniques.NAME or techniques.NAME.PARAM) for whoever shows it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def checked_value(technique: str, param: Param, value: Any) -> Any:
    """The value as the setting holds it (an int where a float is wanted becomes a float), or
    ParamError naming the setting and what it must be."""
    where = f"techniques.{technique}.{param.name}"
    if param.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) != (param.type is bool) or not isinstance(value, param.type):
        raise ParamError(where, f"must be {param.type.__name__}, got {value!r}")
    if param.choices and value not in param.choices:
        raise ParamError(where, f"{value!r} is not one of {', '.join(map(str, param.choices))}")
    if param.min is not None and value < param.min:
        raise ParamError(where, f"must be at least {param.min}, got {value}")
    if param.max is not None and value > param.max:
        raise ParamError(where, f"must be at most {param.max}, got {value}")
    return value


def unknown_keys(technique: str, given: Mapping[str, Any], known: list[str]) -> None:
    """ParamError for the first key that is no setting, with the valid ones listed."""
    for key in given:
        if key not in known:
            valid = ", ".join(known) or "none"
            raise ParamError(f"techniques.{technique}.{key}",
                             f"unknown parameter; valid ones are {valid}")


class TechniqueParams(Mapping[str, Any]):
    """Base of every technique's generated parameters class (see `make_params_type`).

    Fields are the technique's Params (always set, defaults filled) and its runtime-only
    settings (None until a mid-run `set` gives one, e.g. the optimizer's new learning rate).
    """

    technique: ClassVar[str] = ""
    settings: ClassVar[tuple[Param, ...]] = ()
    runtime_settings: ClassVar[tuple[Param, ...]] = ()

    def __post_init__(self) -> None:
        for param in self.settings:
            object.__setattr__(self, param.name,
                               checked_value(self.technique, param, getattr(self, param.name)))
        for param in self.runtime_settings:
            value = getattr(self, param.name)
            if value is not None:
                object.__setattr__(self, param.name, checked_value(self.technique, param, value))

    @classmethod
    def from_plain(cls, values: Mapping[str, Any]) -> TechniqueParams:
        """The typed parameters of a config's plain table (defaults filled, values checked)."""
        unknown_keys(cls.technique, values, [p.name for p in cls.settings])
        return cls(**values)

    def replace(self, **changes: Any) -> TechniqueParams:
        """A copy with these settings changed, checked like any other."""
        return dataclasses.replace(self, **changes)

    def _names(self) -> list[str]:
        return [p.name for p in self.settings] + [
            p.name for p in self.runtime_settings if getattr(self, p.name) is not None]

    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def as_dict(self) -> dict[str, Any]:
        """Plain data: what goes on the wire, into a summary or a TOML file."""
        return {name: getattr(self, name) for name in self._names()}


def class_name(technique: str) -> str:
    return "".join(part.capitalize() for part in technique.split("_")) + "Params"


def make_params_type(technique: str, label: str, settings: tuple[Param, ...],
                     runtime_settings: tuple[Param, ...] = ()) -> type[TechniqueParams]:
    """One frozen dataclass for a technique: a field per Param (its type, its default), and one
    per runtime-only setting (optional, None by default); ValueError for a Param name the
    class cannot hold."""
    names = [p.name for p in settings + runtime_settings]
    for name in names:
        if name in RESERVED or name.startswith("_") or not name.isidentifier():
            raise ValueError(f"techniques.{technique}: a parameter cannot be called {name!r}; "
                             "choose another name")
    if len(set(names)) != len(names):
        raise ValueError(f"techniques.{technique}: a parameter is declared twice; give each "
                         "its own name")
    fields = [(p.name, p.type, dataclasses.field(default=p.default)) for p in settings]
    fields += [(p.name, p.type | None, dataclasses.field(default=None))
               for p in runtime_settings]
    namespace = {"technique": technique, "settings": settings,
                 "runtime_settings": runtime_settings, "__module__": __name__,
                 "__doc__": f"Parameters of {label} (techniques.{technique}), typed and checked."}
    return dataclasses.make_dataclass(class_name(technique), fields, bases=(TechniqueParams,),
                                      namespace=namespace, frozen=True, eq=False)
