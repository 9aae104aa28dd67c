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
    Metric("gpu_energy_j", "GPU energy counter", "J", "gpu", "NVML total energy since driver load."),
    Metric("gpu_temperature_c", "GPU temperature", "°C", "gpu", "Core temperature (NVML)."),
    # inference (infer, compress)
    Metric("prefill_latency_s", "Prefill latency", "s", "latency", "One forward pass over the whole prompt, filling the KV cache."),
    Metric("ttft_s", "Time to first token", "s", "latency", "Prefill plus picking the first new token."),
    Metric("decode_latency_s", "Decode latency per token", "s", "latency", "One decode step (one new token per sequence) with the KV cache."),
    Metric("decode_tokens_per_s", "Decode throughput", "tokens/s", "speed", "Generated tokens / decode time, all sequences of the batch."),
    Metric("prefill_tokens_per_s", "Prefill throughput", "tokens/s", "speed", "Prompt tokens / prefill time."),
    Metric("kv_cache_bytes", "KV cache", "bytes", "memory", "Keys and values kept for every layer and position."),
    Metric("perplexity", "Perplexity", "", "quality", "exp(mean token cross-entropy) on held-out text."),
    Metric("kl_to_baseline", "KL to the original", "nats/token", "quality", "KL(original ‖ compressed) of next-token distributions."),
    Metric("sparsity", "Sparsity", "", "compression", "Share of weights that are exactly zero, measured."),
    Metric("parameters", "Parameters", "", "compression", "Elements of every weight tensor."),
    Metric("nonzero_parameters", "Non-zero parameters", "", "compression", "Weights that are not exactly zero."),
    Metric("model_bytes", "Weights in memory", "bytes", "compression", "Bytes of the weight tensors as held."),
    Metric("disk_bytes", "Weights on disk", "bytes", "compression", "Size of the weights saved with safetensors."),
    # encoder models (infer, compress): one forward pass, no generation
    Metric("encode_latency_s", "Forward pass latency", "s", "latency", "One forward pass of the encoder over the batch."),
    Metric("encode_tokens_per_s", "Encoding throughput", "tokens/s", "speed", "Tokens encoded / forward pass time."),
    Metric("encode_sequences_per_s", "Sequences per second", "sequences/s", "speed", "Sequences encoded / forward pass time."),
    Metric("embedding_cosine_mean", "Embedding cosine similarity", "", "quality", "Mean cosine similarity of the compressed and the original encoder's embeddings."),
    Metric("embedding_max_abs_diff", "Largest embedding difference", "", "quality", "Largest absolute difference between the two encoders' embeddings."),
    # distillation
    Metric("loss_ce", "Cross-entropy part", "nats/token", "loss", "The student's cross-entropy on the text (the (1 - alpha) term)."),
    Metric("kl_to_teacher", "KL to the teacher", "nats/token", "loss", "KL(teacher ‖ student) at the distillation temperature."),
    Metric("kl_to_teacher_val", "KL to the teacher (held out)", "nats/token", "loss", "KL(teacher ‖ student) at T = 1 on held-out text."),
    Metric("teacher_loss_train", "Teacher train loss", "nats/token", "loss", "Cross-entropy while the teacher is trained first."),
    Metric("teacher_loss_val", "Teacher validation loss", "nats/token", "loss", "The teacher's cross-entropy on held-out text."),
]
# Compress runs report both models: "baseline_KEY" and "compressed_KEY" share KEY's unit.
VARIANT_PREFIXES = ("baseline_", "compressed_")
CATALOGUE: dict[str, Metric] = {m.key: m for m in _CATALOGUE}


def metric(key: str) -> Metric:
    """The catalogue entry for key; unknown keys get a neutral entry rather than an exception."""
    found = CATALOGUE.get(key)
    if found is not None:
        return found
    for prefix in VARIANT_PREFIXES:
        base = CATALOGUE.get(key[len(prefix):]) if key.startswith(prefix) else None
        if base is not None:
            return Metric(key, f"{base.label} ({prefix[:-1]})", base.unit, base.group,
                          base.description)
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
