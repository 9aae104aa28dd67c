"""What this machine's torch can do, detected by trying (not by version numbers).

The result is plain data: technique metadata checks it (techniques.registry.unavailable_reason),
the worker sends it in `hello`, and `effiscope techniques` prints it.
"""

from __future__ import annotations

import importlib.util
import inspect
import shutil

import torch

from profiler.errors import Unsupported
from profiler.measure.system import bf16_native


def _fused_optimizers(device: torch.device) -> list[str]:
    found = []
    for name, cls in (("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)):
        if "fused" not in inspect.signature(cls).parameters:
            continue
        try:
            param = torch.nn.Parameter(torch.ones(4, device=device))
            param.grad = torch.ones(4, device=device)
            kwargs = {"momentum": 0.9} if name == "sgd" else {}
            cls([param], lr=0.1, fused=True, **kwargs).step()
            found.append(name)
        except (RuntimeError, TypeError, ValueError):
            pass
    return found


def detect(device: torch.device | str | None = None) -> dict:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    cuda = torch.cuda.is_available()
    caps: dict = {
        "device": str(device),
        "cuda": cuda and device.type == "cuda",
        "cuda_capability": None,
        "bf16": True,
        "compiler": bool(shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
                         or shutil.which("g++")) or device.type == "cuda",
        "distributed": torch.distributed.is_available(),
        "packages": [p for p in ("torchao", "transformers", "peft", "bitsandbytes", "gguf")
                     if importlib.util.find_spec(p)],
        "fused": _fused_optimizers(device),
    }
    if caps["cuda"]:
        major, minor = torch.cuda.get_device_capability(device)
        caps["cuda_capability"] = major + minor / 10
        # Not torch.cuda.is_bf16_supported(): it says yes where bf16 is only emulated (V100, T4).
        caps["bf16"] = bf16_native("cuda", caps["cuda_capability"])
        caps["gpu_uuid"] = device_uuid(device)
    return caps


def device_uuid(device: torch.device | str) -> str | None:
    """The UUID of a CUDA device as torch sees it (CUDA_VISIBLE_DEVICES applied), bare, for
    profiler.measure.system.gpu_by_uuid; None for a CPU or when torch does not report one."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    return str(uuid) if uuid is not None and str(uuid).strip("0-") else None


def resolve_device(name: str) -> torch.device:
    """A config's device (auto, cpu, cuda, cuda:N) as torch's, refused with a sentence where this
    machine has no such device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise Unsupported(
            f"device = {name!r} but this machine has no CUDA GPU visible to torch; use cpu or auto"
        )
    device = torch.device(name)
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise Unsupported(f"{name} does not exist: {torch.cuda.device_count()} GPU(s) visible")
    return device
