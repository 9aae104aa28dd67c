"""The shape of a Hugging Face model, read from its config.json alone (no torch, no transformers).

Validation, the app's model picker and the theory (FLOPs per token, memory) need layers, heads,
width, context and vocabulary before any model is built; config.json has them under names that
differ by family, so this module maps them. `model_kind` decides what EffiScope can do with a
model: causal language models run every workload, encoders (BERT-style) run infer and compress.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CAUSAL = "hf-causal"
ENCODER = "hf-encoder"
BUILTIN = "builtin"

# model_type values of encoder-only families whose base model gives token embeddings.
ENCODER_TYPES = frozenset({
    "bert", "roberta", "xlm-roberta", "distilbert", "electra", "mpnet", "albert", "camembert",
    "deberta", "deberta-v2", "modernbert", "ernie", "xlm", "nomic_bert", "jina_bert",
})
# Families with both an encoder and a decoder: neither workload fits them.
SEQ2SEQ_TYPES = frozenset({"t5", "mt5", "bart", "mbart", "pegasus", "marian", "whisper",
                           "encoder-decoder", "umt5", "longt5", "led", "blenderbot"})
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")

# The same quantity under each family's name, first match wins.
_KEYS = {
    "n_layer": ("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
    "n_head": ("num_attention_heads", "n_head", "num_heads", "n_heads"),
    "n_embd": ("hidden_size", "n_embd", "d_model", "dim"),
    "block_size": ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len",
                   "seq_length"),
    "vocab_size": ("vocab_size", "padded_vocab_size"),
}
# Dropout probabilities that model.dropout overrides, so runs are comparable across families.
DROPOUT_KEYS = ("attn_pdrop", "resid_pdrop", "embd_pdrop", "attention_dropout",
                "hidden_dropout", "hidden_dropout_prob", "attention_probs_dropout_prob",
                "dropout", "embedding_dropout", "classifier_dropout_prob")


@dataclass(frozen=True)
class HFShape:
    """A Hugging Face model's shape; same core fields as the built-in GPTShape."""

    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    vocab_size: int
    description: str
    arch: str = ""
    """config.json's model_type (gpt2, llama, qwen2, bert, ...)."""
    kind: str = CAUSAL
    n_kv_head: int = 0
    intermediate_size: int = 0
    parameters: int | None = None
    """All parameters (a tied embedding once); None where it cannot be known before building."""
    matmul_parameters: int | None = None
    """Parameters that take part in matrix multiplies: all but embedding lookups (an embedding
    tied to the output head counts, as the head). 6·N of the FLOP estimate uses this N."""
    parameters_how: str = ""

    def as_dict(self) -> dict:
        return {"n_layer": self.n_layer, "n_head": self.n_head, "n_embd": self.n_embd,
                "block_size": self.block_size, "vocab_size": self.vocab_size,
                "arch": self.arch, "kind": self.kind, "n_kv_head": self.n_kv_head,
                "intermediate_size": self.intermediate_size}

    def parameter_count(self) -> int:
        return int(self.parameters or 0)


def lookup(config: dict, name: str, default: int | None = None) -> int | None:
    for key in _KEYS[name]:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    text = config.get("text_config")
    if isinstance(text, dict):
        return lookup(text, name, default)
    return default


def needs_remote_code(config: dict) -> bool:
    """True when the checkpoint ships its own modelling code (which EffiScope never runs)."""
    return bool(config.get("auto_map")) or bool(config.get("trust_remote_code"))


def model_kind(config: dict) -> tuple[str | None, str]:
    """(CAUSAL | ENCODER | None, why not) from config.json's model_type and architectures."""
    model_type = str(config.get("model_type") or "")
    archs = [str(a) for a in config.get("architectures") or []]
    if model_type in SEQ2SEQ_TYPES or config.get("is_encoder_decoder"):
        return None, (f"model_type {model_type or '?'} is an encoder-decoder model; EffiScope "
                      "runs decoder-only language models and encoder models")
    if any(a.endswith(_CAUSAL_SUFFIXES) for a in archs):
        return CAUSAL, ""
    if model_type in ENCODER_TYPES:
        return ENCODER, ""
    if model_type:
        return CAUSAL, ""  # a base decoder (e.g. LlamaModel): loaded with a language-model head
    return None, "config.json names no model_type"


def shape_from_config(config: dict, description: str, parameters: int | None = None,
                      matmul_parameters: int | None = None, how: str = "") -> HFShape:
    """The HFShape of a config.json dict; raises ValueError naming a missing size."""
    values = {}
    for name in ("n_layer", "n_head", "n_embd", "vocab_size"):
        value = lookup(config, name)
        if value is None or value < 1:
            raise ValueError(f"config.json has no {' / '.join(_KEYS[name][:2])}")
        values[name] = value
    kind, _ = model_kind(config)
    # Rotary models may claim huge contexts (128k); the number bounds seq_len checks only.
    values["block_size"] = lookup(config, "block_size") or 2048
    n_kv = config.get("num_key_value_heads") or values["n_head"]
    inter = (config.get("intermediate_size") or config.get("n_inner") or config.get("ffn_dim")
             or 4 * values["n_embd"])
    return HFShape(description=description, arch=str(config.get("model_type") or ""),
                   kind=kind or CAUSAL, n_kv_head=int(n_kv), intermediate_size=int(inter),
                   parameters=parameters, matmul_parameters=matmul_parameters,
                   parameters_how=how, **values)


_EMBEDDING_SUFFIXES = ("embed_tokens.weight", "wte.weight", "embed_in.weight",
                       "word_embeddings.weight")
_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|h|layer|blocks)\.(\d+)\.")


def config_against_tensors(config: dict, shapes: dict[str, list]) -> str | None:
    """Which config.json field the weight files contradict, in words, or None.

    transformers builds the model from config.json, then fills it from the weights: a field
    that lies (hidden_size, num_hidden_layers, vocab_size) ends in a size-mismatch error deep
    inside it, or a model built far bigger than its weights. The token embedding ([vocab,
    width]) and the count of numbered layers are in every family's weights.
    """
    embedding = next(((name, shape) for name, shape in shapes.items()
                      if name.endswith(_EMBEDDING_SUFFIXES) and len(shape) == 2), None)
    if embedding is not None:
        name, (rows, width) = embedding
        for key, held in (("n_embd", width), ("vocab_size", rows)):
            claimed = lookup(config, key)
            if claimed is not None and claimed != held:
                field = next(k for k in _KEYS[key] if k in config or k in (config.get(
                    "text_config") or {}))
                return (f"config.json says {field} = {claimed:,}, but the weights' {name} is "
                        f"{rows:,} x {width:,} ({key.replace('n_embd', 'width')} {held:,}): "
                        f"config.json's {field} is wrong")
    layers = {int(m[1]) for name in shapes if (m := _LAYER_INDEX.search(name))}
    claimed = lookup(config, "n_layer")
    if layers and claimed is not None and claimed != len(layers):
        field = next((k for k in _KEYS["n_layer"] if k in config), "num_hidden_layers")
        return (f"config.json says {field} = {claimed:,}, but the weights hold {len(layers)} "
                f"layers: config.json's {field} is wrong")
    return None
