"""Optimizer: SGD with momentum, Adam, or AdamW (decoupled weight decay), in the fastest
implementation the installed torch offers for this device (detected, not guessed)."""

from __future__ import annotations

from techniques.registry import Param, TechniqueInfo, TechniqueParams, register

ALGORITHMS = ("adamw", "adam", "sgd")
IMPLEMENTATIONS = ("auto", "for-loop", "foreach", "fused")
STATES_PER_PARAM = {"adamw": 2, "adam": 2, "sgd": 1}
"""State tensors (each the size of the weights) the optimizer keeps per parameter; SGD keeps
its one only with momentum. profiler.figures.theory reads it from the registry entry's `extra`."""


def _check(params: TechniqueParams, caps: dict) -> str | None:
    if params.implementation == "fused" and params.algorithm not in caps.get("fused", []):
        return (f"this torch build has no fused {params.algorithm} for this device; choose "
                "implementation = auto or foreach")
    return None


INFO = TechniqueInfo(
    name="optimizer",
    label="Optimizer",
    category="optimizer",
    stage="optimizer",
    summary="Updates the weights. AdamW keeps 2 fp32 states per parameter (8 bytes each); SGD "
            "with momentum 1; fused / foreach kernels cut optimizer time.",
    source="Loshchilov & Hutter 2019 (AdamW); Kingma & Ba 2015 (Adam)",
    params=(
        Param("algorithm", str, "adamw", "Update rule", choices=ALGORITHMS),
        Param("implementation", str, "auto", "Kernel: one loop per tensor, multi-tensor foreach, "
              "or one fused kernel", choices=IMPLEMENTATIONS),
        Param("momentum", float, 0.9, "SGD momentum (0 = plain SGD, no state)", min=0.0, max=0.999),
    ),
    runtime_params=(Param("learning_rate", float, 1e-3, "New peak learning rate", min=1e-8, max=10.0),),
    mid_run=("learning_rate",),
    always_on=True,
    check=_check,
    extra={"acts_on": ("optimizer_state_bytes",), "states_per_param": STATES_PER_PARAM},
)


KERNELS = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}
MEASURED_ELEMENTS = 1_000_000
"""`auto` on a CPU times the kernels on copies of at most this many parameter elements."""


def _kernel_options(state, algorithm: str, choice: str) -> tuple[dict, str, str]:
    """(torch kwargs, kernel, why) for `implementation = choice`; `why` explains an auto pick."""
    if choice != "auto":
        return KERNELS[choice], choice, ""
    if algorithm not in state.caps.get("fused", []):
        return KERNELS["foreach"], "foreach", f"auto: this torch has no fused {algorithm} here"
    if state.device.type == "cuda":
        return KERNELS["fused"], "fused", "auto: fused, one kernel for all tensors on CUDA"
    if getattr(getattr(state, "dist", None), "enabled", False):
        return KERNELS["foreach"], "foreach", ("auto: foreach on every rank of the job (each "
                                               "rank timing its own could pick differently)")
    # On a CPU neither is faster everywhere (fused kernels are new there): time both.
    times, elements = _time_kernels(state, algorithm, ("foreach", "fused"))
    chosen = min(times, key=times.get)
    other = "fused" if chosen == "foreach" else "foreach"
    return KERNELS[chosen], chosen, (
        f"auto: {chosen} took {times[chosen] * 1e3:.3g} ms per update against {other} "
        f"{times[other] * 1e3:.3g} ms, median of 5 updates each on copies of {elements:,} "
        "parameters")


def _time_kernels(state, algorithm: str, kernels: tuple[str, ...]) -> tuple[dict, int]:
    """Median seconds of one optimizer update per kernel, on copies of (a bounded share of) the
    model's trainable parameters with small random gradients; kernels interleaved round by
    round, so a slower moment of the machine hits both."""
    import statistics
    import time

    import torch

    sample, elements = [], 0
    for param in state.model.parameters():  # whole tensors, the last (or a huge one) cut short
        take = min(param.numel(), MEASURED_ELEMENTS - elements)
        if param.requires_grad and take > 0:
            sample.append(param.detach().flatten()[:take])
            elements += take
    cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}[algorithm]
    extra = {"momentum": 0.9} if algorithm == "sgd" else {}
    optimizers = {}
    for kernel in kernels:
        copies = [torch.nn.Parameter(p.clone()) for p in sample]
        for copy in copies:
            copy.grad = torch.randn_like(copy) * 1e-3
        optimizers[kernel] = cls(copies, lr=1e-4, **extra, **KERNELS[kernel])
        optimizers[kernel].step()  # states allocated, kernels loaded: not timed
    times: dict[str, list[float]] = {kernel: [] for kernel in kernels}
    for round_index in range(5):
        for kernel in (kernels if round_index % 2 == 0 else kernels[::-1]):
            started = time.perf_counter()
            optimizers[kernel].step()
            times[kernel].append(time.perf_counter() - started)
    return {kernel: statistics.median(values) for kernel, values in times.items()}, elements


def apply(state, params: TechniqueParams) -> str:
    import torch

    train = state.config.train
    model = state.model
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    algorithm = params.algorithm
    kernel, chosen, why = _kernel_options(state, algorithm, params.implementation)
    state.base_lr = train.learning_rate
    if algorithm == "sgd":
        groups = [{"params": decay, "weight_decay": 0.0}, {"params": no_decay, "weight_decay": 0.0}]
        opt = torch.optim.SGD(groups, lr=train.learning_rate, momentum=params.momentum, **kernel)
        decay_text = "no weight decay"
    elif algorithm == "adam":
        # Adam's weight_decay is L2 added to the gradient (coupled): the contrast AdamW fixes.
        groups = [{"params": decay, "weight_decay": train.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        opt = torch.optim.Adam(groups, lr=train.learning_rate, betas=(train.beta1, train.beta2),
                               **kernel)
        decay_text = f"L2 penalty {train.weight_decay} in the gradient"
    else:
        groups = [{"params": decay, "weight_decay": train.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=train.learning_rate, betas=(train.beta1, train.beta2),
                                **kernel)
        decay_text = f"decoupled weight decay {train.weight_decay} on {len(decay)} matrices"
    state.optimizer = opt
    states = STATES_PER_PARAM[algorithm] if (algorithm != "sgd" or params.momentum > 0) else 0
    predicted, _ = predicted_state_bytes([p.numel() for p in decay + no_decay], algorithm,
                                         params.momentum)
    state_mb = (predicted or 0) / 2**20
    return (f"{algorithm.upper() if algorithm == 'sgd' else {'adam': 'Adam', 'adamw': 'AdamW'}[algorithm]} "
            f"({chosen}{'; ' + why if why else ''}), lr {train.learning_rate:g}, {decay_text}; "
            f"{states} fp32 state(s) per "
            f"parameter, {state_mb:.1f} MiB of optimizer state")


def change(state, params: TechniqueParams) -> str:
    lr = params.learning_rate
    if lr is None:
        return "nothing changed"
    old = state.base_lr
    state.base_lr = lr
    return f"peak learning rate {old:g} -> {lr:g}"


# --- how many bytes the optimizer's state holds: the one home ----------------------------------
FP32_BYTES = 4


def trained_numels(optimizer) -> list[int]:
    """The size of every tensor the optimizer updates (its param groups): the parameters that
    train, each once, and so the tensors it keeps state for. A sharded (DTensor) parameter
    counts its global size."""
    seen: set[int] = set()
    out = []
    for group in optimizer.param_groups:
        for param in group["params"]:
            if id(param) not in seen:
                seen.add(id(param))
                out.append(int(param.numel()))
    return out


def _storages(value):
    """The plain tensors that hold a state value's data: a tensor subclass (torchao's block-wise
    quantized states: codes, scales, lookup table; a DTensor: its local shard) is unwrapped into
    the tensors it is made of, as PyTorch's own flattening (__tensor_flatten__) lists them."""
    import torch
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    if is_traceable_wrapper_subclass(value):
        names, _ = value.__tensor_flatten__()
        for name in names:
            inner = getattr(value, name)
            if isinstance(inner, torch.Tensor):  # a DTensor also lists its device mesh
                yield from _storages(inner)
    else:
        yield value


def state_bytes(optimizer) -> int:
    """Bytes the optimizer's state holds now, measured from its tensors (after at least one
    step): every storage its state tensors use, each once (views and a lookup table two states
    share count once), the real storage of a quantized state (8-bit codes, not the fp32 size it
    stands for), a sharded state's local part, and the per-tensor `step` counters. The summary
    (optimizer_state_bytes) and the memory probe read this; profiler.figures.theory predicts it with
    predicted_state_bytes."""
    import torch

    seen: dict[tuple[str, int], int] = {}
    for per_param in optimizer.state.values():
        for value in per_param.values():
            if not isinstance(value, torch.Tensor):
                continue
            for part in _storages(value):
                storage = part.untyped_storage()
                if storage.nbytes():
                    seen[(str(part.device), storage.data_ptr())] = storage.nbytes()
    return sum(seen.values())


def predicted_state_bytes(numels: list[int], algorithm: str = "adamw", momentum: float = 0.9,
                          low_bit: dict | None = None) -> tuple[int | None, str]:
    """(bytes, how) the optimizer's state will hold for tensors of these sizes (the ones that
    train), in the layout state_bytes measures: fp32 states (STATES_PER_PARAM a parameter) and
    Adam's fp32 `step` a tensor, or with optimizer_low_bit (torchao) its block-wise quantized
    moments (techniques.optimizer_low_bit.low_bit_state_bytes) and a `step` a tensor. None
    where the layout is not known here (bitsandbytes' 8-bit states)."""
    if low_bit is not None:
        from techniques.optimizer_low_bit import low_bit_adamw_bytes

        if low_bit.get("backend", "torchao") != "torchao":
            return None, ("n/a: bitsandbytes' 8-bit state layout is not predicted (the measured "
                          "figure counts its tensors)")
        bits = int(low_bit.get("bits", 8))
        return (low_bit_adamw_bytes(numels, bits) + FP32_BYTES * len(numels),
                f"AdamW with {bits}-bit block-wise states (torchao) over {len(numels)} trained "
                "tensors, and a 4-byte step each")
    states = 0 if algorithm == "sgd" and momentum == 0 else STATES_PER_PARAM[algorithm]
    steps = FP32_BYTES * len(numels) if algorithm in ("adam", "adamw") else 0
    return (states * sum(numels) * FP32_BYTES + steps,
            f"{states} fp32 state(s) a parameter over {len(numels)} trained tensors"
            + (", and a 4-byte step each" if steps else ""))


register(INFO, apply=apply, change=change)
