"""The train workload: language modelling on a built-in GPT, one sample message per step.

Read it top to bottom: set up (device, seed, model, data, optimizer), then one loop in which each
step is timed from batch fetch to optimizer step with the device synchronised, then a summary in
which warmup steps are left out of every speed figure.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import torch

from profiler.config import RunConfig
from profiler.data import BatchSampler, load_corpus
from profiler.models.gpt import build_gpt
from profiler.models.presets import GPT_PRESETS
from profiler.stats import figure, percentile
from profiler.system import SystemSampler
from profiler.theory import flops_per_token

Emit = Callable[[dict], None]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise NotImplementedError(
            f"device = {name!r} but this machine has no CUDA GPU visible to torch; use cpu or auto"
        )
    device = torch.device(name)
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise NotImplementedError(f"{name} does not exist: {torch.cuda.device_count()} GPU(s) visible")
    return device


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def torch_memory(device: torch.device) -> dict[str, float | None]:
    if device.type != "cuda":
        return {"torch_allocated_bytes": None, "torch_reserved_bytes": None,
                "torch_peak_allocated_bytes": None}
    return {"torch_allocated_bytes": torch.cuda.memory_allocated(device),
            "torch_reserved_bytes": torch.cuda.memory_reserved(device),
            "torch_peak_allocated_bytes": torch.cuda.max_memory_allocated(device)}


def build_optimizer(model: torch.nn.Module, config: RunConfig) -> torch.optim.Optimizer:
    # Decoupled weight decay on matrices only: biases and LayerNorm gains are not decayed.
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    train = config.train
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": train.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=train.learning_rate, betas=(train.beta1, train.beta2),
    )


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    model.eval()
    losses = [model(x, y)[1].item() for x, y in batches]
    model.train()
    return sum(losses) / len(losses)


def run(config: RunConfig, emit: Emit, control: Any) -> dict:
    """Train per `config`, emitting started / sample / event messages; return the summary."""
    train_cfg, limits = config.train, config.limits
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    shape = GPT_PRESETS[config.model.preset]
    setup_started = time.perf_counter()

    model = build_gpt(config.model.preset, config.model.dropout).to(device)
    corpus = load_corpus(config.data.source, config.data.path, config.data.max_train_bytes,
                         config.data.val_fraction, shape.vocab_size, config.seed)
    train_batches = BatchSampler(corpus.train, train_cfg.batch_size, train_cfg.seq_len,
                                 config.seed, device)
    # Fixed validation batches: every evaluation sees the same text, so the curve is comparable.
    val_sampler = BatchSampler(corpus.val, train_cfg.batch_size, train_cfg.seq_len,
                               config.seed + 1, device)
    val_batches = [val_sampler.next() for _ in range(train_cfg.eval_batches)]
    optimizer = build_optimizer(model, config)
    tokens_per_step = train_cfg.batch_size * train_cfg.seq_len
    n_params = model.parameter_count()
    flops_token = flops_per_token(shape, train_cfg.seq_len)
    gpu_index = (device.index or 0) if device.type == "cuda" else None
    sampler = SystemSampler(period_s=0.2, gpu_index=gpu_index).start()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    emit({"type": "started", "run": {
        "workload": "train",
        "device": str(device),
        "model": {"preset": config.model.preset, "parameters": n_params, **shape.as_dict()},
        "data": corpus.description,
        "tokens_per_step": tokens_per_step,
        "warmup_steps": limits.warmup_steps,
        "steps": limits.steps,
        "optimizer": "AdamW",
        "theory": {"flops_per_token": flops_token},
        "setup_time_s": time.perf_counter() - setup_started,
    }})

    run_started = time.perf_counter()
    step_times: list[float] = []   # measured steps only
    train_losses: list[float] = []
    val_losses: list[tuple[int, float]] = []
    measured_tokens = 0
    steps_done = 0
    stopped_early = False
    stop_reason = "step limit reached"
    eval_time = 0.0

    def validation(step: int) -> float:
        nonlocal eval_time
        started = time.perf_counter()
        value = evaluate(model, val_batches)
        eval_time += time.perf_counter() - started
        val_losses.append((step, value))
        return value

    if train_cfg.eval_interval:
        emit({"type": "sample", "step": 0, "time": 0.0, "phase": "eval",
              "metrics": {"loss_val": validation(0)}})

    try:
        for step in range(1, limits.steps + 1):
            for command in control.poll():
                emit({"type": "event", "kind": "refused", "step": step,
                      "message": f"{command['type']} {command.get('technique', '')}".strip()
                      + " cannot change mid-run in this version; restart the run with the change"})
            if control.should_stop:
                stopped_early, stop_reason = True, "stopped by request"
                break
            if limits.time_s and time.perf_counter() - run_started - eval_time >= limits.time_s:
                stop_reason = "time limit reached"
                break
            if step == limits.warmup_steps + 1:
                emit({"type": "event", "kind": "phase", "step": step,
                      "message": f"warmup over: steps {step}+ count in the summary"})

            started = time.perf_counter()
            x, y = train_batches.next()
            _, loss = model(x, y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            synchronize(device)
            loss_value = loss.item()
            step_time = time.perf_counter() - started

            steps_done = step
            warm = step <= limits.warmup_steps
            if not warm:
                step_times.append(step_time)
                measured_tokens += tokens_per_step
            train_losses.append(loss_value)
            if not math.isfinite(loss_value):
                emit({"type": "event", "kind": "warning", "step": step,
                      "message": f"loss is {loss_value} at step {step}: lower the learning rate"})
            metrics: dict[str, float | None] = {
                "loss_train": loss_value,
                "lr": optimizer.param_groups[0]["lr"],
                "step_time_s": step_time,
                "tokens_per_s": tokens_per_step / step_time,
                **{k: v for k, v in sampler.latest().items()},
                **torch_memory(device),
            }
            last = step == limits.steps
            if train_cfg.eval_interval and (step % train_cfg.eval_interval == 0 or last):
                metrics["loss_val"] = validation(step)
            emit({"type": "sample", "step": step, "time": time.perf_counter() - run_started,
                  "phase": "warmup" if warm else "measure", "metrics": metrics})
    finally:
        sampler.read_now()
        sampler.stop()

    peaks = sampler.peaks()
    wall = time.perf_counter() - run_started
    measured = len(step_times)
    window = (f"steps {limits.warmup_steps + 1}..{steps_done} ({measured} steps), "
              f"{limits.warmup_steps} warmup steps excluded")
    total_time = sum(step_times)
    tokens_per_s = measured_tokens / total_time if total_time > 0 else None
    last_losses = train_losses[-10:]
    mem = torch_memory(device)
    summary = {
        "workload": "train",
        "stopped_early": stopped_early,
        "stop_reason": stop_reason,
        "steps_completed": steps_done,
        "measured_steps": measured,
        "device": str(device),
        "parameters": n_params,
        "figures": {
            "tokens_per_s": figure(tokens_per_s, "tokens/s", f"tokens / summed step wall time over {window}"),
            "step_time_p50_s": figure(percentile(step_times, 50), "s", f"median step time over {window}"),
            "step_time_p90_s": figure(percentile(step_times, 90), "s", f"90th percentile over {window}"),
            "step_time_p99_s": figure(percentile(step_times, 99), "s", f"99th percentile over {window}"),
            "loss_train_final": figure(sum(last_losses) / len(last_losses) if last_losses else None,
                                       "nats/token", "mean train loss of the last 10 steps"),
            "loss_val_first": figure(val_losses[0][1] if val_losses else None, "nats/token",
                                     "validation loss before the first step"),
            "loss_val_final": figure(val_losses[-1][1] if val_losses else None, "nats/token",
                                     f"validation loss at step {val_losses[-1][0] if val_losses else 'n/a'}"),
            "peak_rss_bytes": figure(peaks.get("rss_bytes"), "bytes",
                                     "highest worker RSS seen by the 0.2 s sampler and at each step"),
            "peak_torch_allocated_bytes": figure(mem["torch_peak_allocated_bytes"], "bytes",
                                                 "torch.cuda.max_memory_allocated (n/a on CPU)"),
            "peak_gpu_memory_used_bytes": figure(peaks.get("gpu_memory_used_bytes"), "bytes",
                                                 "highest NVML device memory seen (n/a without a GPU)"),
            "flops_per_token": figure(flops_token, "FLOP", "6N + 12·L·H·Q·T (training)"),
            "train_time_s": figure(wall - eval_time, "s", "wall time of the step loop, validation excluded"),
            "eval_time_s": figure(eval_time, "s", "wall time spent in validation"),
            "tokens_seen": figure(steps_done * tokens_per_step, "tokens", "all steps, warmup included"),
        },
    }
    return summary
