"""The distill workload: a teacher's next-token distributions train a (smaller) student.

loss = alpha · KL(teacher ‖ student, both softened by temperature T) · T² + (1 - alpha) · CE,
the T² keeping the soft term's gradients on the scale of the hard one (Hinton et al. 2015).
The student trains with the same machinery as the train workload (optimizer, schedule,
precision and the other training techniques); the teacher only runs forward, without gradients.
A preset teacher can first be trained briefly on the same text (distill.teacher_train_steps).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from profiler import model_source, segments, weights
from profiler.config import RunConfig
from profiler.data import BatchSampler
from profiler.errors import Unsupported
from profiler.stats import figure, timed_figure
from profiler.workloads.setup import Emit, prepare
from profiler.workloads.train import (
    DIVERGED,
    MemoryProbes,
    accumulated_step,
    brief_training,
    divergence,
    handle_command,
    tokens_per_step,
)
from techniques import runtime
from techniques.optimizer import state_bytes


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
          temperature: float) -> torch.Tensor:
    """Mean over tokens of KL(teacher ‖ student) between their softmax(logits / T)."""
    vocab = student_logits.size(-1)
    log_s = F.log_softmax(student_logits.float().reshape(-1, vocab) / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits.float().reshape(-1, vocab) / temperature, dim=-1)
    return F.kl_div(log_s, log_t, log_target=True, reduction="batchmean")


def pretrain_teacher(teacher: runtime.TrainState, batches: BatchSampler, steps: int, lr: float,
                     emit: Emit, control: Any) -> str:
    """Train a teacher briefly (AdamW, constant lr) so it has something to teach."""
    optimizer = torch.optim.AdamW(teacher.model.parameters(), lr=lr, weight_decay=0.1,
                                  betas=(0.9, 0.95))
    losses = brief_training(teacher, batches, steps, optimizer, emit, control, "teacher",
                            "teacher_loss_train")
    if not losses:
        return "the teacher was not trained (stopped)"
    return f"teacher trained {len(losses)} steps: loss {losses[0]:.3f} -> {losses[-1]:.3f}"


def distill_loss_of(state: runtime.TrainState, teacher, alpha: float, temperature: float
                    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The blended loss of one micro-batch and its parts (loss, ce, kl), as accumulated_step's
    loss_of."""
    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), state.step_context():
            teacher_logits, _ = teacher(x)
        with state.step_context():
            logits, ce = state.forward_model(x, y)
        kl = kd_kl(logits, teacher_logits, temperature)
        return torch.stack([alpha * kl * temperature ** 2 + (1 - alpha) * ce, ce, kl])

    return loss_of


def distill_step(state: runtime.TrainState, teacher, batches: BatchSampler, step: int,
                 alpha: float, temperature: float) -> dict:
    """One optimizer step of the student on the blended loss; returns its parts. The blend has
    its own key (loss_distill); the student's cross-entropy on the text is loss_train, the same
    figure a train run reports, so the two are compared like with like."""
    totals, grad_norm, tokens = accumulated_step(state, batches, step,
                                                 distill_loss_of(state, teacher, alpha, temperature))
    loss, ce, kl = totals.tolist()
    return {"loss_distill": loss, "loss_train": ce, "kl_to_teacher": kl, "grad_norm": grad_norm,
            "tokens": tokens}


@torch.no_grad()
def evaluate(student: runtime.TrainState, teacher: runtime.TrainState,
             batches: list) -> tuple[float, float]:
    """Student's held-out cross-entropy and its KL to the teacher at T = 1, each forward pass in
    its state's step context."""
    student.model.eval()
    ces, kls = [], []
    for x, y in batches:
        with student.step_context():
            logits, ce = student.forward_model(x, y)
        with teacher.step_context():
            teacher_logits, _ = teacher.model(x)
        ces.append(ce.item())
        kls.append(kd_kl(logits, teacher_logits, 1.0).item())
    student.model.train()
    return sum(ces) / len(ces), sum(kls) / len(kls)


def run(config: RunConfig, emit: Emit, control: Any) -> dict:
    """Distill the teacher into the student `model`; return the summary."""
    train_cfg, limits, dist = config.train, config.limits, config.distill
    # The student trains with every technique; pruning masks stay through training.
    prep = prepare(config, emit, control, keep_masks=True)
    state, device, student = prep.state, prep.device, prep.model
    student_origin = prep.origin
    teacher, teacher_origin = weights.load_model(dist.teacher, device, dropout=0.0)
    if teacher.shape.vocab_size != student.shape.vocab_size:  # validate() says so too
        raise Unsupported(
            f"distill.teacher: the teacher's vocabulary ({teacher.shape.vocab_size} tokens) "
            f"differs from the student's ({student.shape.vocab_size}); KL needs the same one")
    from profiler.models.hf import same_vocabulary

    if not same_vocabulary(getattr(teacher, "tokenizer", None),
                           getattr(student, "tokenizer", None)):
        raise Unsupported(
            "distill.teacher: the teacher and the student use different tokenizers, so the same "
            "token id means different text to each; choose a teacher with the student's tokenizer")
    # The teacher runs forward in the same step context (autocast, SDPA backend) as the student.
    teacher_state = state.fork(teacher)
    batches = prep.batches(train_cfg.batch_size, train_cfg.seq_len)
    val_sampler = prep.batches(train_cfg.batch_size, train_cfg.seq_len, 1, val=True)
    val_batches = [val_sampler.next() for _ in range(train_cfg.eval_batches)]
    applied = prep.applied
    teacher_params, student_params = teacher.parameter_count(), student.parameter_count()
    prep.started(
        "distill",
        teacher={"preset": model_source.model_name(dist.teacher), "origin": teacher_origin,
                 "parameters": teacher_params, **teacher.shape.as_dict()},
        batch_size=train_cfg.batch_size, seq_len=train_cfg.seq_len, steps=limits.steps,
        micro_batches=state.micro_batches, tokens_per_step=tokens_per_step(state),
        warmup_steps=limits.warmup_steps, alpha=dist.alpha, temperature=dist.temperature)
    teacher.eval()
    teacher.requires_grad_(False)
    if dist.teacher_train_steps:
        teacher.requires_grad_(True)
        teacher_batches = prep.batches(train_cfg.batch_size, train_cfg.seq_len, 2)
        report = pretrain_teacher(teacher_state, teacher_batches, dist.teacher_train_steps,
                                  train_cfg.learning_rate, emit, control)
        teacher.requires_grad_(False)
        emit({"type": "event", "kind": "info", "step": 0, "message": report})
    teacher_val = evaluate(teacher_state, teacher_state, val_batches)[0]

    run_started = time.perf_counter()
    step_times: list[float] = []
    step_rates: list[float] = []  # tokens/s of each measured step
    history: list[dict] = []
    evals: list[tuple[int, float, float]] = []
    step_records: list[dict] = []  # every step, for the figures of each segment between changes
    toggles: list[dict] = []       # the mid-run changes that held (segment boundaries)
    stopped_early, stop_reason, steps_done = False, "step limit reached", 0

    def note_toggle(message: dict) -> None:
        if message.get("type") == "event" and message.get("kind") == "toggle":
            toggles.append(message)
        emit(message)
    eval_time = 0.0

    def validation(step: int) -> dict:
        nonlocal eval_time
        started = time.perf_counter()
        loss_val, kl_val = evaluate(state, teacher_state, val_batches)
        eval_time += time.perf_counter() - started
        evals.append((step, loss_val, kl_val))
        return {"loss_val": loss_val, "kl_to_teacher_val": kl_val}

    emit({"type": "sample", "step": 0, "time": 0.0, "phase": "eval",
          "metrics": {**validation(0), "teacher_loss_val": teacher_val}})
    sampler = prep.sampler
    probes = MemoryProbes(state, prep.batches(train_cfg.batch_size, train_cfg.seq_len, 3),
                          distill_loss_of(state, teacher, dist.alpha, dist.temperature))
    try:
        for step in range(1, limits.steps + 1):
            # Techniques switched mid-run apply from this step on, as in the train workload.
            changed = sum(handle_command(command, state, step, note_toggle)
                          for command in control.poll())
            if control.should_stop:
                stopped_early, stop_reason = True, "stopped by request"
                break
            # The time limit counts training, not validation (as in the train workload).
            if limits.time_s and time.perf_counter() - run_started - eval_time >= limits.time_s:
                stop_reason = "time limit reached"
                break
            probes.before_step(step, limits.warmup_steps, bool(changed))  # before the clock
            if step == limits.warmup_steps + 1 or changed:
                prep.memory.restart()  # each segment's allocator peak is its own
            started = time.perf_counter()
            parts = distill_step(state, teacher, batches, step, dist.alpha, dist.temperature)
            step_time = time.perf_counter() - started
            steps_done = step
            warm = step <= limits.warmup_steps
            history.append(parts)
            tokens = parts.pop("tokens")
            if not warm:
                step_times.append(step_time)
                step_rates.append(tokens / step_time)
            local, torch_mem = sampler.latest(), prep.memory.read()
            step_records.append(segments.step_record(
                step, step_time, tokens, parts["loss_train"], local["rss_bytes"],
                torch_mem["torch_peak_allocated_bytes"]))
            metrics = {**parts, "lr": state.optimizer.param_groups[0]["lr"],
                       "step_time_s": step_time, "tokens_per_s": tokens / step_time,
                       **local, **torch_mem}
            diverged = divergence(parts["loss_distill"], step, metrics["lr"])  # what it minimises
            if diverged:
                prep.warn(diverged)
            last = step == limits.steps
            if last or (train_cfg.eval_interval and step % train_cfg.eval_interval == 0):
                metrics.update(validation(step))
            probes.after_step(step, limits.warmup_steps)  # before the measured steps' messages
            emit({"type": "sample", "step": step, "time": time.perf_counter() - run_started,
                  "phase": "warmup" if warm else "measure", "metrics": metrics})
            if diverged:  # as in the train workload: stop, keep what was measured
                stop_reason = diverged
                break
    finally:
        prep.stop_sampler()
    # Masks folded in; the student's weights saved through the one save path (HF layouts too).
    saved = prep.finish(steps_done)["checkpoint"]
    parts = segments.split(step_records, toggles, limits.warmup_steps)
    window = None
    ended_in = segments.headline(parts, step_records)  # never an average of configurations
    if ended_in:
        step_times, step_rates, window = (ended_in["step_times"], ended_in["step_rates"],
                                          ended_in["window"])
    summary = summarize(locals())
    summary["segments"] = parts
    summary["diverged"] = stop_reason.startswith(DIVERGED)
    return summary


def summarize(v: dict) -> dict:
    evals, history, config = v["evals"], v["history"], v["config"]
    last = history[-10:]

    def mean(key: str) -> float | None:
        return sum(h[key] for h in last) / len(last) if last else None

    window = v["window"] or f"{len(v['step_times'])} steps after {config.limits.warmup_steps} warmup"
    figures = {
        "loss_val_first": figure(evals[0][1], "nats/token", "student before the first step"),
        "loss_val_final": figure(evals[-1][1], "nats/token", f"student at step {evals[-1][0]}"),
        "kl_to_teacher_val_first": figure(evals[0][2], "nats/token",
                                          "KL(teacher‖student) at T = 1 on held-out text, before"),
        "kl_to_teacher_val_final": figure(evals[-1][2], "nats/token",
                                          f"the same at step {evals[-1][0]}"),
        "teacher_loss_val": figure(v["teacher_val"], "nats/token", "teacher on the same text"),
        "loss_train_final": figure(mean("loss_train"), "nats/token",
                                   "the student's cross-entropy on the text (the part of its "
                                   "objective a train run's loss is), mean of the last 10 steps"),
        "loss_distill_final": figure(mean("loss_distill"), "nats/token",
                                     f"the distillation objective (alpha = {config.distill.alpha}"
                                     ": KL·T² and cross-entropy blended), mean of the last 10 "
                                     "steps"),
        "kl_to_teacher_final": figure(mean("kl_to_teacher"), "nats/token",
                                      f"KL at T = {config.distill.temperature}, last 10 steps"),
        "step_time_p50_s": timed_figure(v["step_times"], "s", f"median over {window}"),
        "tokens_per_s": timed_figure(v["step_rates"], "tokens/s",
                                     f"median of the student's per-step tokens/s over {window}"),
        "teacher_parameters": figure(v["teacher_params"], "", "teacher"),
        "parameters": figure(v["student_params"], "", "student"),
        "compression_ratio": figure(v["teacher_params"] / v["student_params"], "x",
                                    "teacher parameters / student parameters"),
        **v["probes"].figures(state_bytes(v["state"].optimizer) if v["steps_done"] else None),
    }
    return {"workload": "distill", "stopped_early": v["stopped_early"],
            "stop_reason": v["stop_reason"], "steps_completed": v["steps_done"],
            "measured_steps": len(v["step_times"]), "device": str(v["device"]),
            "parameters": v["student_params"], "teacher": v["teacher_origin"],
            "model": v["student_origin"], "techniques": v["applied"],
            "checkpoint": v["saved"], "figures": figures, **v["prep"].contention()}
