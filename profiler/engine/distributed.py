"""The worker's side of a torchrun job: process group, commands from rank 0, figures to rank 0.

Global rank 0 speaks the protocol for the whole job. Everything that crosses between ranks is
JSON text in a uint8 tensor or a float tensor — never a pickled object (so no
broadcast_object_list / gather_object, which pickle).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    node_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_speaker(self) -> bool:
        """Global rank 0: the one process whose stdout carries the protocol."""
        return self.rank == 0

    def device_for(self, requested: torch.device) -> torch.device:
        """On CUDA each local rank takes its own GPU."""
        if requested.type == "cuda" and self.enabled:
            return torch.device("cuda", self.local_rank)
        return requested

    # --- control plane (CPU tensors, gloo) ---------------------------------------------------
    def broadcast_json(self, value: object | None) -> object:
        """Rank 0's JSON-serialisable value, on every rank."""
        if not self.enabled:
            return value
        if self.is_speaker:
            payload = json.dumps(value).encode("utf-8")
            size = torch.tensor([len(payload)], dtype=torch.int64)
        else:
            size = torch.zeros(1, dtype=torch.int64)
        dist.broadcast(size, src=0, group=_cpu_group())
        if self.is_speaker:
            data = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
        else:
            data = torch.empty(int(size.item()), dtype=torch.uint8)
        if data.numel():
            dist.broadcast(data, src=0, group=_cpu_group())
        return json.loads(bytes(data.tolist()).decode("utf-8"))

    def gather_floats(self, values: list[float | None]) -> list[list[float | None]]:
        """Every rank's list of numbers (None travels as NaN), on every rank, in rank order."""
        if not self.enabled:
            return [values]
        mine = torch.tensor([float("nan") if v is None else float(v) for v in values],
                            dtype=torch.float64)
        out = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(out, mine, group=_cpu_group())
        return [[None if torch.isnan(x) else float(x) for x in row] for row in out]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier(group=_cpu_group())

    def shutdown(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


_CPU_GROUP = None


def _cpu_group():
    return _CPU_GROUP


def from_environment() -> DistContext:
    """Read torchrun's variables; initialise the process group when the job has several ranks."""
    global _CPU_GROUP
    world = int(os.environ.get("WORLD_SIZE", "1"))
    ctx = DistContext(
        rank=int(os.environ.get("RANK", "0")),
        world_size=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
        node_rank=int(os.environ.get("GROUP_RANK", "0")),
    )
    if ctx.enabled and not dist.is_initialized():
        # gloo carries the CPU control plane (and CPU training); NCCL carries CUDA tensors.
        ctx.backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group(backend=ctx.backend)
        _CPU_GROUP = dist.new_group(backend="gloo") if torch.cuda.is_available() else None
    return ctx
