"""The technique registry: metadata of every technique, importable without torch.

Each technique module declares a TechniqueInfo and ends with `register(INFO, apply=..., ...)`:
its hooks are checked there (techniques.hooks), its typed parameters class is made there
(techniques.params). The GUI builds its controls from this table, the config validates against
it, and the worker applies techniques in STAGES order. Rules that span a run config are one
mechanism, each technique's config_check, asked through `rule_problem` by validation, the
engine's plan and every mid-run change.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from techniques.hooks import (
    AfterFormatsHook,
    ApplyHook,
    BadTechnique,
    ChangeHook,
    FinalizeHook,
    Hooks,
    RemoveHook,
    SaveHook,
    hooks_problem,
)
from techniques.params import (
    ENABLED,
    Param,
    ParamError,
    TechniqueParams,
    checked_value,
    make_params_type,
    unknown_keys,
)

__all__ = ["BadTechnique", "Hooks", "Param", "RunFacts", "TechniqueInfo", "TechniqueParams"]

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
    """check(params, capabilities) -> why these params cannot run on this machine, or None.
    Validation also runs it against machines that can do everything (`config_problem`): what it
    refuses there is a contradiction of the config itself, refused before a run exists."""
    config_check: Callable[[dict, RunFacts], str | None] | None = None
    """config_check(params, facts) -> why these params contradict the rest of the run: the
    techniques in force beside it (facts.techniques, defaults filled), the workload, the run's
    length, the model's shape; or None. Torch-free, the one rule mechanism (`rule_problem`),
    asked by the config's validation (before the run, and again in the worker), the engine's
    plan and every mid-run change."""
    extra: dict = field(default_factory=dict)
    """Free-form metadata; known keys: "workloads" (where it applies), "mfu" ("n/a": its matmuls
    run at another peak), "acts_on" (summary figures it changes first: a comparison of runs that
    differ in it leads with them)."""

    @property
    def module(self) -> str:
        """Import path of the implementation (imports torch)."""
        return f"techniques.{self.name}"

    def defaults(self) -> dict[str, Any]:
        """Plain data (the app's controls, a config's table); `typed_defaults` for the engine."""
        return {p.name: p.default for p in self.params}


@dataclass(frozen=True)
class RunFacts:
    """What a config-only check may read: facts of the run config that need no machine."""

    workload: str = "train"
    steps: int = 0
    """limits.steps: optimizer steps of the run."""
    device: str = "auto"
    techniques: dict[str, dict] = field(default_factory=dict)
    """Every technique the run names plus the always-on ones, parameters with defaults filled."""
    world_size: int = 1
    model_kind: str = "builtin"
    linear_widths: dict[str, int] = field(default_factory=dict)
    """The narrowest input or output width of the blocks' Linear layers, by group ("attention",
    "mlp"); empty when the model's shape is not known."""


def run_facts(config: Any, techniques: dict[str, Any], *, world_size: int | None = None,
              model_kind: str | None = None,
              linear_widths: dict[str, int] | None = None) -> RunFacts:
    """The RunFacts of a run config (a RunConfig, read by attribute) with these techniques in
    force: validation passes the model's shape facts, the engine what its machine says."""
    launch = getattr(config, "launch", None)
    limits = getattr(config, "limits", None)
    if world_size is None:
        world_size = (launch.nproc_per_node * launch.nnodes) if launch is not None else 1
    return RunFacts(workload=getattr(config, "workload", "train"),
                    steps=getattr(limits, "steps", 0), device=getattr(config, "device", "auto"),
                    techniques=dict(techniques), world_size=world_size,
                    model_kind=model_kind or "builtin", linear_widths=dict(linear_widths or {}))


class UnknownTechnique(ParamError):
    """A technique name the registry does not know (field: techniques.NAME)."""


_REGISTRY: dict[str, TechniqueInfo] = {}
_HOOKS: dict[str, Hooks] = {}
_TYPES: dict[str, type[TechniqueParams]] = {}

NEEDS_PROCESSES = ("needs 2 or more processes; set launch.nproc_per_node (or launch.nnodes) so "
                   "that the job has at least 2")


def register(info: TechniqueInfo, *, apply: ApplyHook, change: ChangeHook | None = None,
             remove: RemoveHook | None = None, finalize: FinalizeHook | None = None,
             after_formats: AfterFormatsHook | None = None,
             save: SaveHook | None = None) -> TechniqueInfo:
    """Register a technique's metadata with its hooks (a module's last statement, once its
    hooks exist). BadTechnique names what breaks the contract: a mid-run parameter without a
    change hook, "enabled" without remove, a hook with the wrong arguments."""
    if info.name in _REGISTRY:
        raise ValueError(f"technique {info.name!r} is registered twice")
    if info.stage not in STAGES:
        raise ValueError(f"technique {info.name!r} has unknown stage {info.stage!r}")
    if info.category not in CATEGORIES:
        raise ValueError(f"technique {info.name!r} has unknown category {info.category!r}")
    hooks = Hooks(apply=apply, change=change, remove=remove, finalize=finalize,
                  after_formats=after_formats, save=save)
    why = hooks_problem(info, hooks)
    if why:
        raise BadTechnique(f"technique {info.name!r} ({info.module}): {why}")
    typed = make_params_type(info.name, info.label, info.params, info.runtime_params)
    _REGISTRY[info.name] = info
    _HOOKS[info.name] = hooks
    _TYPES[info.name] = typed
    return info


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)
    _HOOKS.pop(name, None)
    _TYPES.pop(name, None)


def params_type(name: str) -> type[TechniqueParams]:
    """The technique's typed parameters class (a frozen dataclass made from its Params)."""
    get(name)
    return _TYPES[name]


def hooks(name: str) -> Hooks:
    """The checked hooks of a technique: the only way the engine reaches its code."""
    get(name)  # UnknownTechnique with the list of known ones
    return _HOOKS[name]


def all_techniques() -> list[TechniqueInfo]:
    _load_builtin()
    return sorted(_REGISTRY.values(), key=lambda t: (STAGES.index(t.stage), t.name))


def get(name: str) -> TechniqueInfo:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise UnknownTechnique(f"techniques.{name}",
                               f"unknown technique; known techniques are {known}") from None


def validate_params(name: str, params: Mapping[str, Any]) -> TechniqueParams:
    """The typed parameters of a technique from a config's plain table: defaults filled, types,
    choices and ranges checked (ValueError names the parameter and the fix). Typed parameters
    of this technique are returned as they are. The one boundary from plain data to typed."""
    typed = params_type(name)
    if isinstance(params, typed):
        return params
    return typed.from_plain(params)


def validate_change(name: str, params: Mapping[str, Any]) -> tuple[bool, dict[str, Any]]:
    """A mid-run `set`'s parameters checked: (enabled, the settings it changes), each value
    converted and checked like a config's (ValueError names it); runtime-only settings (a new
    learning rate) and "enabled" are accepted here."""
    info = get(name)
    by_name = {p.name: p for p in info.params + info.runtime_params + (ENABLED,)}
    unknown_keys(name, params, list(by_name))
    changes = {key: checked_value(name, by_name[key], value) for key, value in params.items()}
    return changes.pop("enabled", True), changes


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
        if module not in _REGISTRY:
            raise BadTechnique(f"techniques.{module} registers no technique; end the module "
                               "with register(INFO, apply=apply, ...)")


def in_force(techniques: Mapping[str, Mapping[str, Any]]) -> dict[str, TechniqueParams]:
    """The techniques a config names plus the always-on ones, typed: defaults filled, values
    checked (ValueError names the parameter and the fix)."""
    wanted = dict(techniques)
    for info in all_techniques():
        if info.always_on and info.name not in wanted:
            wanted[info.name] = {}
    return {name: validate_params(name, params) for name, params in wanted.items()}


def rule_problem(facts: RunFacts) -> tuple[str, str] | None:
    """(technique name, sentence) for the first technique in force whose config_check objects
    to the run, or None: the one call path of the rules, for validation, the engine's plan and
    every mid-run change."""
    for name, params in facts.techniques.items():
        rule = get(name).config_check
        why = rule(params, facts) if rule is not None else None
        if why:
            return name, why
    return None


def unavailable_reason(info: TechniqueInfo, params: Mapping[str, Any],
                       caps: dict[str, Any]) -> str | None:
    """Why this technique (with these params: typed, or a plain table with defaults filled
    here) cannot run with these capabilities, or None; parameters that break their own
    bounds are the reason.

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
        try:
            typed = validate_params(info.name, params)
        except ValueError as exc:
            return str(exc)
        return info.check(typed, caps)
    return None


def _ideal_machines(facts: RunFacts) -> list[dict]:
    """Capabilities of machines that can do everything the configured device allows: a check
    that refuses on every one of them refuses the config, not a machine."""
    common = {"bf16": True, "compiler": True, "distributed": True, "hf_checkpoint_every": True,
              "packages": [p.split(":", 1)[1] for info in _REGISTRY.values()
                           for p in info.requires if p.startswith("package:")],
              "fused": ["adamw", "adam", "sgd"], "world_size": facts.world_size,
              "model_kind": facts.model_kind}
    cuda = {**common, "device": "cuda", "cuda": True, "cuda_capability": 100.0}
    cpu = {**common, "device": "cpu", "cuda": False, "cuda_capability": None}
    if facts.device == "cpu":
        return [cpu]
    if facts.device.startswith("cuda"):
        return [cuda]
    return [cuda, cpu]


def config_problem(facts: RunFacts) -> tuple[str, str] | None:
    """(technique name, sentence) for the first contradiction within a run config, or None:
    the rules (each technique's config_check), declared conflicts, then a check that refuses on
    every machine the configured device allows. Torch-free: validation runs it before a run
    exists."""
    _load_builtin()
    problem = rule_problem(facts)
    if problem is not None:
        return problem
    names = list(facts.techniques)
    for i, name in enumerate(names):
        for other in names[i + 1:]:
            if other in get(name).conflicts or name in get(other).conflicts:
                return name, (f"cannot be combined with techniques.{other} "
                              f"({get(name).label} and {get(other).label} are exclusive); "
                              "enable only one of them")
    machines = _ideal_machines(facts)
    everywhere = _ideal_machines(RunFacts(device="auto", world_size=facts.world_size,
                                          model_kind=facts.model_kind))
    for name in names:
        info, params = get(name), facts.techniques[name]
        reasons = [unavailable_reason(info, params, caps) for caps in machines]
        if all(reasons):
            if not all(unavailable_reason(info, params, caps) for caps in everywhere):
                return name, (f"cannot run with device = {facts.device!r} ({reasons[0]}); set "
                              f"device = \"auto\" (or another device), or remove it")
            return name, str(reasons[0])
    return None
