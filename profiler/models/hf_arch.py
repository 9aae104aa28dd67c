"""Hugging Face architectures built from a config with random weights (model.source = "hf-config").

A user picks a family and a size; this module turns that into the family's config.json fields
(torch-free, so the config validates and the app lists the families without torch), counts the
parameters by formula (checked against the built models in tests/test_hf_models.py, so the FLOP
estimate holds before anything is built), and builds the model through transformers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from profiler.models.hf_shape import CAUSAL, ENCODER


@dataclass(frozen=True)
class Arch:
    name: str
    model_type: str
    kind: str
    summary: str
    grouped_kv: bool = False
    """Takes n_kv_head (grouped-query attention)."""
    rotary: bool = False
    """Rotary position embeddings: the head size must be even."""


ARCHITECTURES: dict[str, Arch] = {a.name: a for a in (
    Arch("gpt2", "gpt2", CAUSAL, "GPT-2: learned positions, LayerNorm, GELU MLP, tied head"),
    Arch("llama", "llama", CAUSAL, "Llama: rotary positions, RMSNorm, SwiGLU MLP, grouped-query "
         "attention, untied head", grouped_kv=True, rotary=True),
    Arch("mistral", "mistral", CAUSAL, "Mistral: Llama layout with sliding-window attention",
         grouped_kv=True, rotary=True),
    Arch("qwen2", "qwen2", CAUSAL, "Qwen2: Llama layout with biases on q, k, v",
         grouped_kv=True, rotary=True),
    Arch("gpt-neox", "gpt_neox", CAUSAL, "GPT-NeoX / Pythia: partial rotary, parallel "
         "attention and MLP, untied head", rotary=True),
    Arch("bert", "bert", ENCODER, "BERT encoder: bidirectional attention, learned positions; "
         "infer and compress only"),
)}


def llama_intermediate(width: int) -> int:
    """SwiGLU width as Llama sizes it: about 8/3 of the model width, rounded up to 32."""
    return 32 * math.ceil(8 * width / 3 / 32)


def check(arch: Any, tokenizer_vocab: int | None) -> tuple[str, str] | None:
    """(field under model.arch, sentence) for the first bad setting, or None."""
    if arch.name not in ARCHITECTURES:
        return "name", (f"{arch.name!r} is not an architecture EffiScope builds; choose one of "
                        f"{', '.join(ARCHITECTURES)}")
    family = ARCHITECTURES[arch.name]
    for field in ("n_layer", "n_head", "n_embd", "block_size"):
        if getattr(arch, field) < 1:
            return field, f"must be 1 or more, got {getattr(arch, field)}"
    if arch.n_embd % arch.n_head:
        return "n_embd", (f"{arch.n_embd} does not split into {arch.n_head} heads; choose a "
                          f"multiple of n_head (e.g. {arch.n_head * max(1, arch.n_embd // arch.n_head)})")
    if family.rotary and (arch.n_embd // arch.n_head) % 2:
        return "n_embd", (f"rotary positions need an even head size, and {arch.n_embd} / "
                          f"{arch.n_head} = {arch.n_embd // arch.n_head}; change n_embd or n_head")
    if arch.n_kv_head < 0 or arch.intermediate_size < 0 or arch.vocab_size < 0:
        return "n_kv_head", "n_kv_head, intermediate_size and vocab_size must be 0 (default) or more"
    if arch.n_kv_head and not family.grouped_kv and arch.n_kv_head != arch.n_head:
        return "n_kv_head", (f"{arch.name} has no grouped-query attention; leave it 0 or use "
                             "llama, mistral or qwen2")
    if arch.n_kv_head and arch.n_head % arch.n_kv_head:
        return "n_kv_head", (f"{arch.n_head} query heads do not share evenly among "
                             f"{arch.n_kv_head} key/value heads; choose a divisor of n_head")
    vocab = vocab_size(arch, tokenizer_vocab)
    if tokenizer_vocab and vocab < tokenizer_vocab:
        return "vocab_size", (f"{arch.vocab_size} is smaller than the tokenizer's {tokenizer_vocab} "
                              "tokens; set 0 (the tokenizer's size) or more")
    return None


def vocab_size(arch: Any, tokenizer_vocab: int | None) -> int:
    """The embedding rows: as set, else the tokenizer's size, else 256 (byte tokens)."""
    return arch.vocab_size or tokenizer_vocab or 256


def config_dict(arch: Any, vocab: int, dropout: float = 0.0) -> dict[str, Any]:
    """The family's config.json fields for this size (model_type included)."""
    family = ARCHITECTURES[arch.name]
    width, layers, heads = arch.n_embd, arch.n_layer, arch.n_head
    no_special = {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None}
    if family.name == "gpt2":
        return {"model_type": "gpt2", "n_layer": layers, "n_head": heads, "n_embd": width,
                "n_positions": arch.block_size, "n_inner": arch.intermediate_size or None,
                "vocab_size": vocab, "attn_pdrop": dropout, "resid_pdrop": dropout,
                "embd_pdrop": dropout, "tie_word_embeddings": True, **no_special}
    if family.name == "gpt-neox":
        return {"model_type": "gpt_neox", "num_hidden_layers": layers,
                "num_attention_heads": heads, "hidden_size": width,
                "intermediate_size": arch.intermediate_size or 4 * width,
                "max_position_embeddings": arch.block_size, "vocab_size": vocab,
                "attention_dropout": dropout, "hidden_dropout": dropout,
                "tie_word_embeddings": False, **no_special}
    if family.name == "bert":
        return {"model_type": "bert", "num_hidden_layers": layers, "num_attention_heads": heads,
                "hidden_size": width, "intermediate_size": arch.intermediate_size or 4 * width,
                "max_position_embeddings": arch.block_size, "vocab_size": vocab,
                "hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout,
                "pad_token_id": 0}
    return {"model_type": family.model_type, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": arch.n_kv_head or heads,
            "hidden_size": width,
            "intermediate_size": arch.intermediate_size or llama_intermediate(width),
            "max_position_embeddings": arch.block_size, "vocab_size": vocab,
            "attention_dropout": dropout, "tie_word_embeddings": False, **no_special}


def parameter_estimate(config: dict) -> tuple[int, int] | None:
    """(all parameters, matmul parameters) of a known family's config, or None if unknown."""
    model_type = config.get("model_type")

    def get(*names, default=None):
        for name in names:
            if isinstance(config.get(name), int):
                return config[name]
        return default

    width = get("hidden_size", "n_embd")
    layers = get("num_hidden_layers", "n_layer")
    heads = get("num_attention_heads", "n_head")
    vocab = get("vocab_size")
    if None in (width, layers, heads, vocab):
        return None
    positions = get("max_position_embeddings", "n_positions", default=0)
    if model_type == "gpt2":
        inner = config.get("n_inner") or 4 * width
        block = 4 * width + 3 * width * width + 3 * width + width * width + width \
            + 2 * width * inner + inner + width
        total = vocab * width + positions * width + layers * block + 2 * width
        return total, total - positions * width
    inner = get("intermediate_size", default=4 * width)
    if model_type == "gpt_neox":
        block = 4 * width + 3 * width * width + 3 * width + width * width + width \
            + 2 * width * inner + inner + width
        tied = bool(config.get("tie_word_embeddings", False))
        total = vocab * width * (1 if tied else 2) + layers * block + 2 * width
        return total, total - (0 if tied else vocab * width)
    if model_type == "bert":
        types = get("type_vocab_size", default=2)
        embed = (vocab + positions + types) * width + 2 * width
        block = 4 * (width * width + width) + 4 * width + 2 * width * inner + inner + width
        total = embed + layers * block + width * width + width  # + the pooler
        return total, total - (vocab + positions + types) * width
    if model_type in ("llama", "mistral", "qwen2"):
        kv_heads = get("num_key_value_heads", default=heads)
        head = get("head_dim", default=width // heads)
        qkv_bias = model_type == "qwen2" or bool(config.get("attention_bias"))
        o_bias = model_type != "qwen2" and bool(config.get("attention_bias"))
        attention = width * heads * head + 2 * width * kv_heads * head + heads * head * width
        if qkv_bias:
            attention += heads * head + 2 * kv_heads * head
        if o_bias:
            attention += width
        mlp = 3 * width * inner + (2 * inner + width if config.get("mlp_bias") else 0)
        tied = bool(config.get("tie_word_embeddings", False))
        total = vocab * width * (1 if tied else 2) + layers * (attention + mlp + 2 * width) + width
        return total, total - (0 if tied else vocab * width)
    return None


def build(arch: Any, vocab: int, dropout: float, attn_implementation: str = "sdpa"):
    """The transformers model of this family and size, with random weights (seed first)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    fields = config_dict(arch, vocab, dropout)
    model_type = fields.pop("model_type")
    config = AutoConfig.for_model(model_type, **fields)
    if ARCHITECTURES[arch.name].kind == ENCODER:
        return AutoModel.from_config(config, attn_implementation=attn_implementation)
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
