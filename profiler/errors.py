"""Error kinds the worker reports, the refusal type, and the out-of-memory classifier.

A leaf module (standard library only), so every layer can raise `Unsupported` without an import
cycle. The kinds on the wire: config (a setting to fix), unsupported (this machine or model cannot
do what was asked), oom (memory ran out), crash (a bug or an environment problem: the traceback
goes to the run's log). Only `Unsupported` reads as "unsupported": a `NotImplementedError` raised
inside torch is a crash, not the user's mistake.
"""

from __future__ import annotations

import errno
import sys
from typing import Any

KINDS = ("config", "unsupported", "oom", "crash")


class Unsupported(Exception):
    """A choice this machine, build or model cannot run; the text says why and what to choose."""


class ConfigError(ValueError):
    """A config the worker cannot run; str() is a sentence naming the field and the fix."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class CheckpointError(ValueError):
    """Weights that cannot be used; str() says what to give instead, `field` names the setting."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class DataError(ValueError):
    """Data that cannot be used (profiler.engine.data); the text says what to give instead."""


class StepOutOfMemory(MemoryError):
    """Memory ran out inside a named step; the text says where and how much memory was in use."""


def is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError, torch's OutOfMemoryError, a CPU allocator's refusal, or an OSError ENOMEM
    ("Cannot allocate memory", e.g. a thread or a mapping refused under a memory limit)."""
    text = str(exc).lower()
    return (isinstance(exc, MemoryError) or "OutOfMemory" in type(exc).__name__
            or (isinstance(exc, OSError) and exc.errno == errno.ENOMEM)
            or "out of memory" in text or "can't allocate memory" in text
            or "cannot allocate memory" in text or "failed to map segment" in text)


def unknown_model_type(exc: BaseException) -> bool:
    """A Hugging Face config whose model_type this Transformers does not know."""
    text = str(exc)
    return isinstance(exc, (ValueError, KeyError)) and (
        "does not recognize this architecture" in text or "Unrecognized model" in text
        or ("model_type" in text and "config" in text.lower()))


def out_of_memory(exc: BaseException, where: str, device: Any = None) -> StepOutOfMemory | None:
    """exc as a StepOutOfMemory naming `where` and the memory in use now, or None if exc is not
    an out-of-memory error (MemoryError, torch.OutOfMemoryError, a CPU allocator failure)."""
    if not is_out_of_memory(exc):
        return None
    if isinstance(exc, StepOutOfMemory):
        return exc

    def mib(value: float) -> str:
        return f"{value / 2**20:,.0f} MiB"

    parts = []
    try:
        import psutil

        parts.append(f"worker RSS {mib(psutil.Process().memory_info().rss)}")
    except Exception:  # noqa: BLE001 - the figure is a courtesy; the error must still go out
        pass
    torch = sys.modules.get("torch")  # a CUDA device means torch is loaded; never load it here
    if torch is not None and device is not None and getattr(device, "type", "") == "cuda":
        parts.append(f"CUDA allocated {mib(torch.cuda.memory_allocated(device))} "
                     f"of {mib(torch.cuda.get_device_properties(device).total_memory)}")
    text = str(exc)
    first_line = text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__
    return StepOutOfMemory(f"out of memory at {where} ({', '.join(parts) or 'memory n/a'}): "
                           f"{first_line}")


def classify(exc: BaseException) -> tuple[str, str]:
    """Error kind and a hint for an exception raised by a workload."""
    if isinstance(exc, DataError):
        return "config", "fix the data settings and start again"
    if isinstance(exc, CheckpointError):
        return "config", "fix the model settings (model.path, model.arch) and start again"
    if unknown_model_type(exc):
        return "config", ("model.path's config.json names a model_type this Transformers "
                          "cannot build; pick a model of a family `effiscope models` lists, or "
                          "upgrade transformers")
    if is_out_of_memory(exc):
        return "oom", ("lower train.batch_size or train.seq_len, choose a smaller model, "
                       "or enable activation checkpointing")
    if isinstance(exc, Unsupported):
        return "unsupported", ("change the setting named in the message; `effiscope techniques` "
                               "lists what this machine can run")
    return "crash", "this is a bug or an environment problem; the traceback is in the run's log"


def user_facing(exc: BaseException, kind: str) -> str:
    """The message a front end shows: a sentence for the user's choices, the type name otherwise."""
    if unknown_model_type(exc):
        return f"model.path: {str(exc).strip().splitlines()[0][:300]}"
    if kind in ("config", "unsupported") or isinstance(exc, StepOutOfMemory):
        return str(exc)
    if kind == "oom":  # not inside a step: the model, the data or a thread could not be had
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        return f"out of memory while setting up the run ({type(exc).__name__}{': ' + first if first else ''})"
    return f"{type(exc).__name__}: {exc}"
