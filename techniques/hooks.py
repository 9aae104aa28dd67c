"""The hooks a technique gives the engine, as a contract checked at registration (torch-free).

A technique module ends with `register(INFO, apply=..., change=..., ...)`: its hooks are checked
against its metadata there (a mid-run parameter needs `change`, "enabled" needs `remove`, each
hook takes the arguments the engine passes), so a broken plugin fails at import with a sentence,
never in the middle of a run. The engine (techniques.runtime) reaches a technique's code only
through the checked `Hooks`, never by looking for attributes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


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

    def __call__(self, params: Any, facts: Any, /) -> str | None: ...


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


def hooks_problem(info: Any, hooks: Hooks) -> str | None:
    """Why these hooks do not fit this technique's metadata (a registry.TechniqueInfo: its
    mid_run, params and checks), or None."""
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
