"""Distributed data parallel: one model replica per process, gradients all-reduced in buckets."""

from __future__ import annotations

import contextlib

from techniques.registry import Param, TechniqueInfo, TechniqueParams, register

INFO = TechniqueInfo(
    name="ddp",
    label="Data parallel (DDP)",
    category="parallel",
    stage="parallel",
    summary="Each process trains a full replica on its own shard of every batch; gradients are "
            "averaged by bucketed all-reduce overlapped with backward. N x throughput at best, "
            "no memory saving.",
    source="Li et al. 2020 (PyTorch Distributed)",
    params=(
        Param("bucket_cap_mb", float, 25.0, "Gradient bucket size for all-reduce (MB)", min=0.1, max=1024.0),
        Param("gradient_as_bucket_view", bool, True, "Gradients live in the buckets (saves a copy)"),
        Param("static_graph", bool, False, "Promise the graph never changes (enables optimisations)"),
    ),
    requires=("distributed", "processes"),
    conflicts=("fsdp",),
)


def apply(state, params: TechniqueParams) -> str:
    from torch.nn.parallel import DistributedDataParallel

    from techniques.compile import compiled_forward

    device_ids = [state.device.index] if state.device.type == "cuda" else None
    # Wrap the plain module (DDP's hooks must see the real parameters), then compile the wrapper
    # with compile's own options when compile is on.
    ddp = DistributedDataParallel(state.model, device_ids=device_ids,
                                  bucket_cap_mb=params.bucket_cap_mb,
                                  gradient_as_bucket_view=params.gradient_as_bucket_view,
                                  static_graph=params.static_graph)
    state.forward_model = compiled_forward(ddp, state.compile_options) if state.compiled else ddp
    # Accumulation: all-reduce once per optimizer step, on the last micro-batch's backward.
    state.grad_sync = lambda sync: contextlib.nullcontext() if sync else ddp.no_sync()
    world = state.caps.get("world_size", 1)
    return (f"DDP over {world} processes ({state.caps.get('dist_backend', '?')}), "
            f"{params.bucket_cap_mb:g} MB buckets, gradient_as_bucket_view="
            f"{params.gradient_as_bucket_view}, static_graph={params.static_graph}")


register(INFO, apply=apply)
