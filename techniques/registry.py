"""The technique registry: metadata of every technique, importable without torch.

Each technique module declares a TechniqueInfo and registers it. The GUI builds its controls from
this table, the config validates against it, and the worker applies techniques in STAGES order.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# The order in which the worker applies techniques; why: compression changes the weights that
# later wrappers see, checkpointing wraps blocks before compile traces them, compile comes before
# the parallel wrapper, the optimizer is built over the final parameters, and the loop context
# (autocast, scaler, accumulation) wraps every step.
STAGES = ("compress", "model", "checkpoint", "compile", "parallel", "optimizer", "loop")
INFER_STAGES = ("compress", "model")
"""Techniques that act on a model that is only run forward (the infer and compress workloads
apply these); the others act on training."""
FORWARD_WORKLOADS = ("infer", "compress")
"""Workloads that run the model forward only: they apply INFER_STAGES."""
CATEGORIES = ("optimizer", "precision", "memory", "speed", "parallel", "compression")


@dataclass(frozen=True)
class Param:
    name: str
    type: type
    default: Any
    help: str
    choices: tuple = ()
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class TechniqueInfo:
    name: str
    label: str
    category: str
    stage: str
    summary: str
    """One line: what it does and what it costs."""
    source: str
    params: tuple[Param, ...] = ()
    requires: tuple[str, ...] = ()
    """Capabilities needed: "cuda", "bf16", "distributed", "processes" (2 or more in the job),
    "package:NAME"."""
    conflicts: tuple[str, ...] = ()
    mid_run: tuple[str, ...] = ()
    """What a `set` may change while a run goes: "enabled" (switch on / off) and parameter names."""
    runtime_params: tuple[Param, ...] = ()
    """Settings only a mid-run `set` takes (e.g. a new learning rate), not part of the config."""
    always_on: bool = False
    """Always applied (with defaults when the config does not name it), e.g. the optimizer."""
    check: Callable[[dict, dict], str | None] | None = None
    """check(params, capabilities) -> why these params cannot run on this machine, or None."""
    extra: dict = field(default_factory=dict)
    """Free-form metadata; known keys: "workloads" (where it applies), "mfu" ("n/a": its matmuls
    run at another peak), "acts_on" (summary figures it changes first: a comparison of runs that
    differ in it leads with them)."""

    @property
    def module(self) -> str:
        """Import path of the implementation (imports torch)."""
        return f"techniques.{self.name}"

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}


class UnknownTechnique(ValueError):
    pass


_REGISTRY: dict[str, TechniqueInfo] = {}

NEEDS_PROCESSES = ("needs 2 or more processes; set launch.nproc_per_node (or launch.nnodes) so "
                   "that the job has at least 2")


def register(info: TechniqueInfo) -> TechniqueInfo:
    if info.name in _REGISTRY:
        raise ValueError(f"technique {info.name!r} is registered twice")
    if info.stage not in STAGES:
        raise ValueError(f"technique {info.name!r} has unknown stage {info.stage!r}")
    if info.category not in CATEGORIES:
        raise ValueError(f"technique {info.name!r} has unknown category {info.category!r}")
    _REGISTRY[info.name] = info
    return info


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def all_techniques() -> list[TechniqueInfo]:
    _load_builtin()
    return sorted(_REGISTRY.values(), key=lambda t: (STAGES.index(t.stage), t.name))


def get(name: str) -> TechniqueInfo:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise UnknownTechnique(
            f"techniques.{name}: unknown technique; known techniques are {known}"
        ) from None


def validate_params(name: str, params: dict[str, Any], runtime: bool = False) -> dict[str, Any]:
    """Fill defaults and check types and ranges; ValueError names the parameter and the fix.

    runtime=True also accepts the technique's mid-run-only settings (and "enabled").
    """
    info = get(name)
    by_name = {p.name: p for p in info.params}
    if runtime:
        by_name.update({p.name: p for p in info.runtime_params})
        by_name["enabled"] = Param("enabled", bool, True, "switch the technique on or off")
    for key in params:
        if key not in by_name:
            valid = ", ".join(by_name) or "none"
            raise ValueError(f"techniques.{name}.{key}: unknown parameter; valid ones are {valid}")
    out = info.defaults()
    for key, value in params.items():
        p = by_name[key]
        where = f"techniques.{name}.{key}"
        if p.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) != (p.type is bool) or not isinstance(value, p.type):
            raise ValueError(f"{where}: must be {p.type.__name__}, got {value!r}")
        if p.choices and value not in p.choices:
            raise ValueError(f"{where}: {value!r} is not one of {', '.join(map(str, p.choices))}")
        if p.min is not None and value < p.min:
            raise ValueError(f"{where}: must be at least {p.min}, got {value}")
        if p.max is not None and value > p.max:
            raise ValueError(f"{where}: must be at most {p.max}, got {value}")
        out[key] = value
    return out


_BUILTIN: tuple[str, ...] = (
    "optimizer", "lr_schedule", "grad_clip", "precision", "tf32", "activation_checkpointing",
    "grad_accumulation", "compile", "attention", "ddp", "fsdp",
    "quantize_int8_dynamic", "quantize_weight_only", "weight_cast", "prune_magnitude",
    "prune_structured", "prune_semi_structured",
    "lora", "qlora", "prune_wanda", "float8_training", "optimizer_low_bit",
)
_loaded = False


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _BUILTIN:
        importlib.import_module(f"techniques.{module}")


def unavailable_reason(info: TechniqueInfo, params: dict[str, Any], caps: dict[str, Any]) -> str | None:
    """Why this technique (with these params) cannot run with these capabilities, or None.

    caps: {"cuda": bool, "cuda_capability": float | None, "bf16": bool, "compiler": bool,
    "distributed": bool, "packages": [names], "fused": [optimizer names]}; missing keys mean "no".
    """
    for need in info.requires:
        if need == "cuda" and not caps.get("cuda"):
            return "needs an NVIDIA GPU with CUDA; this machine has none"
        if need == "ampere" and (caps.get("cuda_capability") or 0) < 8.0:
            return "needs an NVIDIA GPU of the Ampere generation or newer (compute capability 8.0+)"
        if need == "bf16" and not caps.get("bf16"):
            return "needs bfloat16 support, which this device lacks"
        if need == "compiler" and not caps.get("compiler"):
            return "torch.compile needs a C++ compiler (gcc or clang) on the PATH"
        if need == "distributed" and not caps.get("distributed"):
            return "this torch build has no torch.distributed"
        if need == "processes" and caps.get("world_size", 1) < 2:
            return NEEDS_PROCESSES
        if need.startswith("package:") and need[8:] not in caps.get("packages", []):
            return f"needs the Python package {need[8:]} (pip install {need[8:]})"
    if info.check is not None:
        return info.check(params, caps)
    return None
