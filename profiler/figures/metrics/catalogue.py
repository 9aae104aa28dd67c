"""The metric catalogue, plain data: every key a sample or a summary may carry, with its label,
unit, group, which way is better, and for sample keys the chart that draws it (CHARTS). Keys
built from another key are resolved in profiler.figures.metrics.keys; figures become text in
profiler.figures.metrics.format. Import from profiler.figures.metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

HIGHER, LOWER = "higher", "lower"
DIMENSIONLESS = "1"
"""The unit of a pure number (perplexity, a gradient norm): stated, and printed as nothing."""
TIMED_GROUPS = ("speed", "latency", "time", "energy")
"""Groups whose figures are read off a clock (Metric.timed)."""
COUNT_UNITS = ("parameters", "tokens", "steps")
"""Units of whole counts: never a clock's reading, printed exact."""


@dataclass(frozen=True)
class Chart:
    name: str
    title: str
    unit: str
    from_zero: bool
    """Keep zero in view: a 10 MiB wobble should look like one."""
    core: bool
    """Shown before any data arrives (an empty window still says what it will draw)."""


CHARTS = (
    Chart("loss", "Loss", "nats/token", False, True),
    Chart("speed", "Throughput", "tokens/s", True, True),
    Chart("step_time", "Step time", "s", True, True),
    Chart("memory", "Memory", "bytes", True, True),
    Chart("latency", "Latency", "s", True, False),
    Chart("gpu_util", "GPU utilization", "%", True, False),
    Chart("gpu_power", "GPU power", "W", True, False),
    Chart("gpu_temp", "GPU temperature", "°C", False, False),
)
CHARTS_BY_NAME = {chart.name: chart for chart in CHARTS}


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    group: str
    better: str | None
    """"higher", "lower", or None where neither is better (a learning rate, a temperature)."""
    description: str
    chart: str | None = None
    """The chart (CHARTS) a sample of this key is drawn on; None: tables only."""
    sparse: bool = False
    """Read every N steps (validation): drawn as dots, not a line."""
    exact: bool = False
    """Counted from the tensors, not timed: the same configuration gives the same number, so a
    difference between two runs is real, never noise (profiler.figures.significance)."""

    @property
    def timed(self) -> bool:
        """A figure read off a clock (speed, latency, time, energy, MFU): other processes on the
        machine change it, so a contended run gives it no verdict (profiler.figures.significance)."""
        return (self.group in TIMED_GROUPS and self.unit not in COUNT_UNITS) or \
            self.key.split("_")[0] == "mfu"


def _m(key: str, label: str, unit: str, group: str, better: str | None, description: str,
       chart: str | None = None, sparse: bool = False, exact: bool = False) -> Metric:
    return Metric(key, label, unit, group, better, description, chart, sparse, exact)


ONE = DIMENSIONLESS
_CATALOGUE = (
    # --- training samples -----------------------------------------------------------------------
    _m("loss_train", "Train loss", "nats/token", "loss", LOWER,
       "Mean token cross-entropy of the step's batch on the text (distill: the student's "
       "cross-entropy part of its objective, the figure comparable with a train run's loss).",
       "loss"),
    _m("loss_val", "Validation loss", "nats/token", "loss", LOWER,
       "Mean cross-entropy on held-out text.", "loss", sparse=True),
    _m("lr", "Learning rate", ONE, "optimizer", None, "Learning rate used by the step."),
    _m("grad_norm", "Gradient norm", ONE, "optimizer", None, "Global L2 norm of the gradients."),
    _m("tokens_per_s", "Throughput", "tokens/s", "speed", HIGHER,
       "Tokens of the step / its wall time.", "speed"),
    _m("step_time_s", "Step time", "s", "speed", LOWER,
       "Wall time of one optimizer step, device synchronised.", "step_time"),
    # --- system sampler and torch memory -------------------------------------------------------
    _m("rss_bytes", "Process RSS", "bytes", "memory", LOWER,
       "Resident memory of the worker (psutil).", "memory"),
    _m("cpu_percent", "CPU", "%", "system", None, "Worker CPU use; 100 % is one core (psutil)."),
    _m("other_cpu_cores", "Other processes' CPU, now", "cores", "system", LOWER,
       "CPU used by processes outside the run's own tree over the contention meter's newest "
       "window (about a second; psutil): the live reading, the summary keeps the run's mean."),
    # --- machine load over a run (summary keys, profiler.measure.contention) ---------------------------
    _m("contention_other_cpu_cores_mean", "Other processes' CPU", "cores", "system", LOWER,
       "CPU used by processes outside the run's own tree, time-weighted mean over the run "
       "(machine busy time minus the own tree's, psutil)."),
    _m("contention_other_cpu_cores_p90", "Other processes' CPU, p90", "cores", "system", LOWER,
       "90th percentile of the other processes' CPU over the run's sampling windows."),
    _m("contention_machine_cpu_percent", "Machine CPU", "%", "system", None,
       "The whole machine's CPU use over the run; 100 % is every core busy."),
    _m("contention_front_end_cpu_cores_mean", "Front end's CPU", "cores", "system", LOWER,
       "CPU used by the front end that drives the run (the app, the CLI), time-weighted mean; "
       "EffiScope's own work, so not counted as other processes'."),
    _m("contention_gpu_other_processes", "Other GPU processes", "processes", "system", LOWER,
       "Most compute processes outside the run's tree seen on its GPU at once (NVML)."),
    _m("contention_gpu_other_memory_bytes", "Other GPU processes' memory", "bytes", "system",
       LOWER, "Most GPU memory those other processes held at once (NVML)."),
    _m("torch_allocated_bytes", "Torch allocated", "bytes", "memory", LOWER,
       "CUDA memory held by tensors.", "memory"),
    _m("torch_reserved_bytes", "Torch reserved", "bytes", "memory", LOWER,
       "CUDA memory held by the caching allocator.", "memory"),
    # A running peak repeats what the allocated curve shows: a table figure, not a curve.
    _m("torch_peak_allocated_bytes", "Torch peak allocated", "bytes", "memory", LOWER,
       "Peak CUDA tensor memory since the run began."),
    _m("gpu_memory_used_bytes", "GPU memory (device)", "bytes", "memory", LOWER,
       "All processes' memory on the GPU (NVML).", "memory"),
    _m("gpu_process_memory_bytes", "GPU memory (process)", "bytes", "memory", LOWER,
       "This process's memory on the GPU (NVML).", "memory"),
    _m("gpu_util_percent", "GPU utilization", "%", "gpu", None,
       "Share of time a kernel ran (NVML).", "gpu_util"),
    _m("gpu_power_w", "GPU power", "W", "gpu", None, "Board power draw (NVML).", "gpu_power"),
    _m("gpu_energy_j", "GPU energy counter", "J", "gpu", None,
       "NVML total energy since driver load."),
    _m("gpu_temperature_c", "GPU temperature", "°C", "gpu", None, "Core temperature (NVML).",
       "gpu_temp"),
    # --- inference samples (infer, compress) ---------------------------------------------------
    _m("prefill_latency_s", "Prefill latency", "s", "latency", LOWER,
       "One forward pass over the whole prompt, filling the KV cache.", "latency"),
    _m("ttft_s", "Time to first token", "s", "latency", LOWER,
       "Prefill plus picking the first new token.", "latency"),
    _m("decode_latency_s", "Decode latency per token", "s", "latency", LOWER,
       "One decode step (one new token per sequence) with the KV cache.", "latency"),
    _m("decode_tokens_per_s", "Decode throughput", "tokens/s", "speed", HIGHER,
       "Generated tokens / decode time, all sequences of the batch.", "speed"),
    _m("prefill_tokens_per_s", "Prefill throughput", "tokens/s", "speed", HIGHER,
       "Prompt tokens / prefill time.", "speed"),
    _m("kv_cache_bytes", "KV cache", "bytes", "memory", LOWER,
       "Keys and values kept for every layer and position.", "memory"),
    _m("perplexity", "Perplexity", ONE, "quality", LOWER,
       "exp(mean token cross-entropy) on held-out text (train runs: of the final validation "
       "loss). infer and compress score windows of held-out text, several per forward pass "
       "(infer.batch_size; the figure's how says how many): under dynamic int8 each forward "
       "input's activations get one quantization scale, so the figure holds for that number of "
       "windows per pass only.", sparse=True),
    _m("kl_to_baseline", "KL to the original", "nats/token", "quality", LOWER,
       "KL(original ‖ compressed) of next-token distributions.", sparse=True),
    _m("kl_p99", "KL to the original, p99", "nats/token", "quality", LOWER,
       "99th percentile over tokens of KL(original ‖ compressed) of next-token distributions.",
       sparse=True),
    _m("top1_agreement", "Top-1 agreement", "fraction", "quality", HIGHER,
       "Share of positions where the original's and the compressed model's most likely next "
       "token agree.", sparse=True),
    # --- model size (infer, compress, distill) -------------------------------------------------
    _m("sparsity", "Sparsity", "fraction", "compression", HIGHER,
       "Share of weights that are exactly zero, measured."),
    _m("parameters", "Parameters", "parameters", "compression", LOWER,
       "Elements of every weight tensor."),
    _m("nonzero_parameters", "Non-zero parameters", "parameters", "compression", LOWER,
       "Weights that are not exactly zero."),
    _m("model_bytes", "Weights in memory", "bytes", "compression", LOWER,
       "Bytes of the weight tensors as held."),
    _m("disk_bytes", "Weights on disk", "bytes", "compression", LOWER,
       "Size of the weights saved with safetensors."),
    _m("perplexity_change_percent", "Perplexity change", "%", "quality", LOWER,
       "(compressed / original perplexity - 1) x 100."),
    _m("speedup_decode", "Decode speed-up", "x", "speed", HIGHER,
       "Compressed / original decode tokens/s."),
    # --- encoder models (infer, compress): one forward pass, no generation -----------------------
    _m("encode_latency_s", "Forward pass latency", "s", "latency", LOWER,
       "One forward pass of the encoder over the batch.", "latency"),
    _m("encode_tokens_per_s", "Encoding throughput", "tokens/s", "speed", HIGHER,
       "Tokens encoded / forward pass time.", "speed"),
    _m("encode_sequences_per_s", "Sequences per second", "sequences/s", "speed", HIGHER,
       "Sequences encoded / forward pass time."),
    _m("embedding_cosine_mean", "Embedding cosine similarity (mean)", ONE, "quality", HIGHER,
       "Mean cosine similarity of the compressed and the original encoder's embeddings."),
    _m("embedding_cosine_min", "Embedding cosine similarity (min)", ONE, "quality", HIGHER,
       "Lowest cosine similarity of the compressed and the original encoder's embeddings."),
    _m("embedding_max_abs_diff", "Largest embedding difference", ONE, "quality", LOWER,
       "Largest absolute difference between the two encoders' embeddings."),
    # --- distillation ----------------------------------------------------------------------------
    _m("loss_distill", "Distillation objective", "nats/token", "loss", LOWER,
       "What the student minimises: alpha·KL(teacher ‖ student at T)·T² + (1 - alpha)·cross-"
       "entropy. A blend of two losses, so never compared with a train run's loss (its "
       "cross-entropy part is: loss_train).", "loss"),
    _m("loss_ce", "Cross-entropy part (older distill runs)", "nats/token", "loss", LOWER,
       "Distill runs recorded before the objective had its own key kept the student's "
       "cross-entropy here and the blended objective under loss_train.", "loss"),
    _m("kl_to_teacher", "KL to the teacher", "nats/token", "loss", LOWER,
       "KL(teacher ‖ student) at the distillation temperature.", "loss"),
    _m("kl_to_teacher_val", "KL to the teacher (held out)", "nats/token", "loss", LOWER,
       "KL(teacher ‖ student) at T = 1 on held-out text.", "loss", sparse=True),
    _m("teacher_loss_train", "Teacher train loss", "nats/token", "loss", LOWER,
       "Cross-entropy while the teacher is trained first.", "loss"),
    _m("teacher_loss_val", "Teacher validation loss", "nats/token", "loss", LOWER,
       "The teacher's cross-entropy on held-out text.", "loss", sparse=True),
    _m("kl_to_teacher_final", "Final KL to the teacher", "nats/token", "loss", LOWER,
       "KL at the distillation temperature, mean of the last steps."),
    _m("kl_to_teacher_val_first", "KL to the teacher before training", "nats/token", "loss",
       LOWER, "Held-out KL(teacher ‖ student) before the first step."),
    _m("kl_to_teacher_val_final", "Final KL to the teacher (held out)", "nats/token", "loss",
       LOWER, "Held-out KL(teacher ‖ student) at the last validation."),
    _m("teacher_parameters", "Teacher parameters", "parameters", "compression", None,
       "Elements of every weight tensor of the teacher."),
    _m("compression_ratio", "Compression ratio", "x", "compression", HIGHER,
       "Teacher parameters / student parameters."),
    # --- training summary figures --------------------------------------------------------------
    _m("loss_train_final", "Final train loss", "nats/token", "loss", LOWER,
       "Mean train loss (cross-entropy) of the last steps."),
    _m("loss_distill_final", "Final distillation objective", "nats/token", "loss", LOWER,
       "Mean distillation objective (the blend of KL and cross-entropy) of the last steps."),
    _m("loss_val_first", "Validation loss before training", "nats/token", "loss", LOWER,
       "Validation loss before the first step."),
    _m("loss_val_final", "Final validation loss", "nats/token", "loss", LOWER,
       "Validation loss at the last validation."),
    _m("peak_rss_bytes", "Peak process RSS", "bytes", "memory", LOWER,
       "Highest worker RSS seen."),
    _m("peak_rss_growth_bytes", "RSS added by training", "bytes", "memory", LOWER,
       "Peak RSS minus RSS just before the first step."),
    _m("peak_torch_allocated_bytes", "Peak torch allocated", "bytes", "memory", LOWER,
       "torch.cuda.max_memory_allocated."),
    _m("peak_gpu_memory_used_bytes", "Peak GPU memory (NVML)", "bytes", "memory", LOWER,
       "Highest NVML device memory seen."),
    _m("saved_for_backward_bytes", "Saved for backward", "bytes", "memory", LOWER,
       "Bytes autograd saves for backward in one micro-batch's forward (saved-tensor hooks on an "
       "untimed probe after warmup; parameters not counted): what activation checkpointing "
       "acts on.", exact=True),
    _m("gradient_bytes", "Gradients", "bytes", "memory", LOWER,
       "Bytes of the parameters' gradients after a backward (frozen parameters hold none).", exact=True),
    _m("optimizer_state_bytes", "Optimizer state", "bytes", "memory", LOWER,
       "Bytes of the optimizer's state tensors after the last step (0 without state).", exact=True),
    _m("compile_time_s", "Compile time", "s", "time", LOWER,
       "First step's time minus the median step."),
    _m("train_time_s", "Training time", "s", "time", LOWER,
       "Wall time of the step loop, validation excluded."),
    _m("eval_time_s", "Validation time", "s", "time", LOWER, "Wall time spent in validation."),
    _m("tokens_seen", "Tokens seen", "tokens", "speed", None, "All steps, warmup included."),
    _m("flops_per_token", "FLOPs per token", "FLOP", "theory", None,
       "6N + 12·L·H·Q·T (training)."),
    _m("mfu", "MFU (vs datasheet peak)", "fraction", "theory", HIGHER,
       "Achieved FLOP/s / the device's datasheet peak for the dtype (or the config's peak_tflops); "
       "n/a where it has no meaning (CPUs: see MFU vs measured peak)."),
    _m("mfu_measured", "MFU (vs measured peak)", "fraction", "theory", HIGHER,
       "Achieved FLOP/s / this machine's matmul peak for the dtype as measured by "
       "`effiscope roofline`; n/a until it has been measured."),
    _m("measured_peak_flops", "Measured matmul peak", "FLOP/s", "theory", None,
       "Achievable matmul FLOP/s of this machine for the run's dtype (`effiscope roofline`)."),
    _m("measured_bandwidth", "Measured memory bandwidth", "B/s", "theory", None,
       "Bytes read + written per second by a large tensor copy (`effiscope roofline`)."),
    _m("predicted_memory_bytes", "Predicted memory", "bytes", "theory", None,
       "Weights + gradients + optimizer states + activations, predicted."),
    _m("predicted_activation_bytes", "Predicted activations", "bytes", "theory", None,
       "Activations saved for backward, predicted."),
    _m("predicted_optimizer_state_bytes", "Predicted optimizer state", "bytes", "theory", None,
       "Optimizer states, predicted."),
    _m("energy_j", "Energy", "J", "energy", LOWER, "GPU energy over the measured steps."),
    _m("energy_per_token_j", "Energy per token", "J/token", "energy", LOWER,
       "GPU energy / tokens of the measured steps."),
    _m("energy_per_step_j", "Energy per step", "J/step", "energy", LOWER,
       "GPU energy / measured steps."),
    _m("straggler_ratio", "Straggler ratio", "x", "distributed", LOWER,
       "Slowest rank's median step time / the fastest rank's."),
    _m("replica_param_spread", "Replica parameter spread", ONE, "distributed", LOWER,
       "Largest relative difference of parameter checksums across ranks."),
)
CATALOGUE: dict[str, Metric] = {m.key: m for m in _CATALOGUE}
ORDER = {m.key: index for index, m in enumerate(_CATALOGUE)}
"""Catalogue position: charts list their curves in this order."""

BATCH_DEPENDENT = {
    "quantize_int8_dynamic": "dynamic int8 quantizes each forward input's activations with one "
                             "scale taken over the whole input",
}
"""Techniques whose outputs depend on what shares a forward pass, and why: their quality
figures (perplexity, loss, KL, top-1 agreement) hold for the number of windows scored per pass
only. The how-text of those figures says it (scoring_note), and comparisons of figures scored
with another number per pass are not comparable (profiler.figures.significance)."""
