"""Will it fit, answered: the memory trace (profiler/engine/memory_trace.py) at the config's
micro-batch and at twice it (the line through the two peaks gives the largest micro-batch that
fits each GPU), kept in a cache per config so the second question about the same run is
instant. The CLI (`effiscope estimate`), the worker's estimate command for the app, the tuner's
pruning, the report and the doctor all ask here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from profiler.figures.memory_fit import SCHEMA, valid

CACHE_NAME = "memory_estimates.json"
CACHE_ENTRIES = 64
"""The cache keeps the latest answers only (a bounded file)."""
CACHE_LIMIT = 4 * 1024 * 1024


def cache_path() -> Path:
    from profiler.store import data_home

    return data_home() / CACHE_NAME


def _model_stamp(config: Any) -> list:
    """What on disk the model is built from (an HF folder's config.json, a GGUF file): its size
    and time, so a changed checkpoint is traced again."""
    path = getattr(config.model, "path", "") or ""
    stamps = []
    for candidate in (Path(path) / "config.json", Path(path)) if path else ():
        try:
            info = candidate.stat()
        except OSError:
            continue
        stamps.append([str(candidate), info.st_size, info.st_mtime_ns])
    return stamps


def cache_key(config: Any, target: str, world_size: int, batch_size: int) -> str:
    import torch

    try:
        import transformers
        versions = [torch.__version__, transformers.__version__]
    except ImportError:
        versions = [torch.__version__, None]
    raw = config.to_dict()
    raw.pop("name", None)
    raw.pop("limits", None)
    text = json.dumps([SCHEMA, raw, target, world_size, batch_size, versions,
                       _model_stamp(config)], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _read_cache() -> dict:
    from profiler.store import DamagedFile, read_object

    try:
        data = read_object(cache_path(), CACHE_LIMIT)
    except DamagedFile:
        return {}
    entries = (data or {}).get("entries")
    return entries if isinstance(entries, dict) else {}


def _write_cache(key: str, result: dict) -> None:
    from profiler import files
    from profiler.store import StoreError, atomic_write

    entries = {k: v for k, v in _read_cache().items() if valid(v)}
    entries.pop(key, None)
    entries[key] = result
    entries = dict(list(entries.items())[-CACHE_ENTRIES:])
    try:
        files.output_folder(cache_path().parent, "set EFFISCOPE_HOME to a writable folder")
        atomic_write(cache_path(), json.dumps({"schema": SCHEMA, "entries": entries}))
    except (files.FileRefused, StoreError, OSError):
        pass  # a cache that cannot be written costs the next answer's time, not this one


def _phase_peaks(result: dict) -> dict[str, int]:
    return {phase: found["peak"] for phase, found in result["phases"].items()}


def estimate(config: Any, *, target: str | None = None, world_size: int | None = None,
             batch_size: int | None = None, use_cache: bool = True,
             largest: bool = True) -> dict:
    """The trace of `config` (memory_trace.trace's result) with `peak_by_batch`: each phase's
    peak at the micro-batch and at twice it, for the largest micro-batch that fits; `cached` says
    whether it was read from the cache. largest=False traces the micro-batch only (its
    peak_by_batch has one point: no largest micro-batch). Raises memory_trace.Untraceable with a sentence."""
    from profiler.engine import memory_trace

    world = world_size or config.launch.nproc_per_node * config.launch.nnodes
    target = target or memory_trace.target_of(config)
    training = config.workload == "train"
    batch = batch_size or (config.train.batch_size if training else config.infer.batch_size)
    key = cache_key(config, target, world, batch) + ("" if largest else "-peak")
    if use_cache:
        found = _read_cache().get(key)
        if valid(found):
            return dict(found, cached=True)
    result = memory_trace.trace(config, world_size=world, target=target, batch_size=batch)
    result["peak_by_batch"] = {str(batch): _phase_peaks(result)}
    if largest:
        double = memory_trace.trace(config, world_size=world, target=target,
                                    batch_size=2 * batch)
        result["peak_by_batch"][str(2 * batch)] = _phase_peaks(double)
        result["seconds"] += double["seconds"]
    _write_cache(key, result)
    return dict(result, cached=False)


def fill_prediction(config: Any, predicted: dict, world_size: int, target: str) -> dict:
    """A run summary's memory prediction (profiler.figures.theory's) with what the theory
    leaves n/a for a model it cannot break down (a Hugging Face model's activations, so its
    total) taken from the memory trace of the run's own config (through the cache: the app's
    estimate before the run traced the same config); a trace that cannot run leaves them n/a
    with its sentence. Read once after the loop, never inside a timed step."""
    if predicted.get("activations") is not None or config.workload != "train":
        return predicted
    from profiler.engine import memory_trace

    try:
        result = estimate(config, world_size=world_size, target=target, largest=False)
    except memory_trace.Untraceable as exc:
        return dict(predicted, activations_how=f"n/a: {exc}")
    resident = result["resident"]
    filled = dict(predicted, activations=resident["saved_for_backward"],
                  activations_how="activations saved for backward, from the memory trace of "
                                  "this model and techniques (fake tensors)",
                  traced_peak=result["peak"], traced_peak_phase=result["peak_phase"])
    parts = [filled.get(k) for k in ("weights", "gradients", "optimizer_states", "activations")]
    filled["total"] = sum(parts) if all(p is not None for p in parts) else None
    return filled
