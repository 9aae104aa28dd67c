"""torch.compile: traces the model into fused kernels; the first steps pay for compilation."""

from __future__ import annotations

from collections.abc import Callable

from techniques.registry import Param, TechniqueInfo, TechniqueParams, register

MODES = ("default", "reduce-overhead", "max-autotune")

INFO = TechniqueInfo(
    name="compile",
    label="torch.compile",
    category="speed",
    stage="compile",
    summary="Compiles the model with TorchInductor: fewer, fused kernels per step after a "
            "one-time compile (tens of seconds; excluded from throughput, reported on its own).",
    source="Ansel et al. 2024 (PyTorch 2)",
    params=(Param("mode", str, "default", "Compile mode (reduce-overhead adds CUDA graphs)", choices=MODES),),
    requires=("compiler",),
)


CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")
"""Modes in which inductor records CUDA graphs (max-autotune turns them on as well)."""


class CudaGraphForward:
    """The compiled model under a CUDA-graph mode. Its outputs live in the graph's static memory,
    which the next replay overwrites, so a loss kept across micro-steps (accumulation sums them)
    would silently read a later one. Each call therefore first marks a new step for cudagraph
    trees (torch.compiler.cudagraph_mark_step_begin, "before each model invocation": the earlier
    outputs may be reused) and returns the loss cloned out of the graph's memory. The logits are
    not cloned: every loop reads them within the micro-step, and a clone would double the
    largest activation."""

    def __init__(self, compiled: Callable, mark: Callable[[], None]):
        self.compiled, self.mark = compiled, mark

    def __call__(self, *args, **kwargs):
        self.mark()
        out = self.compiled(*args, **kwargs)
        if isinstance(out, tuple) and len(out) == 2 and out[1] is not None:
            return out[0], out[1].clone()
        return out


def compiled_forward(module, options: dict) -> Callable:
    """torch.compile(module, **options), behind CudaGraphForward when the mode records CUDA
    graphs; the one way the engine compiles what the loop calls (ddp compiles its wrapper here)."""
    import torch

    compiled = torch.compile(module, **options)
    if options.get("mode") not in CUDAGRAPH_MODES:
        return compiled
    mark = getattr(getattr(torch, "compiler", None), "cudagraph_mark_step_begin", None)
    return CudaGraphForward(compiled, mark or (lambda: None))


def keep_gradients_apart(state) -> int:
    """Under CUDA graphs the backward's gradients live in the graph's memory too, and autograd
    adopts the first micro-step's as the parameter's .grad without a copy, so the next replay
    overwrites it before the second micro-step adds to it (PyTorch issues 96693, 169545: the
    accumulated gradient silently loses micro-steps, or the run fails). A hook on each trainable
    parameter copies its gradient out of the graph's memory while steps accumulate (micro_batches
    is read at each call: accumulation can change mid-run); without accumulation the optimizer
    consumes .grad before the next replay and nothing is copied. Returns the hooked parameters."""
    def own_copy(grad):
        return grad.clone() if state.micro_batches > 1 else grad

    params = [p for p in state.model.parameters() if p.requires_grad]
    for param in params:
        param.register_hook(own_copy)
    return len(params)


def apply(state, params: TechniqueParams) -> str:
    state.compile_options = {"mode": params.mode}
    state.forward_model = compiled_forward(state.model, state.compile_options)
    state.compiled = True
    text = (f"torch.compile(mode={params.mode!r}); compilation happens in the first steps, "
            "which are reported as compile time and left out of throughput")
    if params.mode in CUDAGRAPH_MODES:
        hooked = keep_gradients_apart(state)
        text += ("; CUDA graphs: each model call marks a new cudagraph step, the loss is cloned "
                 f"out of the graph's memory and, while steps accumulate, so are the gradients "
                 f"of {hooked} parameters, so every micro-step keeps its own")
    return text


FORWARD_ONLY = ("infer", "compress")
"""Workloads that apply no compile stage (registry.INFER_STAGES): they run eager."""


def eager_formats(in_force: dict[str, TechniqueParams], workload: str) -> list[str]:
    """The torchao formats in force that are slower than their baseline without torch.compile,
    when the run does not compile (else []). int8 weight-only dequantizes the whole weight in
    every call and fp8 training casts and scales tensors op by op: both pay off only once
    torch.compile fuses those steps into the matmul. (int4 weight-only runs its own fused
    tinygemm kernel, eager or not.)"""
    if "compile" in in_force and workload not in FORWARD_ONLY:
        return []
    slow = []
    quantized = in_force.get("quantize_weight_only")
    if quantized is not None and quantized.bits == 8:
        slow.append("int8 weight-only")
    if "float8_training" in in_force:
        slow.append("fp8 training")
    return slow


def eager_note(in_force: dict[str, TechniqueParams], workload: str) -> str | None:
    """The warning a run gets for eager_formats, or None."""
    slow = eager_formats(in_force, workload)
    if not slow:
        return None
    fix = ("this workload runs eager, so read its speed as the eager cost"
           if workload in FORWARD_ONLY else "add [techniques.compile] to measure the fast path")
    return (f"eager mode: {' and '.join(slow)} runs slower than its baseline without "
            "torch.compile (torchao dequantizes or casts in every call, which only compile "
            f"fuses into the matmul); {fix}")


def eager_how(in_force: dict[str, TechniqueParams], workload: str) -> str:
    """What a timed figure's how-text adds for eager_formats ("" when none)."""
    slow = eager_formats(in_force, workload)
    return f"; eager: {' and '.join(slow)} without torch.compile" if slow else ""


register(INFO, apply=apply)
