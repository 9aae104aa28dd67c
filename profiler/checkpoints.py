"""Model weights on disk: safetensors files of ours, never pickle.

A checkpoint is `model.safetensors` whose header metadata carries the model's shape, so it
describes itself: `model_shape` reads only the header (no torch; the config validates with it),
`load_model` builds the GPT and fills it, `save_model` writes one. A past train run keeps its
weights at runs/<id>/model.safetensors when `train.save_checkpoint` is on.

Compressed models are measured through `weight_tensors`: every tensor that holds state, with
quantized weights as their integer values plus scales and tensor subclasses (torchao) flattened
into their plain parts, so bytes in memory and on disk are counted, not assumed.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path
from typing import Any

FILENAME = "model.safetensors"
FORMAT = "effiscope-gpt"
_SHAPE_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")


class CheckpointError(ValueError):
    """Weights that cannot be used; str() says what to give instead, `field` names the setting."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


# --- torch-free: locating and describing a checkpoint -------------------------------------------
HF_SOURCES = ("hf", "hf-config")


def is_hf(model_cfg: Any) -> bool:
    """A Hugging Face model (profiler/models/hf*.py) rather than the built-in GPT."""
    return getattr(model_cfg, "source", "preset") in HF_SOURCES


def model_kind(model_cfg: Any) -> str:
    """"builtin", "hf-causal" or "hf-encoder" (torch-free; techniques' checks read it)."""
    return model_shape(model_cfg).kind if is_hf(model_cfg) else "builtin"


def model_caps(model_cfg: Any) -> dict:
    """Facts about the model that technique checks need, merged into the capabilities dict."""
    kind = model_kind(model_cfg)
    caps: dict = {"model_kind": kind}
    if kind != "builtin":
        from profiler.models.hf import checkpoint_every_supported

        caps["hf_checkpoint_every"] = checkpoint_every_supported()
    return caps


def checkpoint_path(model_cfg: Any) -> Path | None:
    """The weights file a ModelConfig names; None for a preset (random weights) or an HF model."""
    if model_cfg.source == "preset" or is_hf(model_cfg):
        return None
    if model_cfg.source == "run":
        from profiler.store import RunStore, StoreError

        if not model_cfg.run_id:
            raise CheckpointError("run_id", "is empty; give the id of a past run for "
                                  'source = "run" (`effiscope runs` lists them)')
        try:
            run = RunStore().open_run(model_cfg.run_id)
        except StoreError as exc:
            raise CheckpointError("run_id", str(exc)) from None
        path = run.path / FILENAME
        if not path.exists():
            raise CheckpointError("run_id", f"run {run.run_id} saved no weights ({FILENAME} is "
                                  "missing); train with train.save_checkpoint = true, or pick "
                                  "another run")
        return path
    if not model_cfg.path:
        raise CheckpointError("path", 'is empty; give a .safetensors file or a folder holding '
                              f'{FILENAME} for source = "checkpoint"')
    path = Path(model_cfg.path).expanduser()
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        raise CheckpointError("path", f"{path} does not exist; give a .safetensors file or a "
                              f"folder holding {FILENAME}")
    return path


def read_header(path: str | Path) -> tuple[dict, dict]:
    """(tensor entries, metadata) of a safetensors file, read without torch."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            size_raw = fh.read(8)
            if len(size_raw) != 8:
                raise ValueError("file too short")
            (size,) = struct.unpack("<Q", size_raw)
            if size > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(fh.read(size).decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError("path", f"{path} is not a readable safetensors file ({exc}); give "
                              "a checkpoint saved by EffiScope") from None
    if not isinstance(header, dict):
        raise CheckpointError("path", f"{path} has a damaged safetensors header")
    metadata = header.pop("__metadata__", None) or {}
    # A truncated file still has its header: check that the data it announces is all there.
    ends = [entry.get("data_offsets", [0, 0])[1] for entry in header.values()
            if isinstance(entry, dict)]
    needed = 8 + size + max(ends, default=0)
    actual = path.stat().st_size
    if actual < needed:
        raise CheckpointError("path", f"{path} is truncated ({actual:,} of {needed:,} bytes); "
                              "give a complete file: copy it again or save the checkpoint again")
    return header, metadata


def model_shape(model_cfg: Any):
    """The GPTShape a ModelConfig describes: the preset's, or the one stored with the weights."""
    from profiler.models.presets import GPT_PRESETS, GPTShape

    if is_hf(model_cfg):
        return _hf_shape(model_cfg)
    path = checkpoint_path(model_cfg)
    if path is None:
        return GPT_PRESETS[model_cfg.preset]
    _, metadata = read_header(path)
    try:
        if metadata.get("format") != FORMAT:
            raise ValueError
        raw = json.loads(metadata["shape"])
        values = {k: int(raw[k]) for k in _SHAPE_KEYS}
    except (KeyError, TypeError, ValueError):
        field = "run_id" if model_cfg.source == "run" else "path"
        raise CheckpointError(field, f"{path} carries no EffiScope model shape in its metadata; "
                              "give a checkpoint saved by EffiScope (Hugging Face checkpoints "
                              "are not supported yet)") from None
    return GPTShape(description=metadata.get("preset", "checkpoint"), **values)


def _hf_shape(model_cfg: Any):
    """An HF model's shape from config.json, or from the architecture and size (torch-free)."""
    from profiler.models import hf_arch, hf_cache, hf_shape

    if model_cfg.source == "hf":
        info = hf_cache.inspect(hf_cache.resolve(model_cfg.path))
        try:
            return hf_shape.shape_from_config(info.config, str(info.folder), info.parameters,
                                              info.matmul_parameters, info.parameters_how)
        except ValueError as exc:
            raise CheckpointError("path", f"{info.folder}: {exc}; give a complete "
                                  "config.json") from None
    arch = model_cfg.arch
    tokenizer_vocab = None
    if arch.tokenizer:
        folder = hf_cache.resolve(arch.tokenizer, "arch.tokenizer")
        if not hf_cache.has_tokenizer(folder):
            raise CheckpointError("arch.tokenizer", f"{folder} has no tokenizer files; give a "
                                  "folder or cached model with tokenizer.json")
        tokenizer_vocab = hf_cache.tokenizer_size(folder)
    problem = hf_arch.check(arch, tokenizer_vocab)
    if problem:
        raise CheckpointError(f"arch.{problem[0]}", problem[1])
    fields = hf_arch.config_dict(arch, hf_arch.vocab_size(arch, tokenizer_vocab))
    total, matmul = hf_arch.parameter_estimate(fields) or (None, None)
    shape = hf_shape.shape_from_config(fields, f"hf-config {arch.name}", total, matmul,
                                       "formula of the family")
    return dataclasses.replace(shape, kind=hf_arch.ARCHITECTURES[arch.name].kind)


def vocabulary_id(model_cfg: Any) -> str:
    """Which tokenizer a model reads text with: "bytes" (built-in GPT, hf-config without a
    tokenizer) or a fingerprint of an HF tokenizer's vocabulary; equal ids = same token ids."""
    from profiler.models import hf_cache

    if model_cfg.source == "hf":
        return hf_cache.vocabulary_fingerprint(hf_cache.resolve(model_cfg.path))
    if model_cfg.source == "hf-config" and model_cfg.arch.tokenizer:
        return hf_cache.vocabulary_fingerprint(hf_cache.resolve(model_cfg.arch.tokenizer,
                                                                "arch.tokenizer"))
    return "bytes"


def model_label(model_cfg: Any) -> str:
    """A short name for lists (run history, run ids), from the config alone: no file is read."""
    if model_cfg.source == "run":
        return f"run {model_cfg.run_id}"
    if model_cfg.source == "checkpoint":
        return Path(model_cfg.path.rstrip("/")).name or "checkpoint"
    if is_hf(model_cfg):
        return model_name(model_cfg)
    return model_cfg.preset


def model_name(model_cfg: Any) -> str:
    """The preset name of a ModelConfig's model (as saved with the weights for a checkpoint)."""
    if model_cfg.source == "hf":
        return Path(model_cfg.path.rstrip("/")).name or model_cfg.path
    if model_cfg.source == "hf-config":
        arch = model_cfg.arch
        return f"{arch.name}-{arch.n_layer}x{arch.n_embd}"
    path = checkpoint_path(model_cfg)
    if path is None:
        return model_cfg.preset
    return read_header(path)[1].get("preset", "checkpoint")


def describe(model_cfg: Any) -> str:
    if model_cfg.source == "hf":
        return f"Hugging Face model {model_cfg.path}"
    if model_cfg.source == "hf-config":
        return f"{model_name(model_cfg)} ({model_cfg.arch.name}) with random weights"
    path = checkpoint_path(model_cfg)
    if path is None:
        return f"{model_cfg.preset} with random weights"
    _, metadata = read_header(path)
    origin = f"run {model_cfg.run_id}" if model_cfg.source == "run" else str(path)
    return f"{metadata.get('preset', 'GPT')} weights from {origin}"


# --- torch: building, saving and measuring --------------------------------------------------------
def load_model(model_cfg: Any, device: Any = "cpu", dropout: float | None = None):
    """Build the model a ModelConfig names, with its weights; returns (model, description).

    The built-in GPT for presets, runs and checkpoints of ours; a wrapped transformers model
    (profiler/models/hf.py, same interface) for source = "hf" or "hf-config".
    """
    if is_hf(model_cfg):
        from profiler.models import hf

        try:
            return hf.load(model_cfg, device, dropout)
        except CheckpointError as exc:  # at run time the sentence names its setting itself
            raise CheckpointError(exc.field, f"model.{exc.field}: {exc}") from None
    from profiler.models.gpt import GPT

    shape = model_shape(model_cfg)
    model = GPT(shape, model_cfg.dropout if dropout is None else dropout)
    path = checkpoint_path(model_cfg)
    if path is not None:
        load_weights(model, path)
    return model.to(device), describe(model_cfg)


def load_weights(model: Any, path: str | Path) -> None:
    """Fill `model` from a safetensors file (tensors are cast to the model's dtypes)."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    expected = model.state_dict()
    tied = model.lm_head.weight is model.wte.weight
    if tied:
        expected.pop("lm_head.weight", None)
        state.pop("lm_head.weight", None)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError("path", f"{path} does not fit this model (missing "
                              f"{missing[:3]}, unexpected {unexpected[:3]}); give a checkpoint "
                              "saved from a model of the same shape")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError("path", f"{path}: {name} has shape {tuple(tensor.shape)}, the "
                                  f"model expects {tuple(expected[name].shape)}")
    model.load_state_dict(state, strict=False)


def save_model(model: Any, path: str | Path, preset: str = "", extra: dict | None = None) -> int:
    """Save a plain (float, possibly pruned) GPT as safetensors; returns the file's bytes."""
    from safetensors.torch import save_file

    state = plain_state(model)
    metadata = {"format": FORMAT, "shape": json.dumps(model.shape.as_dict()),
                "preset": preset or "custom"}
    metadata.update({k: str(v) for k, v in (extra or {}).items()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path.stat().st_size


def plain_state(model: Any) -> dict:
    """The state dict with pruning masks applied (weight_orig·mask saved as weight) and the tied
    lm_head left out, contiguous and detached: what a loader of ours expects."""
    state = {}
    for name, tensor in model.state_dict().items():
        if name.endswith("_mask"):
            continue
        if name.endswith("_orig"):
            owner, _, attr = name[: -len("_orig")].rpartition(".")
            tensor = getattr(model.get_submodule(owner), attr)
            name = f"{owner}.{attr}"
        state[name] = tensor.detach().contiguous()
    if getattr(model, "lm_head", None) is not None and _tied(model):
        state.pop("lm_head.weight", None)
    return state


def _tied(model: Any) -> bool:
    head = getattr(model.lm_head, "weight", None)
    return head is not None and not callable(head) and head is model.wte.weight


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


def save_run_weights(config: Any, model: Any, steps: int, emit: Any) -> str | None:
    """Save a run's final weights into its run folder when train.save_checkpoint asks for it;
    says so (or why not) with an event. Returns the file's path or None."""
    if not config.train.save_checkpoint:
        return None
    if not config.output_dir:
        emit({"type": "event", "kind": "warning", "message": "train.save_checkpoint is on but "
              "the front end gave no run folder (output_dir is empty): weights not saved"})
        return None
    if not steps:
        return None
    if any(type(p).__name__ == "DTensor" for p in model.parameters()):
        emit({"type": "event", "kind": "warning", "message": "train.save_checkpoint: sharded "
              "(FSDP) weights are not saved in this version; run without FSDP to save them"})
        return None
    if getattr(model, "hf", None) is not None:  # a Hugging Face model: its own folder layout
        from profiler.models import hf

        folder = Path(config.output_dir) / "hf-model"
        size = hf.save(model, folder)
        emit({"type": "event", "kind": "info", "message": f"weights saved to {folder} "
              f"({size / 2**20:.1f} MiB, safetensors, with config and tokenizer); load them with "
              f'model.source = "hf", model.path = "{folder}"'})
        return str(folder)
    path = Path(config.output_dir) / FILENAME
    size = save_model(model, path, model_name(config.model),
                      {"workload": config.workload, "steps": steps, "run": config.name})
    emit({"type": "event", "kind": "info",
          "message": f"weights saved to {path} ({size / 2**20:.1f} MiB, safetensors)"})
    return str(path)
