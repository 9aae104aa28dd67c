"""Will it fit, in figures (no torch): what profiler/engine/memory_trace.py traced, judged against
a device's memory with a stated margin band, the largest micro-batch that fits, and the words
the CLI, the app, the tuner and the report show.

A trace counts the tensors a step holds (what torch.cuda.max_memory_allocated counts on a GPU).
What it cannot see is a band beside it, never a fudge factor inside it:
- the CUDA context (kernels, cuBLAS / cuDNN handles): outside the allocator, about 0.3 to 1 GiB;
- the caching allocator: each block rounded up (512 B, large ones to 2 MiB) and cached blocks
  that fragment, so what it reserves runs 0 to 10 % above what it allocates;
- NCCL's buffers in a job of several processes: about 0.2 to 1 GiB per process;
- on a CPU: the process itself (Python, torch and its libraries), about 0.3 to 0.8 GiB.
"""

from __future__ import annotations

SCHEMA = 1
"""The version of a trace result's shape (the cache refuses another)."""

PARTS = (("weights", "Weights"), ("gathered_weights", "Gathered weights (FSDP)"),
         ("buffers", "Buffers"), ("gradients", "Gradients"),
         ("optimizer_states", "Optimizer states"), ("activations", "Activations"),
         ("kv_cache", "KV cache"), ("temporaries", "Temporaries"), ("inputs", "Inputs"))
"""Every part a trace reports, in the order it is shown, with its label."""
PART_KEYS = tuple(key for key, _ in PARTS)
PHASES = ("forward", "backward", "optimizer step", "prefill", "decode")
