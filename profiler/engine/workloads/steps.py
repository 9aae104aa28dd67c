"""The training step and what runs beside it, shared by every workload that trains (train,
distill, the bench's reference loop, the doctor): one optimizer step over micro-batches with
gradients synchronised once, the language-modelling loss, held-out evaluation, the untimed
memory probes on one schedule, a brief unmeasured training (a teacher's, a fine-tune after
pruning), and how far a job's replicas drifted. The loop around the step is loop.py's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from profiler.engine.distributed import DistContext
from profiler.engine.workloads.setup import Emit, synchronize
from profiler.errors import is_out_of_memory
from profiler.figures.stats import figure
from profiler.measure.memory_probe import probe_step
from profiler.wire import protocol
from techniques import runtime


@torch.no_grad()
def evaluate(state: runtime.TrainState, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    state.model.eval()
    losses = []
    for x, y in batches:
        with state.step_context():
            losses.append(state.forward_model(x, y)[1].item())
    state.model.train()
    return sum(losses) / len(losses)


def accumulated_step(state: runtime.TrainState, batches: Any, step: int,
                     loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                     ) -> tuple[torch.Tensor, float | None, int]:
    """One optimizer step over state.micro_batches micro-batches. loss_of(x, y) returns a vector
    whose first entry is the loss to minimise (the others are reported beside it); returns the
    vector's mean over micro-batches, the pre-clip gradient norm and the tokens seen.

    Gradients are synchronised across processes once, on the last micro-batch's backward
    (state.grad_sync is a no-op without a parallel wrapper)."""
    optimizer = state.optimizer
    for group in optimizer.param_groups:
        group["lr"] = state.learning_rate(step)
    micro = state.micro_batches
    totals = None
    tokens = 0
    for index in range(micro):
        x, y = batches.next()
        with state.grad_sync(index == micro - 1):
            parts = loss_of(x, y)
            state.scaler.scale(parts[0] / micro).backward()
        totals = parts.detach() if totals is None else totals + parts.detach()
        tokens += x.numel()
    grad_norm = state.clip_gradients()
    state.scaler.step(optimizer)
    state.scaler.update()
    optimizer.zero_grad(set_to_none=True)
    synchronize(state.device)
    return totals / micro, grad_norm, tokens


def lm_loss_of(state: runtime.TrainState) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The language-modelling loss of one micro-batch, as accumulated_step's loss_of."""
    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with state.step_context():
            _, loss = state.forward_model(x, y)
        return loss.reshape(1)

    return loss_of


def train_step(state: runtime.TrainState, batches: Any, step: int) -> tuple[float, float | None, int]:
    """One optimizer step of language modelling: (mean loss, grad norm, tokens)."""
    parts, grad_norm, tokens = accumulated_step(state, batches, step, lm_loss_of(state))
    return parts[0].item(), grad_norm, tokens


class MemoryProbes:
    """The bytes a step holds, measured on untimed probe forward/backwards (memory_probe): one
    between the last warmup step and its sample message (before step 1 without warmup), and
    one before each mid-run change's first step (the switch step, left out of the segment's
    timing), never inside a step's clock nor between two measured steps' messages; each on a
    micro-batch of the step's shape drawn from its own sampler (the training batches and the
    random state are left as they were)."""

    def __init__(self, state: runtime.TrainState, batches: Any,
                 loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        self.state, self.batches, self.loss_of = state, batches, loss_of
        self.taken: list[dict] = []
        self.why_not = "n/a: no step after warmup to probe"

    def take(self, where: str) -> None:
        """Probe now; `where` says when, for the figures' how ("after step 2, the last warmup
        step")."""
        if self.state.compiled:
            self.taken.append({"where": where, "why_not": (
                "n/a under torch.compile: the saved-tensor hooks would recompile the model, and "
                "the eager model's figure is not the compiled one's")})
            return
        x, y = self.batches.next()
        try:
            found = probe_step(self.state, self.loss_of, x, y)
        except (MemoryError, RuntimeError) as exc:
            # Alone, a probe that does not fit costs its figures, not the run; in a job every
            # rank must run the same backwards, so there it ends the job as a step would.
            dist = self.state.dist
            if not is_out_of_memory(exc) or (dist is not None and dist.enabled):
                raise
            self.state.optimizer.zero_grad(set_to_none=True)
            self.taken.append({"where": where, "why_not": (
                f"n/a: the memory probe {where} ran out of memory ({type(exc).__name__}); the "
                "steps themselves went on")})
            return
        self.taken.append({"where": where, **found})
        synchronize(self.state.device)

    # The probes' schedule, one for every loop that trains (train, distill, bench overhead's
    # reference loop): before step 1 of a run without warmup, before the first step of each change
    # after warmup, and after the last warmup step; never inside a step's clock.
    def before_step(self, step: int, warmup_steps: int, changed: bool) -> None:
        if (step == 1 and not warmup_steps) or (changed and step > warmup_steps):
            self.take(f"before step {step}")

    def after_step(self, step: int, warmup_steps: int) -> None:
        if step == warmup_steps:
            self.take(f"after step {step}, the last warmup step")

    def figures(self, optimizer_bytes: int | None) -> dict:
        last = self.taken[-1] if self.taken else None
        if last is not None and "why_not" in last:  # the configuration the run ended in
            last, self.why_not = None, last["why_not"]
        changed = ", the last change's probe" if len(self.taken) > 1 else ""
        where = (f"one untimed probe forward/backward of a micro-batch {last['where']}"
                 f"{changed} (not a timed step)") if last else self.why_not
        return {
            "saved_for_backward_bytes": figure(
                last and last["saved_for_backward_bytes"], "bytes",
                f"bytes autograd saves for backward in one micro-batch's forward, as "
                f"saved_tensors_hooks see them (each storage once, parameters not counted): "
                f"{where}" if last else where),
            "gradient_bytes": figure(
                last and last["gradient_bytes"], "bytes",
                f"bytes of the parameters' gradients after the backward: {where}" if last
                else where),
            "optimizer_state_bytes": figure(
                optimizer_bytes, "bytes", "bytes of the optimizer's state tensors after the last "
                "step (0 for an optimizer without state, e.g. SGD without momentum)"),
        }


def brief_training(state: runtime.TrainState, batches: Any, steps: int,
                   optimizer: torch.optim.Optimizer, emit: Emit, control: Any, phase: str,
                   metric: str) -> list[float]:
    """A few plain steps outside the measured loop (a teacher's pre-training, fine-tuning after
    pruning), one `phase` sample each; returns the losses. The model is left in eval mode."""
    model = state.model
    model.train()
    losses: list[float] = []
    started = time.perf_counter()
    for step in range(1, steps + 1):
        if control.should_stop:
            break
        x, y = batches.next()
        with state.step_context():
            _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        emit(protocol.sample(step, time.perf_counter() - started, {metric: losses[-1]}, phase))
    model.eval()
    return losses


def replica_spread(state: runtime.TrainState, dist: DistContext) -> float | None:
    """Largest relative difference of a parameter checksum across ranks (0 = replicas agree)."""
    if not dist.enabled:
        return None
    total = 0.0
    squares = 0.0
    with torch.no_grad():
        for param in state.model.parameters():
            full = param.full_tensor() if hasattr(param, "full_tensor") else param
            total += float(full.double().sum())
            squares += float(full.double().pow(2).sum())
    rows = dist.gather_floats([total, squares])
    spread = 0.0
    for column in range(2):
        values = [row[column] for row in rows]
        scale = max(abs(v) for v in values) or 1.0
        spread = max(spread, (max(values) - min(values)) / scale)
    return spread
