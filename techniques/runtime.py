"""The training state techniques act on, and the engine that applies them (imports torch).

Every switch has a null object as its "off" state — autocast disabled, a GradScaler with
enabled=False, one micro-batch, a constant schedule — so the training loop has no branches for
techniques: it always asks the state, and the state answers with the right object.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from profiler.errors import Unsupported
from techniques import registry


@dataclass
class TrainState:
    config: Any
    device: torch.device
    caps: dict
    model: torch.nn.Module
    """The plain model; techniques set its switches (attention, checkpoint_every)."""
    forward_model: Callable | None = None
    """What the loop calls: the model, or its compiled form."""
    optimizer: torch.optim.Optimizer | None = None
    scaler: Any = None
    autocast_dtype: torch.dtype | None = None
    micro_batches: int = 1
    grad_clip_norm: float = 0.0
    base_lr: float = 1e-3
    lr_factor: Callable[[int], float] = lambda step: 1.0
    sdpa_backends: list | None = None
    compiled: bool = False
    dist: Any = None
    """The torchrun job (profiler.distributed.DistContext) or None."""
    warn: Callable[[str], None] = print
    calibration: Callable[[int], list] | None = None
    """calibration(n) -> n batches of input token ids (LongTensor [batch, seq]) from the run's
    training text, for techniques that look at activations (e.g. activation-aware pruning);
    None when the workload has no text."""
    active: dict[str, dict] = field(default_factory=dict)
    """Technique name -> parameters currently in force."""
    reports: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.forward_model is None:
            self.forward_model = self.model
        if self.scaler is None:
            self.scaler = make_scaler(self.device, enabled=False)

    def step_context(self) -> contextlib.AbstractContextManager:
        """Autocast (a no-op when off) and the chosen SDPA backends, for one forward pass."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                                           enabled=self.autocast_dtype is not None))
        if self.sdpa_backends:
            from torch.nn.attention import sdpa_kernel

            stack.enter_context(sdpa_kernel(self.sdpa_backends))
        return stack

    def clip_gradients(self) -> float | None:
        """Clip to grad_clip_norm and return the pre-clip global norm; None when clipping is off."""
        if not self.grad_clip_norm:
            return None
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip_norm)
        return float(norm)

    def learning_rate(self, step: int) -> float:
        return self.base_lr * self.lr_factor(step)


def make_scaler(device: torch.device, enabled: bool):
    """A GradScaler; disabled it passes losses and steps through unchanged (the null object)."""
    try:
        return torch.amp.GradScaler(device.type, enabled=enabled)
    except (AttributeError, TypeError):  # torch < 2.3
        return torch.cuda.amp.GradScaler(enabled=enabled and device.type == "cuda")


def implementation(name: str):
    return importlib.import_module(registry.get(name).module)


def enabled_techniques(config: Any) -> dict[str, dict]:
    """Config techniques plus the always-on ones, with defaults filled and values checked."""
    wanted = dict(config.techniques)
    for info in registry.all_techniques():
        if info.always_on and info.name not in wanted:
            wanted[info.name] = {}
    return {name: registry.validate_params(name, params) for name, params in wanted.items()}


def check_all(config: Any, caps: dict) -> None:
    """Refuse, before the run, anything this machine cannot do or that conflicts."""
    wanted = enabled_techniques(config)
    for name, params in wanted.items():
        info = registry.get(name)
        why = registry.unavailable_reason(info, params, caps)
        if why:
            raise Unsupported(f"techniques.{name}: {why}")
        for other in info.conflicts:
            if other in wanted:
                raise Unsupported(f"techniques.{name} and techniques.{other} cannot be combined; "
                                  "enable only one of them")


def apply_all(state: TrainState) -> list[dict]:
    """Apply every enabled technique in registry.STAGES order; return what each one did."""
    wanted = enabled_techniques(state.config)
    order = [info for info in registry.all_techniques() if info.name in wanted]
    applied = []
    for info in order:
        params = wanted[info.name]
        report = implementation(info.name).apply(state, params)
        state.active[info.name] = params
        state.reports[info.name] = report
        applied.append({"name": info.name, "label": info.label, "params": params, "report": report})
    return applied


def change(state: TrainState, name: str, params: dict) -> str:
    """Apply a mid-run `set`; returns what changed, raises Refused with the reason otherwise."""
    try:
        info = registry.get(name)
    except registry.UnknownTechnique as exc:
        raise Refused(str(exc)) from None
    try:
        checked = registry.validate_params(name, params, runtime=True)
    except ValueError as exc:
        raise Refused(str(exc)) from None
    requested = set(params)
    allowed = set(info.mid_run)
    if not requested <= allowed or not allowed:
        fixed = ", ".join(sorted(requested - allowed)) or name
        raise Refused(f"{info.label}: {fixed} cannot change while a run goes; restart the run "
                      "with the change")
    enabled = checked.pop("enabled", True)
    current = state.active.get(name)
    module = implementation(name)
    if not enabled:
        if current is None:
            return f"{info.label} was already off"
        report = module.remove(state)
        state.active.pop(name, None)
        return report
    new_params = {**(current or info.defaults()), **{k: v for k, v in checked.items() if k in params}}
    why = registry.unavailable_reason(info, new_params, state.caps)
    if why:
        raise Refused(f"{info.label}: {why}")
    for other in info.conflicts:
        if other in state.active:
            raise Refused(f"{info.label} conflicts with {registry.get(other).label}; switch that off first")
    report = module.change(state, new_params) if current is not None else module.apply(state, new_params)
    state.active[name] = new_params
    return report


class Refused(ValueError):
    """A mid-run change that cannot apply; the text says why."""
