"""The distill workload: a teacher's next-token distributions train a (smaller) student.

loss = alpha · KL(teacher ‖ student, both softened by temperature T) · T² + (1 - alpha) · CE,
the T² keeping the soft term's gradients on the scale of the hard one (Hinton et al. 2015).
The student trains with the same machinery as the train workload (optimizer, schedule,
precision and the other training techniques); the teacher only runs forward, without gradients.
A preset teacher can first be trained briefly on the same text (distill.teacher_train_steps).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from profiler.config import RunConfig
from profiler.engine import weights
from profiler.engine.data import BatchSampler
from profiler.engine.workloads.loop import Loop, StepResult, tokens_per_step
from profiler.engine.workloads.loop_figures import Headline, common_figures, headline
from profiler.engine.workloads.setup import Emit, prepare
from profiler.engine.workloads.steps import MemoryProbes, accumulated_step, brief_training
from profiler.errors import Unsupported
from profiler.figures.stats import figure
from profiler.measure.capture import ProfileCapture
from profiler.models import source as model_source
from profiler.wire import protocol
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
        emit(protocol.info(report, step=0))
    teacher_val = evaluate(teacher_state, teacher_state, val_batches)[0]

    def step(number: int) -> StepResult:
        parts = distill_step(state, teacher, batches, number, dist.alpha, dist.temperature)
        tokens = parts.pop("tokens")
        return StepResult(parts["loss_distill"], parts, tokens)

    def validate() -> dict:
        loss_val, kl_val = evaluate(state, teacher_state, val_batches)
        found = {"loss_val": loss_val, "kl_to_teacher_val": kl_val}
        if not loop.record.evaluations:  # the first: the teacher's beside the student's
            found["teacher_loss_val"] = teacher_val
        return found

    probes = MemoryProbes(state, prep.batches(train_cfg.batch_size, train_cfg.seq_len, 3),
                          distill_loss_of(state, teacher, dist.alpha, dist.temperature))
    # A `profile` command records the student's next N steps with torch.profiler.
    capture = ProfileCapture(config.output_dir, student, device, emit, compiled=state.compiled,
                             enabled=prep.dist.is_speaker)
    loop = Loop(prep, control, emit, step, validate, probes, "loss_distill", capture)
    record = loop.run()
    # Masks folded in; the student's weights saved through the one save path (HF layouts too).
    saved = prep.finish(record.steps_done)["checkpoint"]
    head = headline(record)  # never an average of configurations
    summary = summarize(loop, head, teacher_val, (teacher_params, student_params),
                        (teacher_origin, student_origin))
    summary["checkpoint"] = saved
    summary["segments"] = head.segments
    summary["diverged"] = record.diverged
    summary.update(prep.contention())
    return summary


def summarize(loop: Loop, head: Headline, teacher_val: float, params: tuple[int, int],
              origins: tuple[str, str]) -> dict:
    """The distill workload's summary, read from the loop's record: the figures every training
    workload shares, and distillation's own."""
    record, config = loop.record, loop.state.config
    last = record.step_metrics[-10:]
    teacher_params, student_params = params

    def mean(key: str) -> float | None:
        values = [m[key] for m in last if isinstance(m.get(key), (int, float))]
        return sum(values) / len(values) if values else None

    evals = record.evaluations
    first, final = (evals[0], evals[-1]) if evals else ((None, {}), (None, {}))
    figures = common_figures(loop, head, unit_of_work="student's per-step")
    figures.update({
        "loss_val_first": figure(first[1].get("loss_val"), "nats/token",
                                 "student before the first step"),
        "loss_val_final": figure(final[1].get("loss_val"), "nats/token",
                                 f"student at step {final[0] if evals else 'n/a'}"),
        "kl_to_teacher_val_first": figure(first[1].get("kl_to_teacher_val"), "nats/token",
                                          "KL(teacher‖student) at T = 1 on held-out text, before"),
        "kl_to_teacher_val_final": figure(final[1].get("kl_to_teacher_val"), "nats/token",
                                          f"the same at step {final[0] if evals else 'n/a'}"),
        "teacher_loss_val": figure(teacher_val, "nats/token", "teacher on the same text"),
        "loss_train_final": figure(mean("loss_train"), "nats/token",
                                   "the student's cross-entropy on the text (the part of its "
                                   "objective a train run's loss is), mean of the last 10 steps"),
        "loss_distill_final": figure(mean("loss_distill"), "nats/token",
                                     f"the distillation objective (alpha = {config.distill.alpha}"
                                     ": KL·T² and cross-entropy blended), mean of the last 10 "
                                     "steps"),
        "kl_to_teacher_final": figure(mean("kl_to_teacher"), "nats/token",
                                      f"KL at T = {config.distill.temperature}, last 10 steps"),
        "teacher_parameters": figure(teacher_params, "", "teacher"),
        "parameters": figure(student_params, "", "student"),
        "compression_ratio": figure(teacher_params / student_params, "x",
                                    "teacher parameters / student parameters"),
        **loop.probes.figures(state_bytes(loop.state.optimizer) if record.steps_done else None),
    })
    return {"workload": "distill", "stopped_early": record.stopped_early,
            "stop_reason": record.stop_reason, "steps_completed": record.steps_done,
            "measured_steps": len(head.records), "device": str(loop.state.device),
            "parameters": student_params, "teacher": origins[0], "model": origins[1],
            "techniques": loop.prep.applied, "figures": figures}
