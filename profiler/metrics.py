"""The metric catalogue: every key a sample may carry, with its label, unit and group.

Charts, tables, CSV and reports read this table; a key's unit is also part of its name, so a
figure never travels without its unit. Missing readings are None (shown "n/a", drawn as a gap).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    group: str
    description: str


_CATALOGUE = [
    Metric("loss_train", "Train loss", "nats/token", "loss", "Cross-entropy of the step's batch."),
    Metric("loss_val", "Validation loss", "nats/token", "loss", "Mean cross-entropy on held-out text."),
    Metric("lr", "Learning rate", "", "optimizer", "Learning rate used by the step."),
    Metric("grad_norm", "Gradient norm", "", "optimizer", "Global L2 norm of the gradients."),
    Metric("tokens_per_s", "Throughput", "tokens/s", "speed", "Tokens of the step / its wall time."),
    Metric("step_time_s", "Step time", "s", "speed", "Wall time of one optimizer step, device synchronised."),
    Metric("rss_bytes", "Process RSS", "bytes", "memory", "Resident memory of the worker (psutil)."),
    Metric("cpu_percent", "CPU", "%", "system", "Worker CPU use; 100 % is one core (psutil)."),
    Metric("torch_allocated_bytes", "Torch allocated", "bytes", "memory", "CUDA memory held by tensors."),
    Metric("torch_reserved_bytes", "Torch reserved", "bytes", "memory", "CUDA memory held by the caching allocator."),
    Metric("torch_peak_allocated_bytes", "Torch peak allocated", "bytes", "memory", "Peak CUDA tensor memory since the run began."),
    Metric("gpu_memory_used_bytes", "GPU memory (device)", "bytes", "memory", "All processes' memory on the GPU (NVML)."),
    Metric("gpu_process_memory_bytes", "GPU memory (process)", "bytes", "memory", "This process's memory on the GPU (NVML)."),
    Metric("gpu_util_percent", "GPU utilization", "%", "gpu", "Share of time a kernel ran (NVML)."),
    Metric("gpu_power_w", "GPU power", "W", "gpu", "Board power draw (NVML)."),
    Metric("gpu_temperature_c", "GPU temperature", "°C", "gpu", "Core temperature (NVML)."),
]
CATALOGUE: dict[str, Metric] = {m.key: m for m in _CATALOGUE}


def metric(key: str) -> Metric:
    """The catalogue entry for key; unknown keys get a neutral entry rather than an exception."""
    found = CATALOGUE.get(key)
    if found is not None:
        return found
    return Metric(key, key.replace("_", " "), "", "other", "")


def is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def format_value(value: object, unit: str) -> str:
    """A reading as people read it: "n/a" when missing, bytes in MiB/GiB, 3 significant digits."""
    if is_missing(value):
        return "n/a"
    assert isinstance(value, (int, float))
    if unit == "bytes":
        for name, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if abs(value) >= scale:
                return f"{value / scale:.1f} {name}"
        return f"{value:.0f} B"
    if unit == "s":
        if abs(value) < 1:
            return f"{value * 1000:.1f} ms"
        return f"{value:.2f} s"
    if unit == "fraction":
        return f"{value * 100:.1f} %"
    if unit == "tokens/s":
        return f"{value:,.0f} tokens/s"
    if unit in ("%", "W", "°C"):
        return f"{value:.0f} {unit}"
    text = f"{value:.4g}"
    return f"{text} {unit}".strip()
