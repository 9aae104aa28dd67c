"""Distributed data parallel: one model replica per process, gradients all-reduced in buckets."""

from __future__ import annotations

from techniques.registry import Param, TechniqueInfo, register


def _check(params: dict, caps: dict) -> str | None:
    if caps.get("world_size", 1) < 2:
        return ("data parallel needs 2 or more processes; set launch.nproc_per_node (or "
                "launch.nnodes) so that the job has at least 2")
    return None


INFO = register(TechniqueInfo(
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
    requires=("distributed",),
    conflicts=("fsdp",),
    check=_check,
))


def apply(state, params: dict) -> str:
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [state.device.index] if state.device.type == "cuda" else None
    if state.compiled:
        # Wrap the plain module and compile the wrapper: DDP's hooks must see the real params.
        import torch

        ddp = DistributedDataParallel(state.model, device_ids=device_ids,
                                      bucket_cap_mb=params["bucket_cap_mb"],
                                      gradient_as_bucket_view=params["gradient_as_bucket_view"],
                                      static_graph=params["static_graph"])
        state.forward_model = torch.compile(ddp)
    else:
        state.forward_model = DistributedDataParallel(
            state.model, device_ids=device_ids, bucket_cap_mb=params["bucket_cap_mb"],
            gradient_as_bucket_view=params["gradient_as_bucket_view"],
            static_graph=params["static_graph"])
    world = state.caps.get("world_size", 1)
    return (f"DDP over {world} processes ({state.caps.get('dist_backend', '?')}), "
            f"{params['bucket_cap_mb']:g} MB buckets, gradient_as_bucket_view="
            f"{params['gradient_as_bucket_view']}, static_graph={params['static_graph']}")
