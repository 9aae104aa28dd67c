"""What this machine refuses of a valid config, checked by a front end before a run exists.

Validation (profiler.config) refuses everything the config contradicts by itself; a few refusals
need this machine's torch: `device = "cuda"` where torch sees no GPU, fp16 autocast or a CUDA-only
technique on a device that turns out to be a CPU, a fused kernel this build lacks. The worker
refuses them too (its set-up plans the techniques against its capabilities), but then a failed
run is already in the history. `refusal` runs the same plan here first, and only for configs
that ask for something a machine may lack (`needs_check`, torch-free), so a plain run does not
pay for importing torch twice.
"""

from __future__ import annotations

from typing import Any


def needs_check(config: Any) -> bool:
    """Whether the config names something this machine may not have: a CUDA device, or a
    technique with requirements or a machine check. A worker on another machine judges itself."""
    from techniques import registry

    if config.launch.ssh:
        return False
    if config.device.startswith("cuda"):
        return True
    for name in config.techniques:
        info = registry.get(name)
        if info.requires or info.check is not None:
            return True
    return False


def capabilities(config: Any) -> dict:
    """This machine's capabilities for the config's device, as the worker detects them;
    Unsupported (a sentence) for a device torch does not have here (imports torch)."""
    from profiler.measure.capabilities import detect, resolve_device
    from profiler.models import source as model_source

    device = resolve_device(config.device)
    return {**detect(device), "world_size": config.launch.nproc_per_node * config.launch.nnodes,
            **model_source.model_caps(config.model)}


def refusal(config: Any) -> str | None:
    """The worker's refusal of this config on this machine, in words, or None (imports torch)."""
    from profiler.errors import Unsupported
    from techniques import registry, runtime
    from techniques.registry import INFER_STAGES

    try:
        caps = capabilities(config)
        stages = INFER_STAGES if config.workload in ("infer", "compress") else registry.STAGES
        runtime.plan(config, caps, stages)
    except Unsupported as exc:
        return str(exc)
    return None
