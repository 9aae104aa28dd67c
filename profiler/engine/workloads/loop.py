"""The one step loop of every workload that trains: train, distill and the bench's reference.

A workload brings its step function (one optimizer step: its loss, the parts it reports, the
tokens it read) and its validation; the loop owns everything else, the same for all:

  poll the front end (rank 0 speaks for a torchrun job: its commands are broadcast) -> apply
  mid-run changes and profile requests -> stop? out of time? -> memory probe -> warmup over? ->
  restart the allocator's peak (a new segment) -> clock + energy around the step (out-of-memory
  errors name the step) -> every rank's figures gathered -> the step's record -> validation on
  its schedule -> the sample message -> stop on a diverged loss.

Its accumulators live in one object, `LoopRecord`, that the summary reads (never a bag of
locals); the figures every training workload shares (speed, step times, memory, energy, ranks)
come from loop_figures.common_figures. A bench's reference loop is the same loop with null
sinks: no stream, no sampler (`NullSampler`), nothing it measures costing it time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from profiler.engine.distributed import DistContext
from profiler.errors import Unsupported, out_of_memory
from profiler.figures import segments
from profiler.figures.energy import EnergyMeter, job_joules
from profiler.measure.capture import ProfileCapture
from profiler.wire import protocol
from techniques import runtime

Emit = Callable[[dict], None]
DIVERGED = "diverged"


@dataclass
class StepResult:
    """What a workload's step function returns for one optimizer step."""

    loss: float
    """The loss it minimises (what diverges)."""
    metrics: dict[str, float | None]
    """What the sample reports of the step (loss_train, loss_distill, kl_to_teacher,
    grad_norm, ...)."""
    tokens: int
    """Tokens this process read in the step."""


@dataclass(frozen=True)
class ValidationSchedule:
    """When the held-out loss is measured: before the first step and every `interval` steps and
    at the run's last step; never when interval is 0 ("off")."""

    interval: int
    last_step: int

    def should_validate(self, step: int) -> bool:
        if not self.interval:
            return False
        return step == 0 or step % self.interval == 0 or step == self.last_step


class NullSampler:
    """The system sampler of a loop that samples nothing (a bench's reference loop): every
    reading n/a, no thread, no cost."""

    gpu_note = ""
    stopped = True

    def latest(self) -> dict[str, float | None]:
        return {"rss_bytes": None}

    def read_now(self) -> dict[str, float | None]:
        return {"rss_bytes": None}

    def peaks(self) -> dict[str, float]:
        return {}

    def energy_now(self) -> None:
        return None


@dataclass
class LoopRecord:
    """Everything the loop accumulates, in one place; the summary reads it."""

    warmup_steps: int
    steps_done: int = 0
    tokens_seen: int = 0
    first_step_time: float | None = None
    stopped_early: bool = False
    stop_reason: str = "step limit reached"
    changes: int = 0
    eval_time: float = 0.0
    started_at: float = 0.0
    ended_at: float = 0.0
    rss_before_steps: float | None = None
    records: list[dict] = field(default_factory=list)
    """One segments.step_record per step (warmup included), in step order."""
    toggles: list[dict] = field(default_factory=list)
    """The mid-run changes that held: segment boundaries."""
    step_metrics: list[dict] = field(default_factory=list)
    """Each step's StepResult.metrics, in step order (a workload's own figures read them)."""
    evaluations: list[tuple[int, dict]] = field(default_factory=list)
    """(step, validation figures) in order, step 0 before the first step."""
    rank_rows: list[list[list[float | None]]] = field(default_factory=list)
    """Each step's gathered figures of every rank (see Loop.GATHERED)."""
    energy: dict[int, float | None] = field(default_factory=dict)
    """Joules of each step, every GPU of the job summed."""
    step_ends: dict[int, float] = field(default_factory=dict)
    """perf_counter at the end of each step, its sample sent (the reference loop's clock)."""

    @property
    def diverged(self) -> bool:
        return self.stop_reason.startswith(DIVERGED)

    @property
    def wall_s(self) -> float:
        return self.ended_at - self.started_at

    def measured(self) -> list[dict]:
        """The step records after warmup."""
        return [r for r in self.records if r["step"] > self.warmup_steps]

    def losses(self, key: str) -> list[float]:
        return [m[key] for m in self.step_metrics if isinstance(m.get(key), (int, float))]


def divergence(loss: float, step: int, lr: float) -> str | None:
    """Why a run must stop when its loss is no longer a number (nan, inf): every later step
    trains on garbage, and a figure taken over them would be a lie. None while it is finite."""
    if math.isfinite(loss):
        return None
    return (f"{DIVERGED}: the training loss is {loss} at step {step} (learning rate {lr:g}), so "
            "the run stopped there; lower train.learning_rate, or enable grad_clip or "
            "lr_schedule")


def tokens_per_step(state: runtime.TrainState) -> int:
    """Tokens one optimizer step of the job reads: micro-batches x batch x sequence x ranks
    (it changes when accumulation is switched mid-run)."""
    train = state.config.train
    return state.micro_batches * train.batch_size * train.seq_len * state.dist.world_size


def job_commands(control: Any, dist: DistContext, out_of_time: bool
                 ) -> tuple[list[dict], bool, bool]:
    """Rank 0's pending commands and stop decision, the same on every rank of a job."""
    shared = {"commands": control.poll(), "stop": control.should_stop, "out_of_time": out_of_time}
    if dist.enabled:
        shared = dist.broadcast_json(shared if dist.is_speaker else None)
    return shared["commands"], shared["stop"], shared["out_of_time"]


BATCH_SETTING = "train"
"""A `set` of this name changes a train run's micro-batch: params {"batch_size": n}. Sent with
grad_accumulation's micro_batches, it keeps the sequences per optimizer step, so that micro-batch
x accumulation pairs are measured as segments of one run (profiler.tune)."""
MAX_MICRO_BATCH = 65536


def change_batch(state: runtime.TrainState, params: dict) -> str:
    """Apply a mid-run `set train`: the micro-batch the train run's samplers draw from the next
    step on (they read train.batch_size at every draw); Refused with the reason otherwise."""
    train = state.config.train
    if state.config.workload != "train":
        raise runtime.Refused(f"the micro-batch can change mid-run in a train run only, not a "
                              f"{state.config.workload} run; restart the run with the change")
    size = params.get("batch_size")
    if set(params) != {"batch_size"} or not isinstance(size, int) or isinstance(size, bool) \
            or not 1 <= size <= MAX_MICRO_BATCH:
        raise runtime.Refused(f"set {BATCH_SETTING}: give {{\"batch_size\": n}} with a whole n "
                              f"from 1 to {MAX_MICRO_BATCH}, nothing else")
    before, train.batch_size = train.batch_size, size
    return (f"micro-batch {before} -> {size} sequences: {state.micro_batches} x {size} per "
            f"optimizer step, {tokens_per_step(state):,} tokens")


def handle_command(command: dict, state: runtime.TrainState, step: int, emit: Emit,
                   capture: ProfileCapture | None = None) -> int:
    """A command that arrived mid-run; it applies from this step on. Returns 1 if it changed."""
    if command["type"] == "set":
        name, params = command["technique"], command["params"]
        try:
            report = (change_batch(state, params) if name == BATCH_SETTING
                      else runtime.change(state, name, params))
        except (runtime.Refused, Unsupported) as exc:
            emit(protocol.refused(str(exc), step=step, technique=name, params=params))
            return 0
        emit(protocol.toggle(report, step=step, technique=name, params=params,
                             tokens_per_step=tokens_per_step(state)))
        return 1
    if command["type"] == "profile" and capture is not None:
        memory = bool(command.get("memory"))
        why = capture.request(command["steps"], step, memory=memory)
        text = (f"profiling steps {step}..{step + min(command['steps'], 50) - 1} with "
                "torch.profiler")
        if memory:
            text += f"; {capture.memory_note}" if capture.memory_note else (
                ", with the CUDA memory snapshot")
        emit(protocol.refused(f"profile: {why}", step=step) if why else protocol.info(
            text, step=step))
        return 0
    emit(protocol.refused(f"{command['type']!r} is not available during a "
                          f"{state.config.workload} run in this version", step=step))
    return 0


def due(commands: list[dict], step: int) -> tuple[list[dict], list[dict]]:
    """(the commands that apply before `step`, in order; those held for a later step): a `set`
    with a "step" applies from that step on (protocol.set_technique)."""
    now, later = [], []
    for command in commands:
        at = command.get("step") if command["type"] == "set" else None
        (later if isinstance(at, int) and at > step else now).append(command)
    return now, later


class Loop:
    """One run of the step loop over a prepared run (profiler.engine.workloads.setup.Prepared)."""

    GATHERED = ("step_time_s", "tokens", "loss", "rss_bytes", "torch_peak_allocated_bytes",
                "energy_j")
    """The figures each rank sends rank 0 after every step, in this order."""

    def __init__(self, prep: Any, control: Any, emit: Emit,
                 step: Callable[[int], StepResult], validate: Callable[[], dict],
                 probes: Any, loss_key: str, capture: ProfileCapture | None = None,
                 sampler: Any = None) -> None:
        """step(n): one optimizer step; validate(): the held-out figures, e.g. {"loss_val":
        ...}; probes: the untimed memory probes (MemoryProbes); loss_key: the sample key of the
        loss the step minimises."""
        self.prep, self.control, self.emit = prep, control, emit
        self.state: runtime.TrainState = prep.state
        self.dist: DistContext = prep.dist
        self.step_fn, self.validate_fn, self.probes = step, validate, probes
        self.loss_key = loss_key
        self.capture = capture
        self.sampler = sampler or prep.sampler or NullSampler()
        limits = prep.config.limits
        self.limits = limits
        self.schedule = ValidationSchedule(prep.config.train.eval_interval, limits.steps)
        self.record = LoopRecord(warmup_steps=limits.warmup_steps)
        self.energy = EnergyMeter(self.sampler)

    # --- the schedule's parts ----------------------------------------------------------------
    def validation(self, step: int) -> dict:
        started = time.perf_counter()
        found = self.validate_fn()
        self.record.eval_time += time.perf_counter() - started
        self.record.evaluations.append((step, found))
        return found

    def _note(self, message: dict) -> None:
        if message.get("type") == "event" and message.get("kind") == "toggle":
            self.record.toggles.append(message)
        self.emit(message)

    def _out_of_time(self) -> bool:
        limit = self.limits.time_s
        return bool(limit) and (time.perf_counter() - self.record.started_at
                                - self.record.eval_time >= limit)

    # --- the loop ----------------------------------------------------------------------------
    def run(self) -> LoopRecord:
        record, state, dist, limits = self.record, self.state, self.dist, self.limits
        record.started_at = time.perf_counter()
        if self.schedule.should_validate(0):
            self.emit(protocol.sample(0, 0.0, self.validation(0), "eval"))
        record.rss_before_steps = self.sampler.read_now().get("rss_bytes")
        held: list[dict] = []  # `set` commands for a later step (their "step")
        try:
            for step in range(1, limits.steps + 1):
                commands, stop, out_of_time = job_commands(self.control, dist,
                                                           self._out_of_time())
                commands, held = due(held + commands, step)
                changed = sum(handle_command(c, state, step, self._note, self.capture)
                              for c in commands)
                record.changes += changed
                if stop:
                    record.stopped_early, record.stop_reason = True, "stopped by request"
                    break
                if out_of_time:
                    record.stop_reason = "time limit reached"
                    break
                if self._step(step, bool(changed)):
                    break
        finally:
            if self.capture is not None:
                self.capture.finish()
            record.ended_at = time.perf_counter()
            self.prep.stop_sampler()
        return record

    def _step(self, step: int, changed: bool) -> bool:
        """One step with everything around it; True when the run must stop (diverged)."""
        record, state, dist, limits = self.record, self.state, self.dist, self.limits
        self.probes.before_step(step, limits.warmup_steps, changed)  # before clock and energy
        if step == limits.warmup_steps + 1:
            self.emit(protocol.phase(f"warmup over: steps {step}+ count in the summary",
                                     step=step))
        if step == limits.warmup_steps + 1 or changed:
            self.prep.memory.restart()  # each segment's peak is its own; the run's kept apart
        self.energy.begin()
        started = time.perf_counter()
        try:
            result = self.step_fn(step)
        except (MemoryError, RuntimeError) as exc:
            oom = out_of_memory(exc, f"step {step}", self.prep.device)  # names the step
            if oom is None:
                raise
            raise oom from exc
        step_time = time.perf_counter() - started
        joules = self.energy.end(step_time)
        if self.capture is not None:
            self.capture.step_done(step_time)
        local = self.sampler.latest()
        memory = self.prep.memory.read()
        # Every rank's figures reach rank 0; a single process gathers only its own.
        ranks = dist.gather_floats([step_time, result.tokens, result.loss,
                                    local.get("rss_bytes"),
                                    memory["torch_peak_allocated_bytes"], joules])
        step_time = max(r[0] for r in ranks)  # the job's step ends when its slowest rank is done
        tokens = int(sum(r[1] for r in ranks))
        loss = sum(r[2] for r in ranks) / len(ranks)
        record.rank_rows.append(ranks)
        record.energy[step] = job_joules(ranks, 5)
        record.steps_done = step
        record.tokens_seen += tokens
        if record.first_step_time is None:
            record.first_step_time = step_time
        metrics: dict[str, float | None] = {**result.metrics, self.loss_key: loss}
        record.step_metrics.append(dict(metrics))
        record.records.append(segments.step_record(
            step, step_time, tokens, metrics.get("loss_train"), local.get("rss_bytes"),
            memory["torch_peak_allocated_bytes"]))
        lr = state.optimizer.param_groups[0]["lr"]
        diverged = divergence(loss, step, lr)
        if diverged:
            self.emit(protocol.warning(diverged, step=step))
        metrics.update({"lr": lr, "step_time_s": step_time, "tokens_per_s": tokens / step_time,
                        **local, **memory})
        if dist.enabled:
            for index, row in enumerate(ranks):
                metrics[f"rank{index}_step_time_s"] = row[0]
                metrics[f"rank{index}_rss_bytes"] = row[3]
                metrics[f"rank{index}_torch_peak_allocated_bytes"] = row[4]
        if self.schedule.should_validate(step):
            metrics.update(self.validation(step))
        warm = step <= limits.warmup_steps
        phase = ("compile" if state.compiled and step == 1 else "warmup") if warm else "measure"
        self.probes.after_step(step, limits.warmup_steps)  # timed steps and messages after it
        self.emit(protocol.sample(step, time.perf_counter() - record.started_at, metrics, phase))
        record.step_ends[step] = time.perf_counter()
        if diverged:  # every later step would train on nan: stop, keep what was measured
            record.stop_reason = diverged
            return True
        return False
