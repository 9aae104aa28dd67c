"""The fake-tensor tools the memory trace (profiler/engine/memory_trace.py) runs with (imports
torch): PyTorch's MemTracker kept per phase, parameters turned from meta into fake tensors,
the bytes saved for backward counted as the memory probe counts them, numbers read from fake
tensors, transformers' eager choices, and torch.distributed's fake process group for FSDP.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from profiler.errors import Unsupported
from techniques import runtime


class Untraceable(Unsupported):
    """A model or technique the fake trace cannot run; the text says which and what to do."""


# MemTracker's categories (its enums' values), by the part of the answer they belong to.
CATEGORY = {
    "Parameter": "weights", "Sharded Param": "weights", "Buffer": "buffers",
    "Unsharded Param": "gathered_weights", "All Gather": "gathered_weights",
    "Gradient": "gradients", "Sharded Grad": "gradients", "Unsharded Grad": "gradients",
    "Reduce Scatter": "gradients", "Activation": "activations", "Temp": "temporaries",
    "Optstate": "optimizer_states", "OptState": "optimizer_states", "Other": "inputs",
    "Inputs": "inputs",
}


# --- the tracker ----------------------------------------------------------------------------
def phase_tracker(base: type) -> type:
    class PhaseTracker(base):
        """The tracker with the device's peak kept per phase (forward, backward, optimizer step;
        prefill, decode): its own per-module peaks are skipped (on an 8B model they made the
        trace five times slower, and nothing here reads them)."""

        phase: str | None = None
        """Set for an inference trace; a training trace reads the phase from the tracker."""

        def _update_peak_stats(self, peak_state: Any) -> None:
            phase = self.phase or self._phase_now()
            self.last_phase = phase
            peaks = self.__dict__.setdefault("phase_peaks", {})
            for device, snap in self._curr_mem_snap.items():
                total = snap["Total"]
                if total > self._peak_mem.get(device, 0):
                    self._peak_mem[device] = total
                best = peaks.get(phase)
                if best is None or total > best["Total"]:
                    peaks[phase] = dict(snap)

        def _phase_now(self) -> str:
            """The optimizer's step, backward, a module's forward; an op outside all three (the
            loss scaled, a total kept) belongs to the phase before it."""
            if self._in_opt:
                return "optimizer step"
            if self._mod_tracker.is_bw:
                return "backward"
            inside = len(self._mod_tracker.parents) > 1  # "Global" is always there
            return "forward" if inside else getattr(self, "last_phase", "forward")

        def _track_module_params_and_buffers(self, module: Any,
                                             install_grad_hooks: bool = True) -> tuple[int, int]:
            """PyTorch's, with frozen parameters (LoRA's base weights) given no gradient hook:
            registering one on a tensor that needs no gradient raises."""
            if install_grad_hooks:
                for param in module.parameters():
                    if not param.requires_grad and param not in self._param_to_grad_hook_handles:
                        self._param_to_grad_hook_handles[param] = (NO_HOOK, NO_HOOK)
            return super()._track_module_params_and_buffers(module, install_grad_hooks)

        def now(self) -> dict[str, int]:
            """The bytes held now, by part (all devices together)."""
            return parts(next(iter(self._curr_mem_snap.values()), {}))

    return PhaseTracker


class NoHook:
    """The handle of a hook never registered (the tracker removes every handle at its exit)."""

    def remove(self) -> None:
        return None


NO_HOOK = NoHook()


def parts(snapshot: dict) -> dict[str, int]:
    parts: dict[str, int] = {}
    for key, value in snapshot.items():
        name = getattr(key, "value", key)
        if name == "Total":
            continue
        part = CATEGORY.get(name, "temporaries")
        parts[part] = parts.get(part, 0) + int(value)
    return parts


class OneReads(torch.utils._python_dispatch.TorchDispatchMode):
    """A number read from a fake tensor (`.item()`, `float()`) is 1 (an optimizer's step count,
    the norm to clip by), a truth value True (transformers asks whether a padding mask is all
    ones, as an unpadded batch's is: True lets it skip the mask as the eager run does)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            dtype = args[0].dtype
            return True if dtype == torch.bool else 1.0 if dtype.is_floating_point else 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def eager_decisions():
    """transformers' masking takes the traced (compiled / exported) path for a fake tensor: it
    keeps a full causal mask that SDPA saves and repeats grouped keys and values, where the eager
    run on real tensors skips the mask and lets SDPA group them (65 KiB of 780 KiB more on a
    2-layer Llama). For the length of a trace its tracing test sees compile and jit only, so the
    trace makes the eager run's choices."""
    import sys

    masking = sys.modules.get("transformers.masking_utils")
    if masking is None or not hasattr(masking, "is_tracing"):
        yield
        return
    from transformers.utils.import_utils import is_jit_tracing, is_torchdynamo_compiling

    original = masking.is_tracing
    masking.is_tracing = lambda tensor=None: is_torchdynamo_compiling() or is_jit_tracing()
    try:
        yield
    finally:
        masking.is_tracing = original


# --- building the model ---------------------------------------------------------------------
def fake_from_meta(model: torch.nn.Module, device: str) -> None:
    """Every parameter, buffer and tensor attribute on the meta device replaced by a fake tensor
    of the same shape, strides and dtype on `device` (the caller is in FakeTensorMode); a tensor
    shared by two modules (a tied head) stays one."""
    made: dict[int, torch.Tensor] = {}
    kept: list[torch.Tensor] = []  # the originals stay alive: their ids are the memo's keys

    def fake(tensor: torch.Tensor) -> torch.Tensor:
        if id(tensor) not in made:
            kept.append(tensor)
            new = torch.empty_strided(tensor.size(), tensor.stride(), dtype=tensor.dtype,
                                      device=device)
            if isinstance(tensor, torch.nn.Parameter):
                new = torch.nn.Parameter(new, requires_grad=tensor.requires_grad)
            made[id(tensor)] = new
        return made[id(tensor)]

    for module in model.modules():
        for table in (module._parameters, module._buffers):
            for name, tensor in list(table.items()):
                if tensor is not None and tensor.device.type == "meta":
                    table[name] = fake(tensor)
        for name, value in list(vars(module).items()):
            if isinstance(value, torch.Tensor) and value.device.type == "meta":
                setattr(module, name, fake(value))


class SavedForBackward(torch.autograd.graph.saved_tensors_hooks):
    """The bytes autograd saves for backward in one forward, counted as the memory probe counts
    them (profiler.measure.memory_probe.saved_for_backward: each storage once, parameters' left
    out), keyed by storage identity because a fake tensor has no data pointer. The tracker's
    activations are everything the forward left alive (its output and loss too): the peak uses
    those; this is the figure a run's probe measures, for the cross-check."""

    def __init__(self, model: torch.nn.Module):
        self.sizes: dict[int, int] = {}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            key = storage_key(tensor)
            # read again each time: FSDP swaps in all-gathered parameters while a module runs
            if key not in self.sizes and key not in {storage_key(p) for p in model.parameters()}:
                self.sizes.setdefault(key, runtime.local(tensor).untyped_storage().nbytes())
            return tensor

        super().__init__(pack, lambda tensor: tensor)

    def nbytes(self) -> int:
        return sum(self.sizes.values())


def storage_key(tensor: torch.Tensor) -> int:
    return runtime.local(tensor).untyped_storage()._cdata


class FakeProcessGroup:
    """torch.distributed's fake backend for the length of a trace: collectives that move no
    data, so FSDP shards and gathers as it would over `world` processes."""

    def __init__(self, world: int):
        self.world = world
        self.started = False

    def __enter__(self) -> FakeProcessGroup:
        import torch.distributed as dist
        from torch.testing._internal.distributed.fake_pg import FakeStore

        if dist.is_initialized():
            raise Untraceable("FSDP cannot be traced inside a process that already runs a "
                              "distributed job; estimate from the command line")
        dist.init_process_group("fake", rank=0, world_size=self.world, store=FakeStore())
        self.started = True
        return self

    def __exit__(self, *exc: object) -> None:
        import torch.distributed as dist

        if self.started:
            dist.destroy_process_group()


def fake_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode(allow_non_fake_inputs=True)


class Batches:
    """The step's micro-batches: fake token ids made before the tracker starts (tracked as
    inputs); each next() after the first tells the tracker a new micro-batch begins."""

    def __init__(self, tracker: Any, x: torch.Tensor, y: torch.Tensor):
        self.tracker, self.x, self.y, self.calls = tracker, x, y, 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.calls:
            self.tracker.reset_mod_stats()  # the model is called again: not a second iteration
        self.calls += 1
        return self.x, self.y


def tracker(sharded: bool, model: torch.nn.Module, optimizer: Any, *inputs: torch.Tensor):
    """PyTorch's tracker (FSDP's under FSDP), with the model, optimizer and inputs made before it
    started registered."""
    if sharded:
        from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker

        tracker = phase_tracker(FSDPMemTracker)(model, optimizer)
        tracker.track_inputs(inputs)
        return tracker
    from torch.distributed._tools.mem_tracker import MemTracker

    tracker = phase_tracker(MemTracker)()
    tracker.track_external(model, *([optimizer] if optimizer is not None else []), *inputs)
    return tracker
