"""Model weights: build a config's model with its weights, and save a run's weights — the one
save path every workload uses (built-in GPT as safetensors of ours, Hugging Face models in their
own folder layout, sharded FSDP weights refused with a sentence). Never pickle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from profiler.errors import CheckpointError
from profiler.models.source import (
    FILENAME,
    FORMAT,
    checkpoint_path,
    describe,
    is_hf,
    model_name,
    model_shape,
)
from profiler.wire import protocol


def load_model(model_cfg: Any, device: Any = "cpu", dropout: float | None = None):
    """Build the model a ModelConfig names, with its weights; returns (model, description).

    The built-in GPT for presets, runs and checkpoints of ours; a wrapped transformers model
    (profiler/models/hf.py, same interface) for source = "hf" or "hf-config".
    """
    if model_cfg.source == "gguf":  # a llama.cpp file, dequantized behind the HF interface
        from profiler.models import gguf

        return gguf.load(model_cfg, device, dropout)
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


def build_skeleton(model_cfg: Any, dropout: float) -> Any:
    """The model a ModelConfig names built without reading its weights (a Hugging Face model
    from config.json, a GGUF one from its header, the built-in GPT from its shape), on whatever
    device or fake-tensor mode the caller is in: the structure the memory trace runs
    (profiler/engine/memory_trace.py), the same modules load_model builds."""
    if model_cfg.source == "gguf":
        from profiler.models import gguf

        return gguf.skeleton(model_cfg, dropout)
    if is_hf(model_cfg):
        from profiler.models import hf

        return hf.skeleton(model_cfg, dropout)
    from profiler.models.gpt import GPT

    return GPT(model_shape(model_cfg), dropout)


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


def save_run_weights(config: Any, model: Any, steps: int, emit: Any) -> str | None:
    """Save a run's final weights into its run folder when train.save_checkpoint asks for it;
    says so (or why not) with an event. Returns the file's path or None."""
    if not config.train.save_checkpoint:
        return None
    if not config.output_dir:
        emit(protocol.warning("train.save_checkpoint is on but the front end gave no run "
                              "folder (output_dir is empty): weights not saved"))
        return None
    if not steps:
        return None
    if any(type(p).__name__ == "DTensor" for p in model.parameters()):
        emit(protocol.warning("train.save_checkpoint: sharded (FSDP) weights are not saved in "
                              "this version; run without FSDP to save them"))
        return None
    if getattr(model, "hf", None) is not None:  # a Hugging Face model: its own folder layout
        from profiler.models import hf

        folder = Path(config.output_dir) / "hf-model"
        size = hf.save(model, folder)
        emit(protocol.info(f"weights saved to {folder} ({size / 2**20:.1f} MiB, safetensors, "
                           "with config and tokenizer); load them with "
                           f'model.source = "hf", model.path = "{folder}"'))
        return str(folder)
    path = Path(config.output_dir) / FILENAME
    size = save_model(model, path, model_name(config.model),
                      {"workload": config.workload, "steps": steps, "run": config.name})
    emit(protocol.info(f"weights saved to {path} ({size / 2**20:.1f} MiB, safetensors)"))
    return str(path)
