"""GGUF files (llama.cpp's format) as a model source: model.source = "gguf", model.path = a .gguf
file.

Reading the header (architecture, sizes, the tensors' quantization types) is torch-free, through
the `gguf` package, so the config validates and the app shows the shape before anything is
built. `load` goes through transformers' own GGUF loader, which dequantizes every tensor to
torch (fp32 here: the run measures the float model; the file's quantization type is shown in the
model's origin) and wraps it like any Hugging Face model (profiler/models/hf.py). Only the
architectures transformers' loader reads are accepted; any other gets a sentence saying so.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from profiler.errors import CheckpointError

# llama.cpp's architecture names where transformers calls them differently.
_ALIASES = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss",
            "minimax-m2": "minimax_m2", "t5encoder": "t5"}
_FLOAT_TYPES = ("F32", "F16", "BF16", "F64")


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    architecture: str
    """general.architecture as the file states it (llama, qwen2, gpt2, ...)."""
    name: str
    fields: dict = field(default_factory=dict)
    """Scalar metadata: key -> value (arrays left out)."""
    tensor_types: dict = field(default_factory=dict)
    """Quantization type name (Q4_K, Q8_0, F16, ...) -> how many tensors have it."""
    parameters: int = 0
    vocab_size: int = 0
    has_tokenizer: bool = False

    @property
    def quantization(self) -> str:
        """The type of most of the file's quantized weights (else its float type), e.g. Q4_K."""
        quantized = Counter({k: v for k, v in self.tensor_types.items() if k not in _FLOAT_TYPES})
        counts = quantized or Counter(self.tensor_types)
        return counts.most_common(1)[0][0] if counts else "unknown"

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(f"{self.architecture}.{key}", default)


def supported_architectures() -> list[str]:
    """What transformers' GGUF loader reads (torch-free: its mapping tables only)."""
    import os

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
        os.environ[name] = "1"
    try:
        from transformers.integrations.ggml import GGUF_CONFIG_MAPPING
    except ImportError:
        return []
    return sorted(k for k in GGUF_CONFIG_MAPPING if k not in ("general", "tokenizer"))


def resolve(path: str) -> Path:
    if not path:
        raise CheckpointError("path", 'is empty; give a .gguf file for source = "gguf"')
    file = Path(path).expanduser()
    if file.is_dir():
        found = sorted(file.glob("*.gguf"))
        if len(found) != 1:
            raise CheckpointError("path", f"{file} holds {len(found)} .gguf files; give the "
                                  "file itself")
        file = found[0]
    if not file.is_file():  # a pipe or a device is not "missing" (validation names its kind)
        what = "is not a regular file" if file.exists() else "does not exist"
        raise CheckpointError("path", f"{file} {what}; give an existing .gguf file")
    return file


def read(path: str) -> GGUFInfo:
    """The file's header: architecture, sizes and tensor types (torch-free, memory-mapped)."""
    file = resolve(path)
    try:
        import gguf
    except ImportError:
        raise CheckpointError("path", "GGUF files need the gguf package, which is not installed; "
                              "run pip install gguf") from None
    try:
        reader = gguf.GGUFReader(str(file))
    except Exception as exc:  # noqa: BLE001 - any damage becomes one sentence about the file
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError("path", f"{file} is not a readable GGUF file ({text}); give a "
                              "complete .gguf file") from None
    fields: dict = {}
    for key, item in reader.fields.items():
        try:
            value = item.contents()
        except Exception:  # noqa: BLE001 - an odd field is left out, not fatal
            continue
        if isinstance(value, (str, int, float, bool)):
            fields[key] = value
    architecture = str(fields.get("general.architecture", ""))
    types = Counter(t.tensor_type.name for t in reader.tensors)
    parameters = sum(int(t.n_elements) for t in reader.tensors)
    vocab = int(fields.get(f"{architecture}.vocab_size", 0) or 0)
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    if not vocab and tokens is not None:
        vocab = len(tokens.data)
    if not vocab:
        embed = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
        vocab = int(embed.shape[-1]) if embed is not None else 0
    return GGUFInfo(path=file, architecture=architecture, name=str(fields.get("general.name", "")),
                    fields=fields, tensor_types=dict(types), parameters=parameters,
                    vocab_size=vocab, has_tokenizer="tokenizer.ggml.model" in fields)


def check_architecture(info: GGUFInfo) -> None:
    arch = _ALIASES.get(info.architecture, info.architecture)
    known = supported_architectures()
    if arch not in known:
        raise CheckpointError("path", f"{info.path.name} holds a {info.architecture or 'unnamed'} "
                              "model, an architecture transformers' GGUF loader cannot read (it "
                              f"reads {', '.join(known)}); convert it to a Hugging Face "
                              'checkpoint and use model.source = "hf"')


def shape(model_cfg: Any):
    """The HFShape of the model in a GGUF file, from its header (torch-free)."""
    from profiler.models import hf_shape

    info = read(model_cfg.path)
    check_architecture(info)
    heads = info.get("attention.head_count", 0)
    config = {
        "model_type": _ALIASES.get(info.architecture, info.architecture),
        "num_hidden_layers": info.get("block_count", 0),
        "num_attention_heads": heads,
        "num_key_value_heads": info.get("attention.head_count_kv", heads),
        "hidden_size": info.get("embedding_length", 0),
        "intermediate_size": info.get("feed_forward_length", 0),
        "max_position_embeddings": info.get("context_length", 0),
        "vocab_size": info.vocab_size,
    }
    try:
        return hf_shape.shape_from_config(config, f"gguf {info.architecture}", info.parameters,
                                          None, f"counted in the GGUF file ({info.quantization})")
    except ValueError as exc:
        raise CheckpointError("path", f"{info.path.name}: {exc}; the file's header lacks sizes "
                              "EffiScope needs") from None


def origin(info: GGUFInfo) -> str:
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(info.tensor_types.items(),
                                                    key=lambda kv: -kv[1]))
    return (f"{info.architecture} weights from {info.path.name} (GGUF, {info.quantization}; "
            f"tensors: {kinds}), dequantized to fp32")


def vocabulary_id(model_cfg: Any) -> str:
    """"bytes" without a tokenizer in the file, else a fingerprint of its token list (the same
    ids as another model with an equal fingerprint); torch-free."""
    import hashlib

    import gguf

    info = read(model_cfg.path)
    if not info.has_tokenizer:
        return "bytes"
    reader = gguf.GGUFReader(str(info.path))
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    digest = hashlib.sha256("\n".join(map(str, tokens)).encode("utf-8")).hexdigest()[:16]
    return f"gguf-tokens-{digest}"


# --- torch: building the model --------------------------------------------------------------------
def load(model_cfg: Any, device: Any = "cpu", dropout: float | None = None):
    """The model in a GGUF file, dequantized, behind the HF interface; (model, origin)."""
    import torch

    from profiler.models import hf
    from profiler.models.hf_shape import DROPOUT_KEYS

    info = read(model_cfg.path)
    check_architecture(info)
    transformers = hf.transformers_offline()
    dropout = model_cfg.dropout if dropout is None else dropout
    folder, name = str(info.path.parent), info.path.name
    try:
        config = transformers.AutoConfig.from_pretrained(folder, gguf_file=name)
        for key in DROPOUT_KEYS:  # model.dropout governs, as for every other model
            if isinstance(getattr(config, key, None), float):
                setattr(config, key, dropout)
        hf_model = transformers.AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, config=config, dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - the loader's failure becomes one sentence
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise CheckpointError("path", f"transformers could not load {name} ({type(exc).__name__}: "
                              f"{text}); check that the file is complete and of an architecture "
                              "it reads") from None
    text = origin(info)
    tokenizer = None
    if info.has_tokenizer:
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
        except Exception as exc:  # noqa: BLE001 - say so and fall back to bytes
            text += f"; its tokenizer could not be built ({str(exc).splitlines()[0][:120]})"
    if tokenizer is None:
        if info.vocab_size < 256:
            raise CheckpointError("path", f"{name} has no tokenizer transformers can build and "
                                  f"only {info.vocab_size} embeddings, too few for UTF-8 bytes; "
                                  "give a GGUF file with its tokenizer")
        text += "; text as UTF-8 bytes (no tokenizer in the file)"
    hf_shape = shape(model_cfg)
    shape_counted = hf.counted_shape(hf_model, hf_shape)
    return hf.HFCausalLM(hf_model, tokenizer, shape_counted, text).to(device), text


def skeleton(model_cfg: Any, dropout: float):
    """The model in a GGUF file built from its header alone (no tensor dequantized), behind the
    HF interface, on the device or fake-tensor mode the caller is in: what the memory trace runs.
    Its weights are fp32, as load() gives them."""
    from profiler.models import hf
    from profiler.models.hf_shape import CAUSAL

    info = read(model_cfg.path)
    check_architecture(info)
    transformers = hf.transformers_offline()
    try:
        config = transformers.AutoConfig.from_pretrained(str(info.path.parent),
                                                         gguf_file=info.path.name)
    except Exception as exc:  # noqa: BLE001 - the loader's failure becomes one sentence
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise CheckpointError("path", f"transformers could not read the header of "
                              f"{info.path.name} ({text}); check that the file is complete") from None
    hf_model = hf.from_config(transformers, config, CAUSAL, dropout)
    shape_counted = hf.counted_shape(hf_model, shape(model_cfg))
    return hf.HFCausalLM(hf_model, None, shape_counted, origin(info))
