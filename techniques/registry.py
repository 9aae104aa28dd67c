"""The technique registry: metadata of every technique, importable without torch.

Each technique module declares a TechniqueInfo and registers it. The GUI builds its controls from
this table, the config validates against it, and the worker applies techniques in STAGES order.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

# The order in which the worker applies techniques; why: compression changes the weights that
# later wrappers see, checkpointing wraps blocks before compile traces them, compile comes before
# the parallel wrapper, the optimizer is built over the final parameters, and the loop context
# (autocast, scaler, accumulation) wraps every step.
STAGES = ("compress", "model", "checkpoint", "compile", "parallel", "optimizer", "loop")
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


class UnknownTechnique(ValueError):
    pass


# --- the hooks a technique gives the engine: the contract, checked at registration ---------------
class ApplyHook(Protocol):
    """apply(state, params) -> what it did: switch the technique on (build, wrap, convert)."""

    def __call__(self, state: Any, params: Any, /) -> str: ...


class ChangeHook(Protocol):
    """change(state, params) -> what changed: a mid-run `set` on a technique already on, with
    its new parameters in full."""

    def __call__(self, state: Any, params: Any, /) -> str: ...


class RemoveHook(Protocol):
    """remove(state) -> what it undid: a mid-run `set` with enabled = false."""

    def __call__(self, state: Any, /) -> str: ...


class FinalizeHook(Protocol):
    """finalize(state, params) -> what it did: fold pruning masks into the weights; a technique
    with it is a pruner (the engine orders and folds it as one)."""

    def __call__(self, state: Any, params: Any, /) -> str: ...


class AfterFormatsHook(Protocol):
    """after_formats(state, params) -> what it did: once its masks are folded in and every
    format change is done, store the weights in a form that needs their final dtype."""

    def __call__(self, state: Any, params: Any, /) -> str: ...


class SaveHook(Protocol):
    """save(state, steps, tell, save_weights) -> paths written: save the weights this
    technique's own way (LoRA: the adapter and the merged model) instead of the plain path;
    tell(text) says what was saved, save_weights(model) is the plain path."""

    def __call__(self, state: Any, steps: int, tell: Callable[[str], None],
                 save_weights: Callable[[Any], str | None], /) -> list[str]: ...


class MachineCheck(Protocol):
    """check(params, caps) -> why these params cannot run on this machine, or None."""

    def __call__(self, params: Any, caps: dict, /) -> str | None: ...


class ConfigCheck(Protocol):
    """config_check(params, facts) -> why these params contradict the run config, or None."""

    def __call__(self, params: Any, facts: RunFacts, /) -> str | None: ...


# Each hook's arguments, as the engine passes them (positionally): a hook must accept exactly
# these (more only with defaults).
HOOK_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "apply": ("state", "params"), "change": ("state", "params"), "remove": ("state",),
    "finalize": ("state", "params"), "after_formats": ("state", "params"),
    "save": ("state", "steps", "tell", "save_weights"),
    "check": ("params", "caps"), "config_check": ("params", "facts"),
}


@dataclass(frozen=True)
class Hooks:
    """What the engine calls on a technique (techniques.runtime, through `hooks(name)`); built
    and checked by `register`, so a missing or misshapen hook fails at import, not mid-run."""

    apply: ApplyHook
    change: ChangeHook | None = None
    """Required when `mid_run` names anything: a `set` on a running technique comes here."""
    remove: RemoveHook | None = None
    """Required when `mid_run` has "enabled" (and only then)."""
    finalize: FinalizeHook | None = None
    after_formats: AfterFormatsHook | None = None
    save: SaveHook | None = None

    @property
    def folds_masks(self) -> bool:
        """A pruner: it leaves masks that `finalize` folds into the weights."""
        return self.finalize is not None


class BadTechnique(TypeError):
    """A technique module that breaks the hook contract; the text names the module and the fix."""


def _signature_problem(hook: str, function: Any) -> str | None:
    """Why `function` cannot be called the way the engine calls `hook`, or None."""
    wanted = HOOK_ARGUMENTS[hook]
    shape = f"{hook}({', '.join(wanted)})"
    if not callable(function):
        return f"its {hook} is not a function; define {shape}"
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # a builtin without a signature: trusted as it is
        return None
    try:
        signature.bind(*wanted)
    except TypeError:
        return (f"its {hook} takes ({', '.join(signature.parameters)}) but the engine calls "
                f"{shape}; give it exactly those arguments")
    return None


def _hooks_problem(info: TechniqueInfo, hooks: Hooks) -> str | None:
    """Why these hooks do not fit this technique's metadata (the contract), or None."""
    for hook in ("apply", "change", "remove", "finalize", "after_formats", "save"):
        function = getattr(hooks, hook)
        if function is None:
            if hook == "apply":
                return "it has no apply; define apply(state, params) and pass it to register"
            continue
        why = _signature_problem(hook, function)
        if why:
            return why
    for hook in ("check", "config_check"):
        function = getattr(info, hook)
        why = _signature_problem(hook, function) if function is not None else None
        if why:
            return why
    changes = [name for name in info.mid_run if name != "enabled"]
    if "enabled" in info.mid_run and hooks.remove is None:
        return ("mid_run has \"enabled\" but it has no remove hook, so switching it off "
                "mid-run would fail; define remove(state) or take \"enabled\" out of mid_run")
    if info.mid_run and hooks.change is None:
        what = ", ".join(changes) or "enabled"
        return (f"mid_run names {what} but it has no change hook, so a mid-run set would fail; "
                "define change(state, params) (or change = apply) or empty mid_run")
    if hooks.remove is not None and "enabled" not in info.mid_run:
        return ("it has a remove hook the engine never calls (mid_run lacks \"enabled\"); add "
                "\"enabled\" to mid_run or drop remove")
    if hooks.change is not None and not info.mid_run:
        return ("it has a change hook the engine never calls (mid_run is empty); name what may "
                "change in mid_run or drop change")
    known = {p.name for p in info.params} | {p.name for p in info.runtime_params} | {"enabled"}
    unknown = [name for name in info.mid_run if name not in known]
    if unknown:
        return (f"mid_run names {', '.join(unknown)}, which is no parameter of it; name its "
                "parameters (or \"enabled\") only")
    if hooks.after_formats is not None and hooks.finalize is None:
        return ("its after_formats runs once its masks are folded in, and it has no finalize "
                "to fold them; define finalize(state, params) or drop after_formats")
    return None


_REGISTRY: dict[str, TechniqueInfo] = {}
_HOOKS: dict[str, Hooks] = {}

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
    why = _hooks_problem(info, hooks)
    if why:
        raise BadTechnique(f"technique {info.name!r} ({info.module}): {why}")
    _REGISTRY[info.name] = info
    _HOOKS[info.name] = hooks
    return info


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)
    _HOOKS.pop(name, None)


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
        if module not in _REGISTRY:
            raise BadTechnique(f"techniques.{module} registers no technique; end the module "
                               "with register(INFO, apply=apply, ...)")


def in_force(techniques: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The techniques a config names plus the always-on ones, defaults filled, values checked
    (ValueError names the parameter and the fix)."""
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
