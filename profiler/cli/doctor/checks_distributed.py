"""The doctor's distributed checks: DDP and FSDP2 in one process (gloo on a CPU, NCCL on
CUDA) against a plain run, over a world-size-1 process group in the check's own folder."""

from __future__ import annotations

import copy
import time

import torch

from profiler.cli.doctor.base import (
    CheckFailed,
    CheckSpec,
    Context,
    Skip,
    finite,
    make_batches,
    make_state,
    max_rel_diff,
    train,
    train_config,
)


def process_group(ctx: Context, backend: str):
    """A world-size-1 process group over a file store in the check's own folder."""
    import torch.distributed as dist

    if not dist.is_available():
        raise Skip("this torch build has no torch.distributed")
    if dist.is_initialized():
        raise Skip("a process group is already running in this process (torchrun?)")
    if backend == "nccl" and not dist.is_nccl_available():
        raise CheckFailed("this torch build has no NCCL backend")
    path = ctx.workdir / f"store-{backend}-{time.time_ns()}"
    store = dist.FileStore(str(path), 1)
    if ctx.cuda:
        torch.cuda.set_device(ctx.device)
    dist.init_process_group(backend, store=store, rank=0, world_size=1)
    probe = torch.full((4,), 3.0, device=ctx.device)
    dist.all_reduce(probe)
    if not torch.equal(probe, torch.full_like(probe, 3.0)):
        dist.destroy_process_group()
        raise CheckFailed(f"all_reduce over {backend} with one rank changed the tensor")
    return dist


def check_ddp(ctx: Context) -> dict:
    backend = "nccl" if ctx.cuda else "gloo"
    config = train_config(ctx)
    batches = make_batches(ctx, config, 4)
    n = 5
    plain = train(make_state(ctx, config), batches, n)["losses"]
    dist = process_group(ctx, backend)
    try:
        from torch.nn.parallel import DistributedDataParallel

        ddp_config = copy.deepcopy(config)
        ddp_config.techniques = {"ddp": {}}
        state = make_state(ctx, ddp_config, {"dist_backend": backend})
        if not isinstance(state.forward_model, DistributedDataParallel):
            raise CheckFailed("the ddp technique did not wrap the model in DistributedDataParallel")
        losses = train(state, batches, n)["losses"]
    finally:
        dist.destroy_process_group()
    diff = max_rel_diff(losses, plain) if finite(losses) else None
    tolerance = 1e-3 if ctx.cuda else 1e-5
    figures = {"backend": backend, "world_size": 1, "steps": n, "losses": losses,
               "plain_losses": plain, "max_rel_diff_vs_plain": diff, "tolerance": tolerance,
               "report": state.reports.get("ddp")}
    if diff is None or diff > tolerance:
        raise CheckFailed(f"DDP ({backend}, 1 process) losses differ from a plain run by "
                          f"{diff if diff is None else f'{diff:.3g}'}", figures)
    figures["summary"] = f"DDP over {backend}, 1 process: {n} steps equal to a plain run ({diff:.2g})"
    return figures


def check_fsdp(ctx: Context) -> dict:
    """FSDP2 (the fsdp technique, bf16 mixed precision) in one process — NCCL on CUDA, gloo on a
    CPU — against plain bf16 autocast on the same batches."""
    backend = "nccl" if ctx.cuda else "gloo"
    config = train_config(ctx, {"precision": {"dtype": "bf16"}})
    batches = make_batches(ctx, config, 4)
    n = 5
    plain = train(make_state(ctx, config), batches, n)["losses"]
    dist = process_group(ctx, backend)
    try:
        fsdp_config = train_config(ctx, {"fsdp": {"mixed_precision": "bf16"}})
        state = make_state(ctx, fsdp_config, {"dist_backend": backend})
        kinds = {type(p).__name__ for p in state.model.parameters()}
        losses = train(state, batches, n)["losses"]
    finally:
        dist.destroy_process_group()
    diff = max_rel_diff(losses, plain) if finite(losses) else None
    figures = {"backend": backend, "world_size": 1, "parameter_types": sorted(kinds),
               "losses": losses, "autocast_losses": plain, "max_rel_diff": diff,
               "report": state.reports.get("fsdp")}
    if kinds != {"DTensor"}:
        raise CheckFailed(f"fully_shard left parameters of type {sorted(kinds)}, not DTensor",
                          figures)
    if diff is None or diff > 0.05:
        raise CheckFailed(f"FSDP2 losses differ from bf16 autocast by {diff}", figures)
    figures["summary"] = f"FSDP2 over {backend}, 1 process: {n} steps within {diff:.1%} of autocast"
    return figures


CHECKS = [
    CheckSpec("ddp", "DDP in one process (gloo on CPU, NCCL on CUDA)", check_ddp),

    CheckSpec("fsdp", "FSDP2 with bf16 mixed precision in one process (gloo on CPU, NCCL on "
              "CUDA)", check_fsdp),
]
