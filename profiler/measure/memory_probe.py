"""What a training step holds in memory, measured from the tensors themselves: the bytes autograd
saves for backward, the gradients and the optimizer state.

Process RSS and the CUDA allocator's peaks mix these with caches and fragmentation, so a
technique that acts on one of them (checkpointing on the saved activations, LoRA on the
gradients, an 8-bit optimizer on its state) can look as if it changed nothing; these figures show
the part it acts on. The train and distill workloads measure them on one untimed probe
forward/backward after warmup (never on a timed step); `effiscope doctor` uses saved_bytes.
The optimizer's state is counted where it lives, techniques.optimizer.state_bytes (each storage
once, a quantized state by its real storage), which the train and distill summaries read
beside these figures (their probes' optimizer_state_bytes) and profiler.figures.theory predicts
(techniques.optimizer.predicted_state_bytes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from techniques.runtime import local, local_bytes

if TYPE_CHECKING:
    from techniques import runtime


def _storage_ptr(tensor: torch.Tensor) -> int:
    return local(tensor).untyped_storage().data_ptr()


def saved_for_backward(model: torch.nn.Module, forward: Callable[[], Any]) -> tuple[int, Any]:
    """Bytes autograd saves for backward while forward() runs, as saved_tensors_hooks see them:
    each storage counted once (q, k, v are views of one), the parameters' storages left out;
    returns (bytes, what forward returned). Run its backward after this returns: the
    recomputation of checkpointed blocks in backward is not a saved tensor.

    The parameters are read again at each saved tensor: FSDP2 swaps a module's sharded
    parameters for all-gathered ones while it runs, and those are weights (freed or kept by
    FSDP's resharding), not activations."""
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = local(tensor).untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in saved and ptr not in {_storage_ptr(p) for p in model.parameters()}:
            saved[ptr] = storage.nbytes()  # q, k, v and other views of one storage: read once
        return tensor  # kept alive by the graph until backward, so no address is reused

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = forward()
    return sum(saved.values()), result


def saved_bytes(state: runtime.TrainState, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes autograd saves for backward in one forward of the state's model on (x, y), in its
    step context (autocast, SDPA backends); the graph is dropped without a backward."""
    def forward() -> torch.Tensor:
        with state.step_context():
            return state.forward_model(x, y)[1]

    nbytes, loss = saved_for_backward(state.model, forward)
    del loss
    return nbytes


def gradient_bytes(model: torch.nn.Module) -> int:
    """Bytes of the gradients the parameters hold now (frozen parameters hold none)."""
    return sum(local_bytes(p.grad) for p in model.parameters() if p.grad is not None)


def probe_step(state: runtime.TrainState, loss_of: Callable[[torch.Tensor, torch.Tensor],
               torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> dict[str, int]:
    """One untimed forward/backward of a micro-batch, as the workload's step runs it (loss_of(x,
    y)[0] is the loss): the bytes saved for backward and the gradients it leaves. The optimizer
    does not step, the gradients are set to None afterwards and the random state is restored,
    so the training that follows is the one it would have been without the probe."""
    devices = [state.device] if state.device.type == "cuda" else []
    state.optimizer.zero_grad(set_to_none=True)
    with torch.random.fork_rng(devices=devices, device_type=state.device.type):
        saved, parts = saved_for_backward(state.model, lambda: loss_of(x, y))
        parts[0].backward()
        del parts
        grads = gradient_bytes(state.model)
    state.optimizer.zero_grad(set_to_none=True)
    return {"saved_for_backward_bytes": saved, "gradient_bytes": grads}
