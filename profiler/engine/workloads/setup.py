"""One set-up for every workload: device and capabilities, the checks, seed, model, tokenizer and
corpus, batch samplers, the system sampler, the techniques (through the one engine in
techniques/runtime.py) and the `started` message.

A workload calls `prepare()` and gets a `Prepared`; its own file is then its loop and its
figures. Nothing here knows which workload is running beyond what `prepare` is told: the stages
whose techniques apply, and whether techniques apply at once (compress applies its compression
to a copy of the model, later).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from profiler.config import RunConfig
from profiler.engine import weights
from profiler.engine.data import BatchSampler, Corpus, load_corpus
from profiler.engine.distributed import DistContext
from profiler.measure.capabilities import detect, resolve_device
from profiler.measure.contention import ContentionMeter, front_end_pid, own_root
from profiler.measure.system import SAMPLER_PERIOD_S, SystemSampler
from profiler.models import source as model_source
from profiler.wire import protocol
from techniques import registry, runtime

Emit = Callable[[dict], None]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a timer read after it sees the work done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def torch_memory(device: torch.device) -> dict[str, float | None]:
    if device.type != "cuda":
        return {"torch_allocated_bytes": None, "torch_reserved_bytes": None,
                "torch_peak_allocated_bytes": None}
    return {"torch_allocated_bytes": torch.cuda.memory_allocated(device),
            "torch_reserved_bytes": torch.cuda.memory_reserved(device),
            "torch_peak_allocated_bytes": torch.cuda.max_memory_allocated(device)}


class CudaAllocator:
    """torch's CUDA caching allocator of one device: what it holds now and its peak counter."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def read(self) -> dict[str, float | None]:
        return torch_memory(self.device)

    def reset_peak(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.device)


class NoAllocator:
    """A CPU's null allocator: no counter, every figure n/a (None)."""

    def read(self) -> dict[str, float | None]:
        return torch_memory(torch.device("cpu"))

    def reset_peak(self) -> None:
        return None


def allocator_for(device: torch.device) -> CudaAllocator | NoAllocator:
    return CudaAllocator(device) if device.type == "cuda" else NoAllocator()


class PeakMemory:
    """The allocator's peak, per segment and for the whole run.

    torch keeps one peak counter per device. `restart()` (after warmup and when a mid-run
    change holds, on every rank alike) folds the counter into the run-wide peak and starts it
    again, so each step's `torch_peak_allocated_bytes` is its own segment's peak — the figure
    that shows checkpointing or LoRA switched on mid-run saving memory — while `run_peak()`
    keeps the highest of the whole run."""

    def __init__(self, allocator: CudaAllocator | NoAllocator) -> None:
        self.allocator = allocator
        self._earlier: float | None = None
        """The highest peak of the stretches before the last restart."""
        allocator.reset_peak()  # the run's peak counts from here (after set-up)

    def read(self) -> dict[str, float | None]:
        """allocated / reserved now, and the current segment's peak (None on a CPU)."""
        return self.allocator.read()

    def restart(self) -> None:
        peak = self.read()["torch_peak_allocated_bytes"]
        if peak is not None:
            self._earlier = peak if self._earlier is None else max(self._earlier, peak)
        self.allocator.reset_peak()

    def run_peak(self) -> float | None:
        peak = self.read()["torch_peak_allocated_bytes"]
        if peak is None or self._earlier is None:
            return peak if peak is not None else self._earlier
        return max(peak, self._earlier)


@dataclass
class Prepared:
    """Everything a workload's loop needs, set up the same way for every workload."""

    config: RunConfig
    emit: Emit
    control: Any
    """The worker's Control: poll() for commands, should_stop."""
    device: torch.device
    caps: dict
    dist: DistContext
    state: runtime.TrainState
    """The engine's state: the model as run, and every technique in force."""
    origin: str
    corpus: Corpus
    wanted: dict[str, dict]
    """The techniques this run applies (checked), name -> parameters."""
    applied: list[dict] = field(default_factory=list)
    sampler: SystemSampler | None = None
    setup_started: float = 0.0
    memory: PeakMemory | None = None
    """The allocator's peak per segment and for the run (figures None on a CPU)."""

    @property
    def model(self) -> Any:
        return self.state.model

    @property
    def shape(self) -> Any:
        return self.state.model.shape

    def warn(self, text: str) -> None:
        self.emit(protocol.warning(text))

    def batches(self, batch_size: int | Callable[[], int], seq_len: int, seed_offset: int = 0, *,
                val: bool = False, sharded: bool = False) -> BatchSampler:
        """Random windows of the training (or held-out) text; `sharded`: each rank of a job its
        own slice of every global batch (the batch a single process with batch_size x
        world_size would draw); batch_size may be a callable, read at every draw."""
        tokens = self.corpus.val if val else self.corpus.train
        rank, world = (self.dist.rank, self.dist.world_size) if sharded else (0, 1)
        return BatchSampler(tokens, batch_size, seq_len, self.config.seed + seed_offset,
                            self.device, rank=rank, world_size=world)

    def apply(self, wanted: dict[str, dict] | None = None, *, state: runtime.TrainState | None
              = None, finetune: Callable[[], str] | None = None, keep_masks: bool = False
              ) -> list[dict]:
        """Apply techniques through the engine (default: all planned ones, to the run's model)."""
        done = runtime.apply_all(state or self.state, self.wanted if wanted is None else wanted,
                                 finetune=finetune, keep_masks=keep_masks)
        self.applied += done
        return done

    def started(self, workload: str, **extra: Any) -> None:
        """The `started` message: what runs, on what, with which techniques, and what each did;
        then one info event per technique (drawn as markers at step 0)."""
        model = self.model
        self.emit(protocol.started({
            "workload": workload,
            "device": str(self.device),
            "model": {"preset": model_source.model_name(self.config.model), "origin": self.origin,
                      "parameters": model.parameter_count(), **self.shape.as_dict()},
            "data": self.corpus.description,
            "techniques": self.applied,
            "capabilities": self.caps,
            "world_size": self.dist.world_size,
            "setup_time_s": time.perf_counter() - self.setup_started,
            **extra,
        }))
        self.announce(self.applied)

    def announce(self, applied: list[dict]) -> None:
        for item in applied:
            self.emit(protocol.info(f"{item['label']}: {item['report']}", step=0,
                                    technique=item["name"]))

    def finish(self, steps_done: int, state: runtime.TrainState | None = None,
               save: bool = True) -> dict:
        """The engine's finalize (pruning masks kept through training are folded in), the
        sampler stopped, and the run's weights saved when the config asks for it (and `save`);
        returns {"finalized": [...], "checkpoint": path or None}."""
        target = state or self.state
        finalized = runtime.finalize(target)
        self.applied += finalized
        self.announce(finalized)
        self.stop_sampler()
        saved = None
        if save and self.dist.is_speaker:
            own = runtime.weight_saver(target)  # e.g. LoRA: the adapter and the merged weights
            if own is not None:
                paths = own(target, steps_done, lambda text: self.emit(protocol.info(text)),
                            lambda model: weights.save_run_weights(self.config, model,
                                                                   steps_done, self.emit))
                saved = paths[-1] if paths else None
            else:
                saved = weights.save_run_weights(self.config, target.model, steps_done,
                                                 self.emit)
        return {"finalized": finalized, "checkpoint": saved}

    def contention(self) -> dict:
        """The run's contention keys for its summary (profiler.measure.contention): other processes'
        CPU (and GPU) use while it ran, and a sentence when its speed figures are unreliable."""
        meter = self.sampler.contention if self.sampler is not None else None
        return meter.summary() if meter is not None else {}

    def stop_sampler(self) -> None:
        if self.sampler is not None and not self.sampler.stopped:
            self.sampler.read_now()
            self.sampler.stop()


def start_sampler(dist: DistContext, gpu_uuid: str | None,
                  period_s: float = SAMPLER_PERIOD_S) -> SystemSampler:
    """The worker's system sampler thread, reading the run's own GPU (by its UUID: see
    profiler.measure.system.gpu_by_uuid), with the contention meter over the run's own process tree (the
    worker, or under torchrun its launcher and every rank)."""
    root = own_root(dist.enabled)
    meter = ContentionMeter(root, front_pid=front_end_pid(root))
    return SystemSampler(period_s=period_s, gpu_uuid=gpu_uuid, contention=meter).start()


def prepare(config: RunConfig, emit: Emit, control: Any, *, stages: tuple[str, ...] =
            registry.STAGES, apply: bool = True, keep_masks: bool = False,
            dropout: float | None = None, train_mode: bool = True,
            system_sampler: bool = True) -> Prepared:
    """Set a run up: refuse what cannot run before any work, then build everything.

    stages: the technique stages this workload applies (others are left out with a warning).
    apply: apply the techniques now (compress applies its compression to a copy, itself).
    keep_masks: pruning masks stay through training, folded in by `Prepared.finish`.
    system_sampler: start the psutil / NVML sampler thread (a bench's bare reference loop does
    not, to measure what the sampler costs).
    """
    dist = getattr(control, "dist", None) or DistContext()
    device = dist.device_for(resolve_device(config.device))
    caps = {**detect(device), "world_size": dist.world_size, "dist_backend": dist.backend,
            **model_source.model_caps(config.model)}

    def warn(text: str) -> None:
        emit(protocol.warning(text))

    wanted = runtime.plan(config, caps, stages, warn)  # refuse before any work
    torch.manual_seed(config.seed)
    setup_started = time.perf_counter()
    # One loader for every model: the built-in GPT, or a Hugging Face model behind its interface.
    model, origin = weights.load_model(config.model, device, dropout)
    model.train(train_mode)
    corpus = load_corpus(config.data.source, config.data.path, config.data.max_train_bytes,
                         config.data.val_fraction, model.shape.vocab_size, config.seed,
                         tokenizer=getattr(model, "tokenizer", None))
    state = runtime.TrainState(config=config, device=device, caps=caps, model=model, warn=warn)
    state.dist = dist
    prepared = Prepared(config=config, emit=emit, control=control, device=device, caps=caps, dist=dist,
                        state=state, origin=origin, corpus=corpus, wanted=wanted,
                        setup_started=setup_started)

    def calibration(n: int) -> list[torch.Tensor]:
        """n batches of training text (the same ones every call), for activation statistics."""
        sampler = prepared.batches(config.train.batch_size,
                                   min(config.train.seq_len, model.shape.block_size), 3)
        return [sampler.next()[0] for _ in range(n)]

    state.calibration = calibration
    if apply:
        prepared.apply(keep_masks=keep_masks)
    if system_sampler:
        prepared.sampler = start_sampler(dist, caps.get("gpu_uuid"))
    note = getattr(control, "note_prepared", None)  # the worker's: a failed run's contention
    if note is not None:
        note(prepared)
    prepared.memory = PeakMemory(allocator_for(device))
    return prepared
