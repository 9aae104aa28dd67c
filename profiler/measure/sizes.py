"""Sizes of a model as held: every tensor that holds state, with quantized weights as their
integer values plus scales and tensor subclasses (torchao) flattened into their plain parts, so
bytes in memory and on disk and non-zero parameters are counted, not assumed."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def weight_tensors(model: Any) -> dict:
    """Every tensor holding the model's state, as plain tensors: quantized weights as int values
    plus scales and zero points, tensor subclasses flattened, shared storage counted once."""
    out: dict = {}
    for name, tensor in _state_items(model):
        for part_name, part in _flatten(name, tensor):
            out[part_name] = part.detach().contiguous()
    return out


def _state_items(model: Any):
    """(name, tensor) for parameters (a tied one once) and persistent buffers, and the packed
    weights of dynamic quantized Linear layers (which state_dict keeps as opaque objects)."""
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        packed = getattr(module, "_packed_params", None) is not None
        if packed and callable(getattr(module, "weight", None)):
            yield prefix + "weight", module.weight()
            if module.bias() is not None:
                yield prefix + "bias", module.bias()
            continue
        for name, param in module.named_parameters(recurse=False):
            if id(param) not in seen:
                seen.add(id(param))
                yield prefix + name, param
        skip = getattr(module, "_non_persistent_buffers_set", set())
        for name, buf in module.named_buffers(recurse=False):
            if name not in skip:
                yield prefix + name, buf


def _flatten(name: str, tensor: Any):
    import torch

    if tensor.is_quantized:
        yield f"{name}.int_repr", tensor.int_repr()
        if tensor.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            yield f"{name}.scales", tensor.q_per_channel_scales()
            yield f"{name}.zero_points", tensor.q_per_channel_zero_points()
        else:
            yield f"{name}.scale", torch.tensor([tensor.q_scale()])
            yield f"{name}.zero_point", torch.tensor([tensor.q_zero_point()])
        return
    inner = getattr(tensor, "__tensor_flatten__", None)
    if inner is not None and type(tensor) not in (torch.Tensor, torch.nn.Parameter):
        attrs, _ = inner()
        for attr in attrs:
            yield from _flatten(f"{name}.{attr}", getattr(tensor, attr))
        return
    yield name, tensor


def model_bytes(model: Any) -> int:
    """Bytes of the model's weights in memory, as `weight_tensors` counts them."""
    return sum(t.numel() * t.element_size() for t in weight_tensors(model).values())


def disk_bytes(model: Any, folder: str | Path) -> int:
    """Save `weight_tensors` with safetensors into folder and return the file's size."""
    from safetensors.torch import save_file

    path = Path(folder) / "measure.safetensors"
    save_file(weight_tensors(model), str(path))
    size = path.stat().st_size
    path.unlink()
    return size


def parameter_counts(model: Any) -> tuple[int, int]:
    """(parameters, non-zero parameters) counting quantized weights and pruned masks applied."""
    total = nonzero = 0
    for name, tensor in _state_items(model):
        if name.endswith("_mask"):
            continue
        if name.endswith("_orig"):
            owner, _, attr = name[: -len("_orig")].rpartition(".")
            tensor = getattr(model.get_submodule(owner), attr)
        values = tensor.int_repr() if tensor.is_quantized else tensor
        if getattr(values, "__tensor_flatten__", None) is not None and not _is_plain(values):
            total += values.numel()
            nonzero += values.numel()  # packed formats: zeros are not visible; count as dense
            continue
        total += values.numel()
        nonzero += int((values.detach() != 0).sum())
    return total, nonzero


def _is_plain(tensor: Any) -> bool:
    import torch

    return type(tensor) in (torch.Tensor, torch.nn.Parameter)
