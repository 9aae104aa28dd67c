"""Rules of a run config that span its sections: techniques against each other, the run and the
model (techniques.registry.config_problem), and the model's size against this machine's memory.

Torch-free, called by config.validate: everything checkable from the config is refused before a
run exists (exit 2 on the CLI, the sentence under Run in the app), and the worker's validation
checks it again.
"""

from __future__ import annotations

from typing import Any

from profiler.errors import ConfigError

FP32_BYTES = 4
"""Every model is built in fp32 first (weights cast or quantized later): 4 bytes a parameter."""


def check(config: Any, shape: Any, on_this_machine: bool = True) -> None:
    """Raise ConfigError for the first contradiction among the techniques, or a model that
    cannot be held in this machine's memory (on_this_machine=False: a config judged for another
    machine, e.g. `effiscope estimate`, which builds nothing real)."""
    from techniques import registry

    problem = registry.config_problem(facts(config, shape))
    if problem is not None:
        raise ConfigError(f"techniques.{problem[0]}", problem[1])
    too_big = model_memory_problem(config, shape) if on_this_machine else None
    if too_big is not None:
        raise ConfigError("model", too_big)


def facts(config: Any, shape: Any = None) -> Any:
    """The registry's RunFacts of a config (and of its model's shape, when known)."""
    from techniques import registry

    named = dict(config.techniques)
    for info in registry.all_techniques():
        if info.always_on and info.name not in named:
            named[info.name] = {}
    techniques = {name: registry.validate_params(name, params) for name, params in named.items()}
    return registry.run_facts(
        config, techniques,
        model_kind=getattr(shape, "kind", "builtin") if shape is not None else "builtin",
        linear_widths=linear_widths(shape) if shape is not None else {})


def linear_widths(shape: Any) -> dict[str, int]:
    """The narrowest side of the blocks' Linear layers, attention and MLP apart: the built-in
    GPT's are all n_embd wide on one side; grouped-query key/value projections are narrower."""
    width = shape.n_embd
    heads = max(1, shape.n_head)
    kv_heads = getattr(shape, "n_kv_head", 0) or heads
    attention = min(width, kv_heads * (width // heads)) if width >= heads else width
    mlp = min(width, getattr(shape, "intermediate_size", 0) or 4 * width)
    return {"attention": max(1, attention), "mlp": max(1, mlp)}


def predicted_parameters(shape: Any) -> int:
    """Parameters of the model as it will be built: the shape's own count, or for a Hugging Face
    config the family's formula (what transformers builds from config.json, whatever the weight
    files hold), or a transformer's standard count from its sizes when neither is known."""
    counts = [int(shape.parameter_count() or 0), int(getattr(shape, "matmul_parameters", 0) or 0)]
    if max(counts) == 0:
        width, inner = shape.n_embd, getattr(shape, "intermediate_size", 0) or 4 * shape.n_embd
        counts.append(shape.vocab_size * width + shape.n_layer * (4 * width * width
                                                                   + 2 * width * inner))
    return max(counts)


def machine_memory_bytes() -> int | None:
    """This machine's physical memory (None where psutil cannot tell)."""
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # noqa: BLE001 - no figure means no refusal, never a crash
        return None


def model_memory_problem(config: Any, shape: Any, memory: int | None = None) -> str | None:
    """A sentence when the model's fp32 weights alone (times the processes on this machine)
    exceed this machine's memory: building it would only swap and fail minutes later. A worker
    on another machine (launch.ssh) is judged there, by its own validation."""
    if config.launch.ssh:
        return None
    memory = machine_memory_bytes() if memory is None else memory
    if not memory:
        return None
    params = predicted_parameters(shape)
    processes = config.launch.nproc_per_node
    needed = params * FP32_BYTES * processes
    if needed <= memory:
        return None
    each = f" in each of {processes} processes" if processes > 1 else ""
    return (f"the model has about {params:,} parameters ({_size(params * FP32_BYTES)} in fp32"
            f"{each}), more than this machine's {_size(memory)} of memory; choose a smaller "
            f"model (its n_layer {shape.n_layer:,}, n_embd {shape.n_embd:,} and vocab_size "
            f"{shape.vocab_size:,} give the size)")


def _size(value: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:,.0f} {unit}" if unit == "bytes" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} PiB"
