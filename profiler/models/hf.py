"""Hugging Face models behind the built-in GPT's interface (imports torch; transformers lazily).

The workloads and techniques talk to every model the same way: `model(idx, targets)` returns
(logits, loss), `model(idx, kv_cache=cache)` decodes with a cache, `model.shape` carries the
sizes, `model.blocks` are the repeated layers (FSDP shards them), `set_attention` and
`set_checkpointing` flip the model's own switches. `HFCausalLM` and `HFEncoder` wrap a
transformers model so it answers to that interface; its own code does the work (its KV cache,
its `attn_implementation`, its activation checkpointing). Safety: only local files are read
(offline mode is forced before transformers is imported), remote code never runs, and weights
come from safetensors, or from a .bin through torch.load(weights_only=True).
"""

from __future__ import annotations

import dataclasses
import inspect as pyinspect
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from profiler.errors import CheckpointError, Unsupported
from profiler.models import hf_arch, hf_cache
from profiler.models.hf_shape import CAUSAL, DROPOUT_KEYS, ENCODER, HFShape, shape_from_config

ATTENTION_NAMES = {"sdpa": "sdpa", "math": "eager"}


def transformers_offline():
    """Import transformers with the hub switched off; quiet logs and no progress bars."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY",
                 "HF_HUB_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_IMPLICIT_TOKEN"):
        os.environ[name] = "1"
    try:
        import transformers
    except ImportError:
        raise Unsupported("Hugging Face models need the transformers package, which is "
                                  "not installed; run pip install transformers (or the README's "
                                  "install command)") from None
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


class HFKVCache:
    """The model's own DynamicCache plus the bookkeeping the infer workload reads."""

    def __init__(self, hf_model: Any, max_len: int):
        from transformers import DynamicCache

        try:
            self.cache = DynamicCache(config=hf_model.config)
        except TypeError:  # older transformers: no config argument
            self.cache = DynamicCache()
        self.max_len = max_len
        self.length = 0

    def nbytes(self) -> int:
        tensors = []
        for layer in getattr(self.cache, "layers", None) or []:
            tensors += [getattr(layer, "keys", None), getattr(layer, "values", None)]
        tensors += list(getattr(self.cache, "key_cache", []) or [])
        tensors += list(getattr(self.cache, "value_cache", []) or [])
        return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


class _HFModel(nn.Module):
    kind = ""

    def __init__(self, hf_model: Any, tokenizer: Any, shape: HFShape, origin: str):
        super().__init__()
        self.hf = hf_model
        self.tokenizer = tokenizer
        """The model's own tokenizer; None = UTF-8 bytes (hf-config without a tokenizer)."""
        self.shape = shape
        self.origin = origin
        self.checkpoint_every = 0
        self._blocks_name = _find_blocks(hf_model, shape.n_layer)

    @property
    def blocks(self) -> nn.ModuleList:
        """The repeated layers (decoder or encoder layers), as FSDP and the reports see them."""
        return self.hf.get_submodule(self._blocks_name)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def set_attention(self, implementation: str) -> None:
        """"sdpa" or "math" (transformers' "eager"), through the model's own switch."""
        wanted = ATTENTION_NAMES[implementation]
        try:
            self.hf.set_attn_implementation(wanted)
        except (ValueError, ImportError, AttributeError) as exc:
            raise Unsupported(f"{self.shape.arch} cannot switch its attention to "
                                      f"{wanted} ({exc})") from None
        now = getattr(self.hf.config, "_attn_implementation", wanted)
        if now != wanted:
            raise Unsupported(f"{self.shape.arch} keeps attn_implementation = {now!r}; "
                                      f"it does not support {wanted!r}")

    def set_checkpointing(self, every: int) -> None:
        """Activation checkpointing through the model's own switch; every = 0 turns it off."""
        if every == 0:
            off = getattr(self.hf, "activation_checkpointing_disable", None) \
                or self.hf.gradient_checkpointing_disable
            off()
        elif not getattr(self.hf, "supports_gradient_checkpointing", False):
            raise Unsupported(f"{self.shape.arch} has no activation checkpointing in "
                                      "transformers")
        elif checkpoint_every_supported():
            self.hf.activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False}, every_n_layers=every)
        elif every == 1:
            self.hf.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            raise Unsupported("this transformers version checkpoints every layer or "
                                      "none; set every = 1")
        self.checkpoint_every = every

    def convert_conv1d(self) -> int:
        """Replace GPT-2's Conv1D layers in the blocks by nn.Linear holding the transposed weight
        (the same math), so the compression techniques, which act on nn.Linear, can reach them."""
        count = 0
        for name, module in list(self.blocks.named_modules()):
            if type(module).__name__ != "Conv1D" or not hasattr(module, "nf"):
                continue
            weight = module.weight.detach()
            linear = nn.Linear(weight.size(0), weight.size(1), bias=module.bias is not None,
                               device=weight.device, dtype=weight.dtype)
            with torch.no_grad():
                linear.weight.copy_(weight.t())
                if module.bias is not None:
                    linear.bias.copy_(module.bias)
            owner, _, attr = name.rpartition(".")
            setattr(self.blocks.get_submodule(owner) if owner else self.blocks, attr, linear)
            count += 1
        return count

    def linear_targets(self, layers: str = "all") -> tuple[list[tuple[str, nn.Module]], list[str]]:
        """(the blocks' nn.Linear layers of the chosen part, sentences about those left alone)."""
        prefix = f"hf.{self._blocks_name}."
        head = self.hf.get_output_embeddings() if hasattr(self.hf, "get_output_embeddings") else None
        chosen, skipped, conv = [], [], 0
        for name, module in self.named_modules():
            if type(module).__name__ == "Conv1D":
                conv += 1
                continue
            if not isinstance(module, nn.Linear):
                continue
            if not name.startswith(prefix):
                what = "not in a block"
                if head is module:
                    what = "output head" + (", tied to the embedding" if _tied(self.hf) else "")
                skipped.append(f"{name} ({what})")
                continue
            inner = name[len(prefix):].lower()
            part = "attention" if ("attn" in inner or "attention" in inner) else "mlp"
            if layers in ("all", part):
                chosen.append((name, module))
        if conv:
            skipped.append(f"{conv} GPT-2 Conv1D layers (not nn.Linear; the infer and compress "
                           "workloads convert them first)")
        return chosen, skipped


class HFCausalLM(_HFModel):
    kind = CAUSAL

    def __init__(self, *args: Any):
        super().__init__(*args)
        params = pyinspect.signature(self.hf.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                kv_cache: HFKVCache | None = None):
        """Logits (and the mean cross-entropy when targets are given), as the built-in GPT."""
        if kv_cache is not None:
            end = kv_cache.length + idx.size(1)
            if end > kv_cache.max_len:
                raise ValueError(f"the KV cache holds {kv_cache.max_len} positions; {end} were "
                                 "asked for")
            out = self.hf(input_ids=idx, use_cache=True, **{self._cache_arg: kv_cache.cache})
            kv_cache.length = end
        else:
            out = self.hf(input_ids=idx, use_cache=False)
        logits = out.logits
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss

    def new_kv_cache(self, max_len: int | None = None) -> HFKVCache:
        return HFKVCache(self.hf, max_len or self.shape.block_size)


class HFEncoder(_HFModel):
    kind = ENCODER

    def __init__(self, *args: Any, pooling: str = "mean"):
        super().__init__(*args)
        self.pooling = pooling

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """One embedding per sequence: the mean of the last hidden states (or the first
        token's, when the checkpoint's sentence-transformers pooling says cls)."""
        hidden = self.hf(input_ids=idx).last_hidden_state
        return hidden[:, 0] if self.pooling == "cls" else hidden.mean(dim=1)


def _find_blocks(hf_model: Any, n_layer: int) -> str:
    for name, module in hf_model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layer and name:
            return name
    raise CheckpointError("path", f"cannot find the {n_layer} repeated layers of "
                          f"{type(hf_model).__name__}; this architecture is not supported")


def _tied(hf_model: Any) -> bool:
    head = hf_model.get_output_embeddings() if hasattr(hf_model, "get_output_embeddings") else None
    embed = hf_model.get_input_embeddings()
    return head is not None and head.weight is embed.weight


def checkpoint_every_supported() -> bool:
    """Whether this transformers can checkpoint every k-th layer (detected, not version-checked)."""
    transformers = transformers_offline()
    enable = getattr(transformers.PreTrainedModel, "activation_checkpointing_enable", None)
    return enable is not None and "every_n_layers" in pyinspect.signature(enable).parameters


def counted_shape(hf_model: Any, shape: HFShape) -> HFShape:
    """shape with parameters counted on the built model: all of them, and those in matmuls
    (embedding lookups left out, unless the embedding is also the output head)."""
    total = sum(p.numel() for p in hf_model.parameters())
    head = hf_model.get_output_embeddings() if hasattr(hf_model, "get_output_embeddings") else None
    head_weight = getattr(head, "weight", None)
    lookups = sum(m.weight.numel() for m in hf_model.modules()
                  if isinstance(m, nn.Embedding) and m.weight is not head_weight)
    return dataclasses.replace(shape, parameters=total, matmul_parameters=total - lookups,
                               parameters_how="counted on the built model")


def load_tokenizer(folder: Path, field: str) -> Any:
    transformers = transformers_offline()
    if not hf_cache.has_tokenizer(folder):
        raise CheckpointError(field, f"{folder} has no tokenizer files (tokenizer.json, vocab.json "
                              "+ merges.txt, vocab.txt or tokenizer.model); EffiScope tokenizes "
                              "text with the model's own tokenizer, so add them to the folder")
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True,
                                                          trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - any failure becomes one sentence about the folder
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(field, f"the tokenizer in {folder} could not be loaded ({first}); "
                              "give a folder with a tokenizer transformers can read without "
                              "remote code (tokenizer.json is the safest)") from None


def same_vocabulary(a: Any, b: Any) -> bool:
    """Whether two tokenizers (None = bytes) map text to the same ids."""
    if a is None or b is None:
        return a is None and b is None
    return a.get_vocab() == b.get_vocab()


def load(model_cfg: Any, device: Any = "cpu", dropout: float | None = None):
    """The HF model a ModelConfig names (source hf or hf-config), wrapped; (model, description)."""
    transformers = transformers_offline()
    dropout = model_cfg.dropout if dropout is None else dropout
    if model_cfg.source == "hf-config":
        arch = model_cfg.arch
        tokenizer = None
        if arch.tokenizer:
            tokenizer = load_tokenizer(hf_cache.resolve(arch.tokenizer, "arch.tokenizer"),
                                       "arch.tokenizer")
        vocab = hf_arch.vocab_size(arch, len(tokenizer) if tokenizer is not None else None)
        hf_model = hf_arch.build(arch, vocab, dropout)
        fields = hf_arch.config_dict(arch, vocab, dropout)
        origin = (f"{arch.name} with random weights ({arch.n_layer} layers, width {arch.n_embd}, "
                  f"{'bytes' if tokenizer is None else 'tokenizer ' + arch.tokenizer})")
        shape = shape_from_config(fields, f"hf-config {arch.name}")
        kind = hf_arch.ARCHITECTURES[arch.name].kind
        pooling = "mean"
    else:
        folder = hf_cache.resolve(model_cfg.path)
        info = hf_cache.inspect(folder)
        tokenizer = load_tokenizer(folder, "path")
        kind = info.kind
        hf_model, missing = _from_pretrained(transformers, folder, info, dropout)
        shape = shape_from_config(info.config, str(info.config.get("model_type") or "hf"))
        origin = f"{shape.arch} weights from {folder}"
        if missing:  # e.g. a base model without its language-model head: say so, never hide it
            origin += (f"; {len(missing)} tensors are not in the checkpoint and start from random "
                       f"values ({', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''})")
        pooling = _pooling(folder)
    if tokenizer is not None and len(tokenizer) > shape.vocab_size:
        raise CheckpointError("path", f"the tokenizer has {len(tokenizer)} tokens but the model "
                              f"only {shape.vocab_size} embeddings; give a matching tokenizer")
    shape = counted_shape(hf_model, shape)
    wrapper = (HFEncoder(hf_model, tokenizer, shape, origin, pooling=pooling) if kind == ENCODER
               else HFCausalLM(hf_model, tokenizer, shape, origin))
    return wrapper.to(device), origin


def skeleton(model_cfg: Any, dropout: float) -> _HFModel:
    """The model a ModelConfig names (source hf or hf-config) built from its config alone: no
    weights read, no tokenizer built (its size only), every tensor on the device or fake-tensor
    mode the caller is in. What the memory trace runs (profiler/engine/memory_trace.py)."""
    transformers = transformers_offline()
    if model_cfg.source == "hf-config":
        arch = model_cfg.arch
        tokens = None
        if arch.tokenizer:
            tokens = hf_cache.tokenizer_size(hf_cache.resolve(arch.tokenizer, "arch.tokenizer"))
        vocab = hf_arch.vocab_size(arch, tokens)
        hf_model = hf_arch.build(arch, vocab, dropout)
        shape = shape_from_config(hf_arch.config_dict(arch, vocab, dropout),
                                  f"hf-config {arch.name}")
        kind, origin = hf_arch.ARCHITECTURES[arch.name].kind, f"{arch.name} (config only)"
    else:
        folder = hf_cache.resolve(model_cfg.path)
        info = hf_cache.inspect(folder)
        config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True,
                                                         trust_remote_code=False)
        hf_model = from_config(transformers, config, info.kind, dropout)
        shape = shape_from_config(info.config, str(info.config.get("model_type") or "hf"))
        kind, origin = info.kind, f"{shape.arch} from {folder} (config only)"
    shape = counted_shape(hf_model, shape)
    if kind == ENCODER:
        return HFEncoder(hf_model, None, shape, origin)
    return HFCausalLM(hf_model, None, shape, origin)


def from_config(transformers: Any, config: Any, kind: str, dropout: float) -> Any:
    """A transformers model of `config` with fresh weights (SDPA attention where the architecture
    has it, else its eager one), model.dropout set as every loader sets it."""
    for key in DROPOUT_KEYS:
        if isinstance(getattr(config, key, None), float):
            setattr(config, key, dropout)
    cls = transformers.AutoModel if kind == ENCODER else transformers.AutoModelForCausalLM
    try:
        return cls.from_config(config, attn_implementation="sdpa")
    except ValueError as exc:
        if "sdpa" not in str(exc).lower():
            raise
        return cls.from_config(config, attn_implementation="eager")


def _from_pretrained(transformers: Any, folder: Path, info: Any,
                     dropout: float) -> tuple[Any, list[str]]:
    """The model from the folder's weights, and the names of tensors the weights lacked."""
    config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True,
                                                     trust_remote_code=False)
    for key in DROPOUT_KEYS:  # model.dropout governs, as for the built-in GPT
        if isinstance(getattr(config, key, None), float):
            setattr(config, key, dropout)
    cls = transformers.AutoModel if info.kind == ENCODER else transformers.AutoModelForCausalLM
    kwargs: dict = {"config": config, "local_files_only": True, "trust_remote_code": False,
                    "use_safetensors": info.weights_format == "safetensors"}
    params = pyinspect.signature(cls.from_pretrained).parameters
    if "weights_only" in params or info.weights_format == "bin":
        kwargs["weights_only"] = True  # a .bin goes through torch.load(weights_only=True)
    kwargs["dtype" if _accepts_dtype(transformers) else "torch_dtype"] = torch.float32
    for attention in ("sdpa", "eager"):
        try:
            model, loading = cls.from_pretrained(str(folder), attn_implementation=attention,
                                                 output_loading_info=True, **kwargs)
            return model, sorted(loading.get("missing_keys") or [])
        except ValueError as exc:
            if attention == "sdpa" and "sdpa" in str(exc).lower():
                continue  # an architecture without SDPA support: its eager attention
            raise _load_error(folder, exc) from None
        except Exception as exc:  # noqa: BLE001 - damaged files become one sentence
            raise _load_error(folder, exc) from None
    raise AssertionError("unreachable")


def _accepts_dtype(transformers: Any) -> bool:
    init = pyinspect.signature(transformers.PretrainedConfig.__init__).parameters
    return "dtype" in init or int(transformers.__version__.split(".")[0]) >= 5


def _load_error(folder: Path, exc: BaseException) -> CheckpointError:
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    return CheckpointError("path", f"the weights in {folder} could not be loaded "
                           f"({type(exc).__name__}: {text}); re-download or re-save the checkpoint")


def _pooling(folder: Path) -> str:
    """sentence-transformers' pooling choice (1_Pooling/config.json), else mean."""
    import json

    try:
        data = json.loads((folder / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "mean"
    return "cls" if data.get("pooling_mode_cls_token") and not data.get(
        "pooling_mode_mean_tokens") else "mean"


def save(model: _HFModel, folder: str | Path) -> int:
    """save_pretrained (safetensors) plus the tokenizer; returns the weights' bytes on disk."""
    folder = Path(folder)
    model.hf.save_pretrained(str(folder), safe_serialization=True)
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(str(folder))
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))
