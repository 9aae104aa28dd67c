"""What every check of `effiscope doctor` uses: the outcomes (Skip, CheckFailed), the Context a
check runs in, its spec, and small helpers that set up and train the built-in GPT the way a run
does — through RunConfig, the technique engine (techniques.runtime) and the train workload's
train_step. The checks themselves are the checks*.py modules beside this one.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from profiler.config import RunConfig
from profiler.engine.data import BatchSampler, random_corpus, stdlib_corpus
from profiler.engine.workloads.steps import train_step
from profiler.figures.stats import percentile
from profiler.models.gpt import build_gpt
from techniques import runtime


class Skip(Exception):
    """The check has no meaning on this machine; str() says why."""


class CheckFailed(Exception):
    """The check ran and what it measured is wrong; figures keep what it saw."""

    def __init__(self, message: str, figures: dict | None = None):
        super().__init__(message)
        self.figures = figures or {}


@dataclass
class Context:
    device: torch.device
    quick: bool = False
    full: bool = False
    workdir: Path = Path(".")
    """A private folder for files a check needs (the process-group store)."""
    caps: dict = field(default_factory=dict)
    """profiler.measure.capabilities.detect(device)."""
    warnings: list[str] = field(default_factory=list)
    cache: dict = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def tokens(self) -> torch.Tensor:
        """Real text (this Python's standard library as bytes), random bytes where it is missing."""
        if "tokens" not in self.cache:
            try:
                self.cache["tokens"] = stdlib_corpus(300_000, 0.1).train
            except Exception:  # noqa: BLE001 - a stripped Python: random bytes still train
                self.cache["tokens"] = random_corpus(256, 0).train
        return self.cache["tokens"]


@dataclass(frozen=True)
class CheckSpec:
    name: str
    title: str
    run: Callable[[Context], dict]
    cuda_only: bool = False
    """Skipped with "no CUDA GPU" on a machine without one."""
    cpu_needs_full: str = ""
    """When set: on a CPU, skipped with this reason unless --full."""


# --- helpers -------------------------------------------------------------------------------
def needs_ampere(ctx: Context, what: str) -> None:
    """Skip where the GPU is older than Ampere (compute capability 8.0)."""
    if (ctx.caps.get("cuda_capability") or 0) < 8.0:
        raise Skip(f"{what} needs an Ampere or newer GPU (compute capability 8.0+), this one "
                   f"is {ctx.caps.get('cuda_capability')}")


def distribution(values: list[float], unit: str) -> dict:
    """A timed figure as n, median and the 10th / 90th percentiles (never a bare number)."""
    return {"n": len(values), "median": percentile(values, 50), "p10": percentile(values, 10),
            "p90": percentile(values, 90), "unit": unit}


def time_calls(ctx: Context, fn: Callable[[], object], repeats: int, warmup: int) -> list[float]:
    """Seconds per call, warmup calls left out, the device synchronised around each call."""
    for _ in range(warmup):
        fn()
    ctx.sync()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        ctx.sync()
        times.append(time.perf_counter() - started)
    return times


def run_config(ctx: Context, preset: str, batch: int, seq: int,
               techniques: dict | None = None) -> RunConfig:
    config = RunConfig()
    config.device = ctx.device.type
    config.model.preset = preset
    config.train.batch_size = batch
    config.train.seq_len = seq
    config.techniques = copy.deepcopy(techniques or {})
    return config


def train_config(ctx: Context, techniques: dict | None = None, tiny: bool = False) -> RunConfig:
    """The small training set-up the step checks share: gpt-mini on a GPU, gpt-nano on a CPU."""
    if ctx.cuda:
        return run_config(ctx, "gpt-mini", 16, 256, techniques)
    return run_config(ctx, "gpt-nano", *((2, 32) if tiny else (4, 64)), techniques)


def make_state(ctx: Context, config: RunConfig, extra_caps: dict | None = None,
               model: torch.nn.Module | None = None) -> runtime.TrainState:
    """Model + every enabled technique through the engine, as a run sets them up."""
    torch.manual_seed(config.seed)
    if model is None:
        model = build_gpt(config.model.preset).to(ctx.device)
    caps = {**ctx.caps, "world_size": 1, **(extra_caps or {})}
    state = runtime.TrainState(config=config, device=ctx.device, caps=caps, model=model,
                               warn=ctx.warnings.append)
    # No runtime.plan: DDP / FSDP are proven here in a job of one process, which a run refuses.
    runtime.apply_all(state, runtime.enabled_techniques(config))
    return state


class FixedBatches:
    """The same batches in the same order for every variant a check compares."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]):
        self.batches = batches
        self.index = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.batches[self.index % len(self.batches)]
        self.index += 1
        return batch


def make_batches(ctx: Context, config: RunConfig, n: int) -> list:
    sampler = BatchSampler(ctx.tokens(), config.train.batch_size, config.train.seq_len,
                           config.seed, ctx.device)
    return [sampler.next() for _ in range(n)]


def train(state: runtime.TrainState, batches: list, steps: int, warmup: int = 0) -> dict:
    """Losses of every step; step times and tokens of the steps after warmup (train_step
    synchronises the device before it returns)."""
    feed = FixedBatches(batches)
    losses, times, tokens = [], [], 0
    for step in range(1, steps + 1):
        started = time.perf_counter()
        loss, _, n = train_step(state, feed, step)
        elapsed = time.perf_counter() - started
        losses.append(loss)
        if step > warmup:
            times.append(elapsed)
            tokens += n
    return {"losses": losses, "times": times, "tokens": tokens}


def finite(values: list[float]) -> bool:
    return all(math.isfinite(v) for v in values)


def max_rel_diff(values: list[float], reference: list[float]) -> float:
    return max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(values, reference, strict=True))


def steps(ctx: Context) -> int:
    return 10 if ctx.quick else 20


def free(ctx: Context) -> None:
    import gc

    gc.collect()
    if ctx.cuda:
        torch.cuda.empty_cache()
