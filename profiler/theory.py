"""Theory beside measurement: parameter counts and FLOPs per token, without torch.

FLOPs per token for training follow the PaLM / nanoGPT estimate: 6·N for the matrix multiplies
of forward and backward over N parameters, plus 12·L·H·Q·T for attention (L layers, H heads,
head size Q, sequence length T). Position embeddings are left out of N: they are a lookup.
"""

from __future__ import annotations

from profiler.models.presets import GPTShape


def flops_per_token(shape: GPTShape, seq_len: int, training: bool = True) -> float:
    n = shape.parameter_count() - shape.block_size * shape.n_embd
    head = shape.n_embd // shape.n_head
    attention = 12 * shape.n_layer * shape.n_head * head * seq_len
    train = 6 * n + attention
    return float(train if training else train / 3)
