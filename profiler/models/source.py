"""Facts about the model a config names, without torch: which kind it is, where its weights
are, its shape and its name.

A checkpoint of ours is `model.safetensors` whose header metadata carries the model's shape, so
it describes itself: `model_shape` reads only the header (the config validates with it). A past
train run keeps its weights at runs/<id>/model.safetensors when `train.save_checkpoint` is on.
Loading and saving weights live in profiler/engine/weights.py, measuring them in profiler/measure/sizes.py.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path
from typing import Any

from profiler.errors import CheckpointError

FILENAME = "model.safetensors"
FORMAT = "effiscope-gpt"
_SHAPE_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")


HF_SOURCES = ("hf", "hf-config", "gguf")
"""Sources built behind the Hugging Face interface (profiler/models/hf.py; gguf.py for .gguf)."""


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
        from profiler import files

        path = run.path / FILENAME
        try:  # an artifact of the store: a regular file in the run folder, never a link or FIFO
            files.open_regular(path, inside=run.path).close()
        except FileNotFoundError:
            raise CheckpointError("run_id", f"run {run.run_id} saved no weights ({FILENAME} is "
                                  "missing); train with train.save_checkpoint = true, or pick "
                                  "another run") from None
        except OSError as exc:
            raise CheckpointError("run_id", f"the weights of run {run.run_id} were not read: "
                                  f"{exc}; pick another run") from None
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

    if model_cfg.source == "gguf":
        from profiler.models import gguf

        return gguf.shape(model_cfg)
    if is_hf(model_cfg):
        return _hf_shape(model_cfg)
    path = checkpoint_path(model_cfg)
    if path is None:
        return GPT_PRESETS[model_cfg.preset]
    header, metadata = read_header(path)
    field = "run_id" if model_cfg.source == "run" else "path"
    try:
        if metadata.get("format") != FORMAT:
            raise ValueError
        raw = json.loads(metadata["shape"])
        values = {k: int(raw[k]) for k in _SHAPE_KEYS}
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(field, f"{path} carries no EffiScope model shape in its metadata; "
                              "give a checkpoint saved by EffiScope (Hugging Face checkpoints "
                              "are not supported yet)") from None
    lie = _shape_against_tensors(header, values)
    if lie:  # the metadata, not the run, is wrong: say so before a model of that shape is built
        raise CheckpointError(field, f"{path}: its metadata does not describe its tensors "
                              f"({lie}); the file is damaged or was edited: give the checkpoint as it was saved, or save it again")
    return GPTShape(description=metadata.get("preset", "checkpoint"), **values)


def _shape_against_tensors(header: dict, values: dict) -> str | None:
    """What the stored shape claims that the tensors contradict, in words, or None."""
    def dims(name: str) -> list | None:
        entry = header.get(name)
        shape = entry.get("shape") if isinstance(entry, dict) else None
        return shape if isinstance(shape, list) else None

    claims = [("vocab_size", "wte.weight", 0), ("n_embd", "wte.weight", 1),
              ("block_size", "wpe.weight", 0)]
    for key, tensor, axis in claims:
        shape = dims(tensor)
        if shape is None or len(shape) != 2:
            return f"it has no 2-D {tensor}"
        if shape[axis] != values[key]:
            return f"the metadata says {key} = {values[key]:,}, the weights hold {shape[axis]:,}"
    layers = {name.split(".")[1] for name in header if name.startswith("blocks.")}
    if len(layers) != values["n_layer"]:
        return f"the metadata says n_layer = {values['n_layer']:,}, the weights hold {len(layers)}"
    if values["n_head"] < 1 or values["n_embd"] % values["n_head"]:
        return f"n_head = {values['n_head']:,} does not divide n_embd = {values['n_embd']:,}"
    return None


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

    if model_cfg.source == "gguf":
        from profiler.models import gguf

        return gguf.vocabulary_id(model_cfg)
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
    if model_cfg.source == "gguf":
        return Path(model_cfg.path.rstrip("/")).stem or "gguf"
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
    if model_cfg.source == "gguf":
        return f"GGUF model {model_cfg.path}"
    if model_cfg.source == "hf-config":
        return f"{model_name(model_cfg)} ({model_cfg.arch.name}) with random weights"
    path = checkpoint_path(model_cfg)
    if path is None:
        return f"{model_cfg.preset} with random weights"
    _, metadata = read_header(path)
    origin = f"run {model_cfg.run_id}" if model_cfg.source == "run" else str(path)
    return f"{metadata.get('preset', 'GPT')} weights from {origin}"
