"""A decoder-only transformer (GPT-2 layout) in plain PyTorch.

The model stays plain: techniques switch behaviour through two attributes (`attention` on each
attention module, `checkpoint_every` on the model) rather than by editing the forward pass.
Decoding passes a `KVCache` to `forward`: keys and values of earlier positions are kept, so each
new token costs one position's work instead of recomputing the whole prefix. Without a cache the
forward pass is the training one, unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from profiler.models.presets import GPT_PRESETS, GPTShape


class KVCache:
    """Keys and values of every layer for positions 0..length-1, preallocated to max_len.

    Tensors are allocated on the first write, in the dtype and device of the keys, so a cast or
    quantized model gets a cache that matches it.
    """

    def __init__(self, n_layer: int, max_len: int):
        self.max_len = max_len
        self.length = 0
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (batch, heads, new, head_dim) at positions length..; return all so far."""
        end = self.length + k.size(2)
        if end > self.max_len:
            raise ValueError(f"the KV cache holds {self.max_len} positions; {end} were asked for")
        if self.keys[layer] is None:
            shape = (k.size(0), k.size(1), self.max_len, k.size(3))
            self.keys[layer] = k.new_zeros(shape)
            self.values[layer] = v.new_zeros(shape)
        keys, values = self.keys[layer], self.values[layer]
        keys[:, :, self.length:end] = k
        values[:, :, self.length:end] = v
        return keys[:, :, :end], values[:, :, :end]

    def reset(self) -> None:
        self.length = 0

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values if t is not None)


class CausalSelfAttention(nn.Module):
    def __init__(self, shape: GPTShape, dropout: float):
        super().__init__()
        assert shape.n_embd % shape.n_head == 0, "n_embd must divide into n_head heads"
        self.n_head = shape.n_head
        self.qkv = nn.Linear(shape.n_embd, 3 * shape.n_embd)
        self.proj = nn.Linear(shape.n_embd, shape.n_embd)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)
        self.attention = "sdpa"  # or "math": explicit softmax(QK^T/sqrt(d))V with a causal mask
        mask = torch.tril(torch.ones(shape.block_size, shape.block_size, dtype=torch.bool))
        self.register_buffer("causal_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        batch, seq, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)
        q, k, v = (t.view(batch, seq, self.n_head, -1).transpose(1, 2) for t in (q, k, v))
        drop = self.dropout if self.training else 0.0
        if cache is not None:
            y = self._attend_cached(q, k, v, cache, layer)
        elif self.attention == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
        else:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
            scores = scores.masked_fill(~self.causal_mask[:seq, :seq], float("-inf"))
            weights = F.dropout(F.softmax(scores, dim=-1), p=drop, training=self.training)
            y = weights @ v
        y = y.transpose(1, 2).contiguous().view(batch, seq, width)
        return self.resid_dropout(self.proj(y))

    def _attend_cached(self, q, k, v, cache: KVCache, layer: int) -> torch.Tensor:
        """New queries at positions start.. attend to every cached key up to their own position.

        The two cases generation has pass SDPA no mask, so every backend (flash refuses any
        attn_mask) can run them: a prefill from an empty cache is the plain causal pass
        (is_causal=True), and one new token may see every key there is. Only a chunk appended
        to a non-empty cache needs the explicit mask."""
        start, new = cache.length, q.size(2)
        keys, values = cache.update(layer, k, v)
        if self.attention == "sdpa":
            if start == 0 or new == 1:
                return F.scaled_dot_product_attention(q, keys, values, is_causal=start == 0 and new > 1)
            mask = self.causal_mask[start:start + new, :keys.size(2)]
            return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        mask = self.causal_mask[start:start + new, :keys.size(2)]
        scores = (q @ keys.transpose(-2, -1)) / math.sqrt(keys.size(-1))
        return F.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ values


class MLP(nn.Module):
    def __init__(self, shape: GPTShape, dropout: float):
        super().__init__()
        self.fc = nn.Linear(shape.n_embd, 4 * shape.n_embd)
        self.proj = nn.Linear(4 * shape.n_embd, shape.n_embd)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, shape: GPTShape, dropout: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(shape.n_embd)
        self.attn = CausalSelfAttention(shape, dropout)
        self.ln_2 = nn.LayerNorm(shape.n_embd)
        self.mlp = MLP(shape, dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, shape: GPTShape, dropout: float = 0.0):
        super().__init__()
        self.shape = shape
        self.wte = nn.Embedding(shape.vocab_size, shape.n_embd)
        self.wpe = nn.Embedding(shape.block_size, shape.n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(shape, dropout) for _ in range(shape.n_layer))
        self.ln_f = nn.LayerNorm(shape.n_embd)
        self.lm_head = nn.Linear(shape.n_embd, shape.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying, as in GPT-2
        self.checkpoint_every = 0  # 0: off; k: recompute every k-th block in backward
        self.apply(self._init_weights)
        # GPT-2's scaled init of the residual projections keeps the residual stream's variance.
        for name, param in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * shape.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                kv_cache: KVCache | None = None):
        """Logits (and the mean cross-entropy when targets are given).

        With kv_cache, idx holds the tokens at positions kv_cache.length.. (the prompt for a
        prefill, one token per sequence for a decode step) and the cache advances past them.
        """
        seq = idx.size(1)
        start = kv_cache.length if kv_cache is not None else 0
        if start + seq > self.shape.block_size:
            raise ValueError(f"sequence of {start + seq} tokens exceeds the context of "
                             f"{self.shape.block_size}")
        pos = torch.arange(start, start + seq, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for i, block in enumerate(self.blocks):
            if kv_cache is not None:
                x = block(x, kv_cache, i)
            elif self.checkpoint_every and self.training and i % self.checkpoint_every == 0:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        if kv_cache is not None:
            kv_cache.length += seq
        logits = self.lm_head(self.ln_f(x))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss

    def set_attention(self, implementation: str) -> None:
        for block in self.blocks:
            block.attn.attention = implementation

    def new_kv_cache(self, max_len: int | None = None) -> KVCache:
        """An empty cache for up to max_len positions (default: the model's context)."""
        return KVCache(len(self.blocks), max_len or self.shape.block_size)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_gpt(preset: str, dropout: float = 0.0) -> GPT:
    return GPT(GPT_PRESETS[preset], dropout)
