"""The train workload: language modelling (the built-in GPT or a Hugging Face causal LM), one
sample message per step.

Read it top to bottom: set up (profiler/engine/workloads/setup.prepare: device, seed, model, data,
techniques), the step (steps.train_step: micro-batches to optimizer step, the device
synchronised), the one loop every training workload shares (loop.Loop: commands, warmup,
probes, segments, validation schedule, samples), then the summary: the loop's common figures
(warmup left out of every speed figure) and train's own (losses, memory prediction, MFU).
"""

from __future__ import annotations

from typing import Any

import torch

from profiler.config import RunConfig
from profiler.engine import memory_estimate
from profiler.engine.workloads import steps
from profiler.engine.workloads.loop import Loop, StepResult, tokens_per_step
from profiler.engine.workloads.loop_figures import Headline, common_figures, headline, rank_figures
from profiler.engine.workloads.setup import Emit, prepare
from profiler.figures.stats import figure
from profiler.figures.theory import flops_per_token, mfu, predict_for_config
from profiler.measure.capture import ProfileCapture
from profiler.measure.roofline import NA_HINT, mfu_vs_measured
from techniques import registry
from techniques.compile import eager_how
from techniques.optimizer import state_bytes, trained_numels


def run(config: RunConfig, emit: Emit, control: Any) -> dict:
    """Train per `config`, emitting started / sample / event messages; return the summary."""
    train_cfg, limits = config.train, config.limits
    # Pruning masks stay through training (they hold pruned weights at zero); finish() folds them.
    prep = prepare(config, emit, control, keep_masks=True)
    state, dist, model = prep.state, prep.dist, prep.model
    # Each rank takes its own slice of every global batch; the micro-batch is read at every draw
    # (a mid-run `set train` changes it: loop.change_batch).
    micro_batch = lambda: train_cfg.batch_size  # noqa: E731
    train_batches = prep.batches(micro_batch, train_cfg.seq_len, sharded=True)
    # Fixed validation batches: every evaluation sees the same text, so the curve is comparable;
    # the job's global batch size, so a 2-process run and a 1-process run with twice the batch
    # are validated on the same text.
    val_sampler = prep.batches(train_cfg.batch_size * dist.world_size, train_cfg.seq_len, 1,
                               val=True)
    val_batches = [val_sampler.next() for _ in range(train_cfg.eval_batches)]
    flops_token = flops_per_token(model.shape, train_cfg.seq_len)
    n_params = model.parameter_count()
    # The probes draw micro-batches of the step's shape from their own sampler.
    probes = steps.MemoryProbes(state, prep.batches(micro_batch, train_cfg.seq_len, 2,
                                                    sharded=True), steps.lm_loss_of(state))
    prep.started(
        "train",
        batch_size=train_cfg.batch_size,
        seq_len=train_cfg.seq_len,
        micro_batches=state.micro_batches,
        effective_batch=state.micro_batches * train_cfg.batch_size * dist.world_size,
        tokens_per_step=tokens_per_step(state),
        warmup_steps=limits.warmup_steps,
        steps=limits.steps,
        theory={"flops_per_token": flops_token,
                "predicted_memory_bytes": predict_for_config(
                    config, dist.world_size, trained_numels(state.optimizer))},
    )

    def step(number: int) -> StepResult:
        loss, grad_norm, tokens = steps.train_step(state, train_batches, number)
        return StepResult(loss, {"loss_train": loss, "grad_norm": grad_norm}, tokens)

    # A `profile` command records the next N steps with torch.profiler (rank 0 only).
    capture = ProfileCapture(config.output_dir, model, prep.device, emit,
                             compiled=state.compiled, enabled=dist.is_speaker)
    loop = Loop(prep, control, emit, step,
                lambda: {"loss_val": steps.evaluate(state, val_batches)}, probes, "loss_train",
                capture)
    record = loop.run()
    # Masks folded in, then weights saved (rank 0 holds the whole model under DDP; sharded FSDP
    # weights are refused with a warning).
    saved = prep.finish(record.steps_done)["checkpoint"]
    head = headline(record)  # never an average of configurations
    summary = summarize(loop, head, flops_token, n_params, steps.replica_spread(state, dist))
    summary["checkpoint"] = saved
    summary["segments"] = head.segments
    summary["diverged"] = record.diverged
    summary.update(prep.contention())
    return summary


def summarize(loop: Loop, head: Headline, flops_token: float, n_params: int,
              replica_spread: float | None) -> dict:
    """The train workload's summary, read from the loop's record."""
    record, state = loop.record, loop.state
    device = state.device
    # fp8 training without compile says so beside its speed (techniques.compile.eager_how).
    figures = common_figures(loop, head, eager_how(state.active, "train"))
    tokens_per_s = figures["tokens_per_s"]["value"]
    last_losses = record.losses("loss_train")[-10:]
    val_losses = [(step, found["loss_val"]) for step, found in record.evaluations]
    figures.update({
        "loss_train_final": figure(sum(last_losses) / len(last_losses) if last_losses else None,
                                   "nats/token", "mean train loss of the last 10 steps"),
        "loss_val_first": figure(val_losses[0][1] if val_losses else None, "nats/token",
                                 "validation loss before the first step"),
        "loss_val_final": figure(val_losses[-1][1] if val_losses else None, "nats/token",
                                 f"validation loss at step "
                                 f"{val_losses[-1][0] if val_losses else 'n/a'}"),
        **loop.probes.figures(state_bytes(state.optimizer) if record.steps_done else None),
        "flops_per_token": figure(flops_token, "FLOP", "6N + 12·L·H·Q·T (training)"),
    })
    per_rank, job = rank_figures(loop, replica_spread)
    figures.update(job)
    predicted = predict_for_config(state.config, state.dist.world_size,
                                   trained_numels(state.optimizer))  # what really trains
    predicted = memory_estimate.fill_prediction(state.config, predicted, state.dist.world_size,
                                                device.type)  # a model the theory cannot break down
    # n/a where neither the theory nor the memory trace gives the activations (the sentence why)
    na = predicted.get("activations_how") if predicted.get("activations") is None else None
    figures["predicted_memory_bytes"] = figure(
        predicted["total"], "bytes", na or "weights + gradients + optimizer states + activations "
        "saved for backward, predicted for this model, batch, precision and checkpointing")
    figures["predicted_activation_bytes"] = figure(
        predicted["activations"], "bytes",
        na or predicted.get("activations_how") or "activations saved for backward (predicted)")
    figures["predicted_optimizer_state_bytes"] = figure(
        predicted["optimizer_states"], "bytes",
        f"optimizer states (predicted: {predicted['optimizer_how']})"
        if predicted.get("optimizer_how") else "optimizer states (predicted)")
    dtype = "fp32"
    if state.autocast_dtype is not None:
        dtype = {torch.bfloat16: "bf16", torch.float16: "fp16"}[state.autocast_dtype]
    elif "tf32" in state.active:
        dtype = "tf32"
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    override = state.config.peak_tflops or None
    mfu_value, mfu_how = mfu(tokens_per_s or 0.0, flops_token, device_name, dtype, override) \
        if tokens_per_s else (None, "n/a: no measured throughput")
    # A technique whose matmuls run at another peak (fp8) makes MFU against this peak misleading.
    other_peak = [registry.get(name).label for name in state.active
                  if registry.get(name).extra.get("mfu") == "n/a"]
    # The measured roofline is read from its cache here, after the step loop: never measured
    # during a run (`effiscope roofline` measures it), so no timed step pays for it.
    measured_value, measured_how, measured_peak = mfu_vs_measured(
        tokens_per_s, flops_token, str(device), dtype)
    for key, (value, how) in (("mfu", (mfu_value, mfu_how)),
                              ("mfu_measured", (measured_value, measured_how))):
        if other_peak:
            value, how = None, (f"n/a: {', '.join(other_peak)} runs matmuls at a peak other "
                                f"than the {dtype} one")
        if value is not None and state.dist.enabled:
            # tokens_per_s is the job's; the peak is one device's.
            value /= state.dist.world_size
            how += f", divided by {state.dist.world_size} devices"
        figures[key] = figure(value, "fraction", how)
    figures["measured_peak_flops"] = measured_peak or figure(
        None, "FLOP/s", f"n/a: no measured {dtype} peak for this machine ({NA_HINT})")
    return {
        "workload": "train",
        "predicted_memory": predicted,
        "world_size": state.dist.world_size,
        "per_rank": per_rank,
        "stopped_early": record.stopped_early,
        "stop_reason": record.stop_reason,
        "steps_completed": record.steps_done,
        "measured_steps": len(head.records),
        "device": str(device),
        "parameters": n_params,
        "effective_batch": (state.micro_batches * state.config.train.batch_size
                            * state.dist.world_size),
        "techniques": loop.prep.applied,
        "active_techniques": state.active,
        "mid_run_changes": record.changes,
        "figures": figures,
    }
