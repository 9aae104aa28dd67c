"""The train workload: language modelling (the built-in GPT or a Hugging Face causal LM), one
sample message per step.

Read it top to bottom: set up (device, seed, model, data, optimizer), then one loop in which each
step is timed from batch fetch to optimizer step with the device synchronised, then a summary in
which warmup steps are left out of every speed figure.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

from profiler import segments
from profiler.capture import ProfileCapture
from profiler.config import RunConfig
from profiler.distributed import DistContext
from profiler.energy import EnergyMeter, energy_figures, job_joules
from profiler.errors import Unsupported, is_out_of_memory, out_of_memory
from profiler.memory_probe import probe_step
from profiler.roofline import NA_HINT, mfu_vs_measured
from profiler.stats import figure, percentile, timed_figure
from profiler.system import SAMPLER_PERIOD_S
from profiler.theory import flops_per_token, mfu, predict_for_config
from profiler.workloads.setup import Emit, prepare, synchronize
from techniques import registry, runtime
from techniques.compile import eager_how
from techniques.optimizer import state_bytes, trained_numels


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
        emit({"type": "sample", "step": step, "time": time.perf_counter() - started,
              "phase": phase, "metrics": {metric: losses[-1]}})
    model.eval()
    return losses


def run(config: RunConfig, emit: Emit, control: Any) -> dict:
    """Train per `config`, emitting started / sample / event messages; return the summary."""
    train_cfg, limits = config.train, config.limits
    # Pruning masks stay through training (they hold pruned weights at zero); finish() folds them.
    prep = prepare(config, emit, control, keep_masks=True)
    state, dist, device, model = prep.state, prep.dist, prep.device, prep.model
    # Each rank takes its own slice of every global batch.
    train_batches = prep.batches(train_cfg.batch_size, train_cfg.seq_len, sharded=True)
    # Fixed validation batches: every evaluation sees the same text, so the curve is comparable;
    # the job's global batch size, so a 2-process run and a 1-process run with twice the batch
    # are validated on the same text.
    val_sampler = prep.batches(train_cfg.batch_size * dist.world_size, train_cfg.seq_len, 1,
                               val=True)
    val_batches = [val_sampler.next() for _ in range(train_cfg.eval_batches)]
    applied = prep.applied
    # A `profile` command records the next N steps with torch.profiler (rank 0 only).
    capture = ProfileCapture(config.output_dir, model, device, emit, compiled=state.compiled,
                             enabled=dist.is_speaker)
    n_params = model.parameter_count()
    flops_token = flops_per_token(model.shape, train_cfg.seq_len)
    sampler = prep.sampler
    # The probes draw micro-batches of the step's shape from their own sampler.
    probes = MemoryProbes(state, prep.batches(train_cfg.batch_size, train_cfg.seq_len, 2,
                                              sharded=True), lm_loss_of(state))
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

    run_started = time.perf_counter()
    step_times: list[float] = []   # measured steps only
    step_rates: list[float] = []   # tokens/s of each measured step
    step_records: list[dict] = []  # every step, for the figures of each segment between changes
    toggles: list[dict] = []       # the mid-run changes that held (segment boundaries)

    def note_toggle(message: dict) -> None:
        if message.get("type") == "event" and message.get("kind") == "toggle":
            toggles.append(message)
        emit(message)
    train_losses: list[float] = []
    val_losses: list[tuple[int, float]] = []
    measured_tokens = 0
    steps_done = 0
    tokens_seen = 0
    first_step_time: float | None = None
    stopped_early = False
    stop_reason = "step limit reached"
    eval_time = 0.0
    changes = 0
    rank_history: list[list[list[float | None]]] = []
    memory = prep.memory
    energy = EnergyMeter(sampler)
    step_energy: dict[int, float | None] = {}  # joules of each step, summed over the job's GPUs

    def validation(step: int) -> float:
        nonlocal eval_time
        started = time.perf_counter()
        value = evaluate(state, val_batches)
        eval_time += time.perf_counter() - started
        val_losses.append((step, value))
        return value

    if train_cfg.eval_interval:
        emit({"type": "sample", "step": 0, "time": 0.0, "phase": "eval",
              "metrics": {"loss_val": validation(0)}})

    rss_before_steps = sampler.read_now()["rss_bytes"]
    try:
        for step in range(1, limits.steps + 1):
            out_of_time = bool(limits.time_s) and (
                time.perf_counter() - run_started - eval_time >= limits.time_s)
            commands, stop, out_of_time = job_commands(control, dist, out_of_time)
            changed = 0
            for command in commands:
                changed += handle_command(command, state, step, note_toggle, capture)
            changes += changed
            if stop:
                stopped_early, stop_reason = True, "stopped by request"
                break
            if out_of_time:
                stop_reason = "time limit reached"
                break
            probes.before_step(step, limits.warmup_steps, bool(changed))  # before clock and energy
            if step == limits.warmup_steps + 1:
                emit({"type": "event", "kind": "phase", "step": step,
                      "message": f"warmup over: steps {step}+ count in the summary"})
            if step == limits.warmup_steps + 1 or changed:
                memory.restart()  # each segment's peak is its own; the run's is kept apart

            energy.begin()
            started = time.perf_counter()
            try:
                loss_value, grad_norm, tokens = train_step(state, train_batches, step)
            except (MemoryError, RuntimeError) as exc:
                oom = out_of_memory(exc, f"step {step}", device)  # names the step and the memory
                if oom is None:
                    raise
                raise oom from exc
            step_time = time.perf_counter() - started
            joules = energy.end(step_time)
            capture.step_done(step_time)
            local = sampler.latest()
            torch_mem = memory.read()
            # Every rank's figures reach rank 0; a single process gathers only its own.
            ranks = dist.gather_floats([step_time, tokens, loss_value, local["rss_bytes"],
                                        torch_mem["torch_peak_allocated_bytes"], joules])
            per_rank_times = [r[0] for r in ranks]
            step_time = max(per_rank_times)  # the job's step ends when its slowest rank is done
            tokens = int(sum(r[1] for r in ranks))
            loss_value = sum(r[2] for r in ranks) / len(ranks)
            rank_history.append(ranks)
            step_energy[step] = job_joules(ranks, 5)  # every GPU's joules, summed

            steps_done = step
            tokens_seen += tokens
            if first_step_time is None:
                first_step_time = step_time
            warm = step <= limits.warmup_steps
            if not warm:
                step_times.append(step_time)
                step_rates.append(tokens / step_time)
                measured_tokens += tokens
            train_losses.append(loss_value)
            step_records.append(segments.step_record(
                step, step_time, tokens, loss_value, local["rss_bytes"],
                torch_mem["torch_peak_allocated_bytes"]))
            diverged = divergence(loss_value, step, state.optimizer.param_groups[0]["lr"])
            if diverged:
                emit({"type": "event", "kind": "warning", "step": step, "message": diverged})
            metrics: dict[str, float | None] = {
                "loss_train": loss_value,
                "lr": state.optimizer.param_groups[0]["lr"],
                "grad_norm": grad_norm,
                "step_time_s": step_time,
                "tokens_per_s": tokens / step_time,
                **local,
                **torch_mem,
            }
            if dist.enabled:
                for index, row in enumerate(ranks):
                    metrics[f"rank{index}_step_time_s"] = row[0]
                    metrics[f"rank{index}_rss_bytes"] = row[3]
                    metrics[f"rank{index}_torch_peak_allocated_bytes"] = row[4]
            last = step == limits.steps
            if train_cfg.eval_interval and (step % train_cfg.eval_interval == 0 or last):
                metrics["loss_val"] = validation(step)
            phase = ("compile" if state.compiled and step == 1 else "warmup") if warm else "measure"
            probes.after_step(step, limits.warmup_steps)  # timed steps and their messages after it
            emit({"type": "sample", "step": step, "time": time.perf_counter() - run_started,
                  "phase": phase, "metrics": metrics})
            if diverged:  # every later step would train on nan: stop, keep what was measured
                stop_reason = diverged
                break
    finally:
        capture.finish()
        prep.stop_sampler()

    # Masks folded in, then weights saved (rank 0 holds the whole model under DDP; sharded FSDP
    # weights are refused with a warning).
    saved = prep.finish(steps_done)["checkpoint"]
    parts = segments.split(step_records, toggles, limits.warmup_steps)
    window = None
    ended_in = segments.headline(parts, step_records)  # never an average of configurations
    headline_steps = [r["step"] for r in step_records if r["step"] > limits.warmup_steps]
    if ended_in:
        step_times, step_rates = ended_in["step_times"], ended_in["step_rates"]
        measured_tokens, window = ended_in["tokens"], ended_in["window"]
        headline_steps = [r["step"] for r in segments.last_timed(parts, step_records)]
    summary = summarize(state, locals_for_summary=dict(
        steps_done=steps_done, step_times=step_times, step_rates=step_rates,
        measured_tokens=measured_tokens,
        train_losses=train_losses, val_losses=val_losses, eval_time=eval_time,
        wall=time.perf_counter() - run_started, stopped_early=stopped_early,
        stop_reason=stop_reason, tokens_seen=tokens_seen, first_step_time=first_step_time,
        applied=applied, changes=changes, peaks=sampler.peaks(), n_params=n_params,
        rss_before_steps=rss_before_steps, rank_history=rank_history,
        energy=[step_energy.get(s) for s in headline_steps], energy_meter=energy,
        run_peak=memory.run_peak(), replica_spread=replica_spread(state, dist),
        flops_token=flops_token, window=window, probes=probes))
    summary["checkpoint"] = saved
    summary["segments"] = parts
    summary["diverged"] = stop_reason.startswith(DIVERGED)
    summary.update(prep.contention())
    return summary


DIVERGED = "diverged"


def divergence(loss: float, step: int, lr: float) -> str | None:
    """Why a run must stop when its loss is no longer a number (nan, inf): every later step
    trains on garbage, and a figure taken over them would be a lie. None while it is finite."""
    if math.isfinite(loss):
        return None
    return (f"{DIVERGED}: the training loss is {loss} at step {step} (learning rate {lr:g}), so "
            "the run stopped there; lower train.learning_rate, or enable grad_clip or "
            "lr_schedule")


def job_commands(control: Any, dist: DistContext, out_of_time: bool) -> tuple[list[dict], bool, bool]:
    """Rank 0's pending commands and stop decision, the same on every rank of a job."""
    shared = {"commands": control.poll(), "stop": control.should_stop, "out_of_time": out_of_time}
    if dist.enabled:
        shared = dist.broadcast_json(shared if dist.is_speaker else None)
    return shared["commands"], shared["stop"], shared["out_of_time"]


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


def tokens_per_step(state: runtime.TrainState) -> int:
    """Tokens one optimizer step of the job reads: micro-batches x batch x sequence x ranks
    (it changes when accumulation is switched mid-run)."""
    train = state.config.train
    return state.micro_batches * train.batch_size * train.seq_len * state.dist.world_size


def handle_command(command: dict, state: runtime.TrainState, step: int, emit: Emit,
                   capture: ProfileCapture | None = None) -> int:
    """A command that arrived mid-run; it applies from this step on. Returns 1 if it changed."""
    if command["type"] == "set":
        name, params = command["technique"], command["params"]
        try:
            report = runtime.change(state, name, params)
        except (runtime.Refused, Unsupported) as exc:
            emit({"type": "event", "kind": "refused", "step": step, "technique": name,
                  "params": params, "message": str(exc)})
            return 0
        emit({"type": "event", "kind": "toggle", "step": step, "technique": name,
              "params": params, "message": report, "tokens_per_step": tokens_per_step(state)})
        return 1
    if command["type"] == "profile" and capture is not None:
        why = capture.request(command["steps"], step)
        emit({"type": "event", "kind": "refused" if why else "info", "step": step,
              "message": f"profile: {why}" if why else
              f"profiling steps {step}..{step + min(command['steps'], 50) - 1} with torch.profiler"})
        return 0
    emit({"type": "event", "kind": "refused", "step": step,
          "message": f"{command['type']!r} is not available during a {state.config.workload} run in this version"})
    return 0


def summarize(state: runtime.TrainState, locals_for_summary: dict) -> dict:
    v = locals_for_summary
    limits = state.config.limits
    device = state.device
    step_times = v["step_times"]
    measured = len(step_times)
    window = v.get("window") or (
        f"steps {limits.warmup_steps + 1}..{v['steps_done']} ({measured} steps), "
        f"{limits.warmup_steps} warmup steps excluded" if measured else "no steps measured")
    throughput = timed_figure(v["step_rates"], "tokens/s",
                              f"median of the per-step tokens/s over {window}")
    tokens_per_s = throughput["value"]
    last_losses = v["train_losses"][-10:]
    val_losses = v["val_losses"]
    peaks = v["peaks"]
    p50 = percentile(step_times, 50)
    compile_time = None
    if state.compiled and v["first_step_time"] is not None and p50 is not None:
        compile_time = max(0.0, v["first_step_time"] - p50)
    synced = ("; each step ends with the device synchronised (torch.cuda.synchronize), so the "
              "host's launches of one step never overlap the GPU's work of the last"
              if device.type == "cuda" else "")
    synced += eager_how(state.active, "train")  # fp8 training without compile is said so
    throughput["how"] += synced
    figures = {
        "tokens_per_s": throughput,
        "step_time_p50_s": timed_figure(step_times, "s", f"median step time over {window}"
                                        f"{synced}"),
        "step_time_p90_s": figure(percentile(step_times, 90), "s", f"90th percentile over {window}"),
        "step_time_p99_s": figure(percentile(step_times, 99), "s", f"99th percentile over {window}"),
        "loss_train_final": figure(sum(last_losses) / len(last_losses) if last_losses else None,
                                   "nats/token", "mean train loss of the last 10 steps"),
        "loss_val_first": figure(val_losses[0][1] if val_losses else None, "nats/token",
                                 "validation loss before the first step"),
        "loss_val_final": figure(val_losses[-1][1] if val_losses else None, "nats/token",
                                 f"validation loss at step {val_losses[-1][0] if val_losses else 'n/a'}"),
        "peak_rss_bytes": figure(peaks.get("rss_bytes"), "bytes",
                                 f"highest worker RSS seen by the {SAMPLER_PERIOD_S:g} s sampler and at each "
                                 "step"),
        "peak_rss_growth_bytes": figure(
            peaks["rss_bytes"] - v["rss_before_steps"]
            if peaks.get("rss_bytes") is not None and v["rss_before_steps"] is not None else None,
            "bytes", "peak RSS minus RSS just before the first step: what training added "
            "(gradients, optimizer state, activations, allocator caches)"),
        "peak_torch_allocated_bytes": figure(
            v["run_peak"], "bytes", "torch.cuda.max_memory_allocated over the whole run, warmup "
            "included (each segment's own peak is in its row; n/a on CPU)"),
        "peak_gpu_memory_used_bytes": figure(peaks.get("gpu_memory_used_bytes"), "bytes",
                                             "highest NVML device memory seen (n/a without a GPU)"),
        **v["probes"].figures(state_bytes(state.optimizer) if v["steps_done"] else None),
        "compile_time_s": figure(compile_time, "s", "first step's time minus the median step "
                                 "(n/a without torch.compile)"),
        "flops_per_token": figure(v["flops_token"], "FLOP", "6N + 12·L·H·Q·T (training)"),
        "train_time_s": figure(v["wall"] - v["eval_time"], "s", "wall time of the step loop, validation excluded"),
        "eval_time_s": figure(v["eval_time"], "s", "wall time spent in validation"),
        "tokens_seen": figure(v["tokens_seen"], "tokens", "all steps, warmup included"),
    }
    per_rank = {}
    history = v["rank_history"][limits.warmup_steps:]
    if state.dist.enabled and history:
        for rank in range(state.dist.world_size):
            times = [row[rank][0] for row in history]
            per_rank[str(rank)] = {
                "step_time_p50_s": percentile(times, 50),
                "peak_rss_bytes": max((row[rank][3] or 0) for row in v["rank_history"]),
                "peak_torch_allocated_bytes": max((row[rank][4] or 0) for row in v["rank_history"]) or None,
            }
        medians = {rank: item["step_time_p50_s"] for rank, item in per_rank.items()}
        slow = max(medians, key=medians.get)
        fast = min(medians.values())
        figures["straggler_ratio"] = figure(medians[slow] / fast if fast else None, "x",
                                            f"slowest rank ({slow}) median step time / fastest rank's")
        figures["replica_param_spread"] = figure(v["replica_spread"], "",
                                                 "largest relative difference of parameter checksums across ranks")
    meter = v["energy_meter"]
    figures.update(energy_figures(v["energy"], step_times, v["measured_tokens"],
                                  state.dist.world_size, meter.method, meter.why_not(), window))
    predicted = predict_for_config(state.config, state.dist.world_size,
                                   trained_numels(state.optimizer))  # what really trains
    na = predicted.get("activations_how")  # a Hugging Face model: activations not predicted
    figures["predicted_memory_bytes"] = figure(
        predicted["total"], "bytes", na or "weights + gradients + optimizer states + activations "
        "saved for backward, predicted for this model, batch, precision and checkpointing")
    figures["predicted_activation_bytes"] = figure(predicted["activations"], "bytes", na or
                                                   "activations saved for backward (predicted)")
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
    mfu_value, mfu_how = mfu(tokens_per_s or 0.0, v["flops_token"], device_name, dtype, override) \
        if tokens_per_s else (None, "n/a: no measured throughput")
    # A technique whose matmuls run at another peak (fp8) makes MFU against this peak misleading.
    other_peak = [registry.get(name).label for name in state.active
                  if registry.get(name).extra.get("mfu") == "n/a"]
    # The measured roofline is read from its cache here, after the step loop: never measured
    # during a run (`effiscope roofline` measures it), so no timed step pays for it.
    measured_value, measured_how, measured_peak = mfu_vs_measured(
        tokens_per_s, v["flops_token"], str(device), dtype)
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
        "stopped_early": v["stopped_early"],
        "stop_reason": v["stop_reason"],
        "steps_completed": v["steps_done"],
        "measured_steps": measured,
        "device": str(device),
        "parameters": v["n_params"],
        "effective_batch": state.micro_batches * state.config.train.batch_size * state.dist.world_size,
        "techniques": v["applied"],
        "active_techniques": state.active,
        "mid_run_changes": v["changes"],
        "figures": figures,
    }
