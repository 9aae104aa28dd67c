"""Finding Hugging Face checkpoints on this machine, offline, without torch or transformers.

A model is a folder (config.json, weights, tokenizer files) given by path, or a model id
("org/name") already in the local Hugging Face hub cache, whose layout is
models--org--name/snapshots/<revision>/... with refs/main naming the current revision. Nothing is
ever downloaded. `inspect` checks a folder before any weight is read: a config, no remote code,
weights in safetensors (or a .bin, loaded with weights_only) that are complete on disk.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from profiler.errors import CheckpointError
from profiler.models import hf_arch
from profiler.models.hf_shape import config_against_tensors, model_kind, needs_remote_code

_MAX_HEADER_BYTES = 100_000_000
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}


def hub_cache_dir() -> Path:
    """Where the hub keeps models: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "huggingface" / "hub"


def looks_like_model_id(text: str) -> bool:
    parts = text.split("/")
    return (0 < len(parts) <= 2 and all(parts) and not text.startswith((".", "~"))
            and all(p not in (".", "..") for p in parts))


def find_cached(model_id: str, cache: Path | None = None) -> Path | None:
    """The snapshot folder of model_id in the hub cache (refs/main's revision, else the newest
    snapshot holding a config.json), or None."""
    root = (cache or hub_cache_dir()) / ("models--" + model_id.replace("/", "--"))
    snapshots = root / "snapshots"
    if not snapshots.is_dir():
        return None
    try:
        revision = (root / "refs" / "main").read_text(encoding="utf-8").strip()
    except OSError:
        revision = ""
    if revision and (snapshots / revision / "config.json").is_file():
        return snapshots / revision
    candidates = [p for p in snapshots.iterdir() if (p / "config.json").is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def resolve(target: str, field: str = "path") -> Path:
    """A checkpoint folder from a path or a cached model id; CheckpointError says where we looked."""
    if not target:
        raise CheckpointError(field, "is empty; give a local Hugging Face checkpoint folder "
                              "(config.json + *.safetensors) or the id of a model in the local "
                              "Hugging Face cache (`effiscope models` lists them)")
    path = Path(target).expanduser()
    if path.is_dir():
        return path
    if path.is_file() and path.name == "config.json":
        return path.parent
    cache = hub_cache_dir()
    if looks_like_model_id(target):
        found = find_cached(target, cache)
        if found is not None:
            return found
    raise CheckpointError(field, (
        f"{target!r} is not on this machine: EffiScope looked for a folder at {path.resolve()} "
        f"and for a model in the Hugging Face cache at {cache / ('models--' + target.replace('/', '--'))} "
        "(set HF_HUB_CACHE or HF_HOME to use another cache); nothing is downloaded at run time, "
        "so copy the checkpoint folder here or download it into the cache first"))


def read_config(folder: Path, field: str = "path") -> dict:
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(field, f"{folder} has no config.json, so it is not a Hugging Face "
                              "checkpoint folder; give the folder that holds config.json and the "
                              "weights") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(field, f"{path} is not readable JSON ({exc}); re-download or "
                              "re-save the checkpoint") from None
    if not isinstance(config, dict):
        raise CheckpointError(field, f"{path} is not a JSON object; re-download the checkpoint")
    return config


def safetensors_header(path: Path, field: str = "path") -> dict:
    """The tensor entries of a safetensors file, after checking the file holds all their bytes."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise ValueError("the file is shorter than a safetensors header")
            (length,) = struct.unpack("<Q", raw)
            if length > _MAX_HEADER_BYTES or 8 + length > size:
                raise ValueError("the header is cut off")
            header = json.loads(fh.read(length).decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        header.pop("__metadata__", None)
        end = max((int(e["data_offsets"][1]) for e in header.values()), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise CheckpointError(field, f"{path} is damaged ({exc}); re-download or re-save the "
                              "checkpoint") from None
    if 8 + length + end > size:
        raise CheckpointError(field, f"{path} is truncated: its header describes "
                              f"{8 + length + end:,} bytes but the file has {size:,}; re-download "
                              "or re-save the checkpoint")
    return header


@dataclass
class CheckpointInfo:
    folder: Path
    config: dict
    kind: str
    weights_format: str
    """"safetensors" or "bin"."""
    weight_files: list[Path] = field(default_factory=list)
    parameters: int | None = None
    matmul_parameters: int | None = None
    parameters_how: str = ""
    tokenizer: bool = False


def weight_files(folder: Path) -> tuple[str, list[Path]]:
    """("safetensors" | "bin" | "", files): safetensors preferred, as transformers does."""
    for fmt, single, index in (("safetensors", "model.safetensors", "model.safetensors.index.json"),
                               ("bin", "pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (folder / single).is_file():
            return fmt, [folder / single]
        if (folder / index).is_file():
            try:
                mapping = json.loads((folder / index).read_text(encoding="utf-8"))["weight_map"]
                return fmt, sorted({folder / name for name in mapping.values()})
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return fmt, []
    return "", []


def has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in (
        "tokenizer.json", "vocab.json", "vocab.txt", "tokenizer.model", "spiece.model"))


def tokenizer_size(folder: Path) -> int | None:
    """Tokens of a fast tokenizer (tokenizer.json: its vocabulary plus added tokens), or None."""
    try:
        data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        vocab = data["model"]["vocab"]
        ids = set(vocab.values()) if isinstance(vocab, dict) else set(range(len(vocab)))
        ids.update(int(t["id"]) for t in data.get("added_tokens") or [])
        return max(ids) + 1 if ids else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def inspect(folder: Path, field: str = "path") -> CheckpointInfo:
    """Check a checkpoint folder before loading it; CheckpointError names the problem and fix."""
    config = read_config(folder, field)
    if needs_remote_code(config):
        raise CheckpointError(field, (
            f"{folder} needs code shipped with the checkpoint (config.json has auto_map) and "
            "EffiScope never runs remote code; choose a model whose architecture transformers "
            "ships (GPT-2, Llama, Mistral, Qwen2, GPT-NeoX, BERT, ...)"))
    kind, why = model_kind(config)
    if kind is None:
        raise CheckpointError(field, f"{folder}: {why}; choose a causal language model or an "
                              "encoder checkpoint")
    fmt, files = weight_files(folder)
    if not fmt:
        raise CheckpointError(field, f"{folder} holds no weights (model.safetensors or "
                              "pytorch_model.bin, or their sharded index); give a complete "
                              "checkpoint folder")
    missing = [p for p in files if not p.is_file()]
    if not files or missing:
        raise CheckpointError(field, f"{folder}: weight shard {missing[0].name if missing else '?'} "
                              "named by the index is missing; re-download the checkpoint")
    info = CheckpointInfo(folder, config, kind, fmt, files, tokenizer=has_tokenizer(folder))
    estimate = hf_arch.parameter_estimate(config)
    if fmt == "safetensors":
        total, lm_head = 0, 0
        shapes: dict[str, list] = {}
        for path in files:
            for name, entry in safetensors_header(path, field).items():
                count = 1
                for dim in entry.get("shape", []):
                    count *= int(dim)
                total += count
                shapes[name] = [int(dim) for dim in entry.get("shape", [])]
                if name.endswith("lm_head.weight"):
                    lm_head = count
        lie = config_against_tensors(config, shapes)
        if lie:
            raise CheckpointError(field, f"{folder}: {lie}; fix config.json or re-download the "
                                  "checkpoint")
        if config.get("tie_word_embeddings", True) and lm_head:
            total -= lm_head  # stored twice, tied once when loaded
        info.parameters, info.parameters_how = total, "counted from the safetensors headers"
    elif estimate is not None:
        info.parameters, info.parameters_how = estimate[0], "estimated from config.json"
    if estimate is not None:
        info.matmul_parameters = estimate[1]
    return info


def list_cached_models(cache: Path | None = None) -> list[dict]:
    """Every model in the local hub cache, with what EffiScope can do with it (read offline).

    Each item: id, path (snapshot folder), model_type, kind (hf-causal / hf-encoder / None),
    architectures, weights (safetensors / bin / ""), size_bytes, parameters, usable, reason.
    """
    root = cache or hub_cache_dir()
    out: list[dict] = []
    try:
        folders = sorted(p for p in root.iterdir() if p.name.startswith("models--"))
    except OSError:
        return out
    for repo in folders:
        model_id = repo.name[len("models--"):].replace("--", "/")
        snapshot = find_cached(model_id, root)
        item = {"id": model_id, "path": str(snapshot or repo), "model_type": "", "kind": None,
                "architectures": [], "weights": "", "size_bytes": 0, "parameters": None,
                "usable": False, "reason": ""}
        if snapshot is None:
            item["reason"] = "no snapshot with a config.json (an incomplete download?)"
            out.append(item)
            continue
        try:
            info = inspect(snapshot)
            item.update(kind=info.kind, weights=info.weights_format, parameters=info.parameters,
                        usable=info.tokenizer,
                        reason="" if info.tokenizer else "no tokenizer files")
            item["size_bytes"] = sum(p.stat().st_size for p in info.weight_files)
        except CheckpointError as exc:
            item["reason"] = str(exc)
        try:
            config = read_config(snapshot)
            item["model_type"] = str(config.get("model_type") or "")
            item["architectures"] = [str(a) for a in config.get("architectures") or []]
        except CheckpointError:
            pass
        out.append(item)
    return out


def vocabulary_fingerprint(folder: Path) -> str:
    """A hash of a tokenizer's token -> id table, so two folders can be compared without
    loading them; "" when the folder has no tokenizer file we can read."""
    import hashlib

    try:
        data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        table = {"vocab": data["model"]["vocab"],
                 "added": sorted((t["content"], t["id"]) for t in data.get("added_tokens") or [])}
        return "tokenizer.json:" + hashlib.sha256(
            json.dumps(table, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for name in ("vocab.json", "vocab.txt", "tokenizer.model", "spiece.model"):
        try:
            return f"{name}:" + hashlib.sha256((folder / name).read_bytes()).hexdigest()[:16]
        except OSError:
            continue
    return f"unknown:{folder}"
