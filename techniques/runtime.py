"""The one technique engine (imports torch): the state techniques act on, and check / apply /
change / finalize for every workload.

Every switch has a null object as its "off" state — autocast disabled, a GradScaler with
enabled=False, one micro-batch, a constant schedule, gradients synchronised on every backward —
so the loops have no branches for techniques: they ask the state, and the state answers with the
right object.

Order: techniques apply in registry.STAGES order. Inside the compress stage they follow
COMPRESSION_ORDER (why: pruning ranks float weights; masks are folded in — after an optional
fine-tune — before any format change; a cast precedes weight-only quantization, which wants
bf16; int8 dynamic replaces the Linear modules last; last of all, a technique's
`after_formats` stores its weights in a sparse form that needs their final dtype — the 2:4
compressed form, whose kernels take fp16 / bf16, not fp32). A workload that trains keeps the
pruning masks through training (they hold pruned weights at zero) and folds them in `finalize`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from profiler.errors import Unsupported
from techniques import registry
from techniques.params import TechniqueParams


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
    compile_options: dict = field(default_factory=dict)
    """torch.compile's keyword arguments, for a wrapper that must be compiled again (DDP)."""
    grad_sync: Callable[[bool], contextlib.AbstractContextManager] = \
        lambda sync: contextlib.nullcontext()
    """grad_sync(sync) wraps one micro-batch's backward: sync=False on all but the last
    micro-batch of a step, so a parallel wrapper reduces gradients once per optimizer step."""
    dist: Any = None
    """The torchrun job (profiler.engine.distributed.DistContext) or None."""
    warn: Callable[[str], None] = print
    calibration: Callable[[int], list] | None = None
    """calibration(n) -> n batches of input token ids (LongTensor [batch, seq]) from the run's
    training text, for techniques that look at activations (e.g. activation-aware pruning);
    None when the workload has no text."""
    active: dict[str, TechniqueParams] = field(default_factory=dict)
    """Technique name -> parameters currently in force."""
    reports: dict[str, str] = field(default_factory=dict)
    finalized: set[str] = field(default_factory=set)
    """Techniques whose finalize() ran (pruning masks folded in)."""
    formatted: set[str] = field(default_factory=set)
    """Techniques whose after_formats() ran (weights in a sparse form made after the cast)."""

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
        """Clip to grad_clip_norm and return the pre-clip global norm; None when clipping is off.

        Under FSDP2 the gradients are DTensor shards and the norm torch computes over them is a
        partial (each rank's shards only): it is reduced over the job (`full_tensor`) before it
        clips or is reported, so every rank clips by, and reports, the whole model's norm."""
        if not self.grad_clip_norm:
            return None
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        utils = torch.nn.utils
        if hasattr(utils, "get_total_norm"):  # torch 2.6+: the norm, then the clip by it
            norm = whole_norm(utils.get_total_norm([p.grad for p in params], 2.0))
            utils.clip_grads_with_norm_(params, self.grad_clip_norm, norm)
        else:
            norm = whole_norm(utils.clip_grad_norm_(params, self.grad_clip_norm))
        return float(norm)

    def learning_rate(self, step: int) -> float:
        return self.base_lr * self.lr_factor(step)

    @classmethod
    def plain(cls, model: torch.nn.Module, device: torch.device | str = "cpu",
              config: Any = None) -> TrainState:
        """A state with no technique in force, for measuring a model as it is."""
        return cls(config=config, device=torch.device(device), caps={}, model=model)

    def fork(self, model: torch.nn.Module) -> TrainState:
        """The same techniques in force (autocast, SDPA backend) for another model, e.g. the
        compressed copy measured beside its original."""
        return dataclasses.replace(self, model=model, forward_model=model, optimizer=None,
                                   active=dict(self.active), reports=dict(self.reports),
                                   finalized=set(self.finalized),
                                   formatted=set(self.formatted), compiled=False)


def whole_norm(norm: torch.Tensor) -> torch.Tensor:
    """A norm over sharded (DTensor) gradients reduced over every rank; a plain tensor as is."""
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def make_scaler(device: torch.device, enabled: bool, sharded: bool = False):
    """A GradScaler; disabled it passes losses and steps through unchanged (the null object).

    sharded (FSDP): ShardedGradScaler, which all-reduces "found an inf" over the job, so that
    every rank skips the same steps and lowers its scale alike; a plain scaler would let one
    rank step on a shard the others skipped."""
    if sharded and enabled:
        from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

        return ShardedGradScaler(device.type, enabled=True)
    try:
        return torch.amp.GradScaler(device.type, enabled=enabled)
    except (AttributeError, TypeError):  # torch < 2.3
        return torch.cuda.amp.GradScaler(enabled=enabled and device.type == "cuda")


def refresh_scaler(state: TrainState) -> None:
    """The one rule for the loss scaler, after any technique that bears on it changes: on when
    fp16 is computed (fp16 autocast, or FSDP's fp16 parameter policy), sharded under FSDP."""
    fsdp = state.active.get("fsdp")
    fp16 = (state.autocast_dtype == torch.float16
            or (fsdp is not None and fsdp.mixed_precision == "fp16"))
    state.scaler = make_scaler(state.device, enabled=fp16, sharded=fsdp is not None)


def hooks(name: str) -> registry.Hooks:
    """A technique's code, as the contract checked at its registration (registry.Hooks)."""
    return registry.hooks(name)


# The compress stage's own order (see the module docstring for why): pruners (techniques that
# leave masks for finalize() to fold in), then other compression, then format changes.
PRUNE_ORDER = ("prune_structured", "prune_magnitude", "prune_semi_structured")
FORMAT_ORDER = ("weight_cast", "quantize_weight_only", "quantize_int8_dynamic")


def is_pruner(name: str) -> bool:
    info = registry.get(name)
    return info.stage == "compress" and name not in FORMAT_ORDER and hooks(name).folds_masks


def order_key(info: registry.TechniqueInfo) -> tuple:
    """Sort key: STAGES order; inside compress, pruning, then other compression, then formats."""
    stage = registry.STAGES.index(info.stage)
    if info.stage != "compress":
        return (stage, 0, 0, info.name)
    if is_pruner(info.name):
        rank = PRUNE_ORDER.index(info.name) if info.name in PRUNE_ORDER else len(PRUNE_ORDER)
        return (stage, 0, rank, info.name)
    if info.name in FORMAT_ORDER:
        return (stage, 2, FORMAT_ORDER.index(info.name), info.name)
    return (stage, 1, 0, info.name)


def enabled_techniques(config: Any) -> dict[str, TechniqueParams]:
    """Config techniques plus the always-on ones, with defaults filled and values checked."""
    return registry.in_force(config.techniques)


def plan(config: Any, caps: dict, stages: tuple[str, ...] = registry.STAGES,
         warn: Callable[[str], None] | None = None) -> dict[str, TechniqueParams]:
    """The techniques this run applies, checked before any work: Unsupported says what this
    machine cannot do or what conflicts. Techniques of other stages than `stages` (training
    techniques in an inference workload) are left out, with a warning for those the config
    named."""
    wanted = {}
    for name, params in enabled_techniques(config).items():
        info = registry.get(name)
        if info.stage not in stages:
            if warn is not None and name in config.techniques:
                warn(f"techniques.{name} acts on training and is ignored by the "
                     f"{config.workload} workload")
            continue
        wanted[name] = params
    for name, params in wanted.items():
        info = registry.get(name)
        why = registry.unavailable_reason(info, params, caps)
        if why:
            raise Unsupported(f"techniques.{name}: {why}")
        for other in info.conflicts:
            if other in wanted:
                raise Unsupported(f"techniques.{name} and techniques.{other} cannot be combined; "
                                  "enable only one of them")
    problem = registry.rule_problem(run_facts(config, caps, wanted))
    if problem is not None:
        raise Unsupported(f"techniques.{problem[0]}: {problem[1]}")
    return wanted


def run_facts(config: Any, caps: dict, techniques: dict[str, TechniqueParams]) -> registry.RunFacts:
    """The rules' facts of this run as the engine knows them: the config, the techniques in
    force, and the job's size and model kind from the machine's capabilities (the model's layer
    widths were judged at validation)."""
    return registry.run_facts(config, techniques, world_size=caps.get("world_size", 1),
                              model_kind=caps.get("model_kind"))


def check_all(config: Any, caps: dict) -> None:
    """Refuse, before the run, anything this machine cannot do or that conflicts."""
    plan(config, caps)


def _record(state: TrainState, name: str, params: TechniqueParams, report: str) -> dict:
    state.active[name] = params
    state.reports[name] = report
    return _done(name, params, report)


def _done(name: str, params: TechniqueParams, report: str) -> dict:
    """What a technique did, as plain data (the `started` message and the summary carry it)."""
    return {"name": name, "label": registry.get(name).label, "params": params.as_dict(),
            "report": report}


def apply_all(state: TrainState, wanted: dict[str, TechniqueParams] | None = None, *,
              finetune: Callable[[], str] | None = None, keep_masks: bool = False) -> list[dict]:
    """Apply `wanted` (default: every enabled technique) in the engine's order; return what each
    step did as {name, label, params, report}.

    Pruning masks are folded in before the first format change; otherwise at the end of the
    compress stage, after `finetune` (a callable that trains the pruned model and says what it
    did) — unless keep_masks (a training workload), which leaves them to `finalize`.
    """
    if wanted is None:
        wanted = plan(state.config, state.caps)
    wanted = {name: registry.validate_params(name, params) for name, params in wanted.items()}
    order = sorted((registry.get(name) for name in wanted), key=order_key)
    applied: list[dict] = []
    convert = getattr(state.model, "convert_conv1d", None)  # HF GPT-2: Conv1D -> nn.Linear
    if convert is not None and any(info.stage == "compress" for info in order):
        if count := convert():
            applied.append({"name": "conv1d_to_linear", "label": "GPT-2 Conv1D as nn.Linear",
                            "params": {}, "report": f"{count} Conv1D layers of the blocks "
                            "replaced by nn.Linear with the transposed weight (the same math), "
                            "so the techniques below can act on them"})
    pending: list[str] = []  # pruners whose masks are not folded in yet

    def fold() -> None:
        if finetune is not None and pending:
            applied.append({"name": "finetune", "label": "Fine-tuning after pruning",
                            "params": {}, "report": finetune()})
        for name in pending:
            applied.append(_finalize_one(state, name))
        pending.clear()

    def after_formats() -> None:  # the compress stage is over: weights have their final dtype
        applied.extend(_after_formats(state, [info.name for info in order]))

    for info in order:
        leaving_pruning = pending and not is_pruner(info.name)
        if leaving_pruning and (info.name in FORMAT_ORDER or not keep_masks):
            fold()
        if info.stage != "compress":
            after_formats()
        report = hooks(info.name).apply(state, wanted[info.name])
        applied.append(_record(state, info.name, wanted[info.name], report))
        if is_pruner(info.name):
            pending.append(info.name)
    if pending and not keep_masks:
        fold()
    after_formats()
    return applied


def _after_formats(state: TrainState, names: list[str]) -> list[dict]:
    """Run after_formats() of these techniques whose masks are folded in and whose after_formats
    has not run yet (once each: a technique still holding masks gets it in `finalize`)."""
    out = []
    for name in names:
        hook = hooks(name).after_formats
        if hook is None or name not in state.finalized or name in state.formatted:
            continue
        state.formatted.add(name)
        out.append(_done(name, state.active[name], hook(state, state.active[name])))
    return out


def _finalize_one(state: TrainState, name: str) -> dict:
    fold = hooks(name).finalize
    assert fold is not None, f"{name} has no finalize"  # callers ask folds_masks first
    report = fold(state, state.active[name])
    state.finalized.add(name)
    return _done(name, state.active[name], report)


def finalize(state: TrainState) -> list[dict]:
    """Every workload's last step: techniques with a finalize() that has not run yet (pruning
    masks kept through training) finish now, before weights are measured or saved."""
    done = [_finalize_one(state, name) for name in list(state.active)
            if name not in state.finalized and hooks(name).folds_masks]
    return done + _after_formats(state, list(state.active))


def weight_saver(state: TrainState) -> Callable | None:
    """The save(state, steps, emit) of an active technique that must write the weights its own
    way (LoRA: the adapter, and the merged weights), or None for the one plain save path."""
    for name in state.active:
        save = hooks(name).save
        if save is not None:
            return save
    return None


def change(state: TrainState, name: str, params: dict) -> str:
    """Apply a mid-run `set` (its plain parameters, as they came over the wire); returns what
    changed, raises Refused with the reason otherwise."""
    try:
        info = registry.get(name)
    except registry.UnknownTechnique as exc:
        raise Refused(str(exc)) from None
    try:
        enabled, changes = registry.validate_change(name, params)
    except ValueError as exc:
        raise Refused(str(exc)) from None
    requested = set(params)
    allowed = set(info.mid_run)
    if not requested <= allowed or not allowed:
        fixed = ", ".join(sorted(requested - allowed)) or name
        raise Refused(f"{info.label}: {fixed} cannot change while a run goes; restart the run "
                      "with the change")
    current = state.active.get(name)
    code = hooks(name)  # registration checked: mid_run's entries have their change / remove
    if not enabled:
        if current is None:
            return f"{info.label} was already off"
        _refuse_combination(state, {n: p for n, p in state.active.items() if n != name})
        report = code.remove(state)
        state.active.pop(name, None)
        return report
    base = current if current is not None else registry.validate_params(name, {})
    new_params = base.replace(**changes)
    why = registry.unavailable_reason(info, new_params, state.caps)
    if why:
        raise Refused(f"{info.label}: {why}")
    for other in info.conflicts:
        if other in state.active:
            raise Refused(f"{info.label} conflicts with {registry.get(other).label}; switch that off first")
    _refuse_combination(state, {**state.active, name: new_params})
    report = code.change(state, new_params) if current is not None else code.apply(state, new_params)
    state.active[name] = new_params
    return report


class Refused(ValueError):
    """A mid-run change that cannot apply; the text says why."""


def _refuse_combination(state: TrainState, after: dict[str, TechniqueParams]) -> None:
    """Refuse a mid-run change that would leave techniques that cannot run together (flash
    attention once autocast is switched off): the rules the plan and validation ask."""
    if getattr(state.config, "workload", None) is None:  # a bare state measures a model as is
        return
    problem = registry.rule_problem(run_facts(state.config, state.caps, after))
    if problem is not None:
        raise Refused(f"techniques.{problem[0]}: {problem[1]}; the run goes on as it was")


def local(tensor: torch.Tensor) -> torch.Tensor:
    """The part of a tensor this process holds: a sharded DTensor's local shard, else itself."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def local_bytes(tensor: torch.Tensor) -> int:
    """Bytes of a tensor this process holds (a sharded DTensor: its local shard)."""
    part = local(tensor)
    return part.numel() * part.element_size()
