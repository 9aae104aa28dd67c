"""GPT size presets. Plain data, importable without torch, so configs and the GUI can list them."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class GPTShape:
    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    vocab_size: int
    description: str

    def as_dict(self) -> dict:
        data = asdict(self)
        data.pop("description")
        return data

    def parameter_count(self) -> int:
        """Parameters of the built model (tied embedding counted once)."""
        d, layers = self.n_embd, self.n_layer
        per_block = 12 * d * d + 13 * d  # qkv + proj + 2 MLP matrices, their biases, 2 LayerNorms
        return (
            self.vocab_size * d + self.block_size * d + layers * per_block + 2 * d
        )


# Byte-level presets use a 256-token vocabulary. The GPT-2 shapes keep GPT-2's (padded) vocabulary so
# their parameter counts and FLOPs are GPT-2's; the byte tokenizer only uses the first 256 ids.
GPT_PRESETS: dict[str, GPTShape] = {
    "gpt-nano": GPTShape(4, 4, 128, 256, 256, "~0.8M parameters; for tests and quick looks"),
    "gpt-micro": GPTShape(6, 6, 192, 256, 256, "~2.8M parameters"),
    "gpt-mini": GPTShape(6, 6, 384, 256, 256, "~10.8M parameters"),
    "gpt2-small": GPTShape(12, 12, 768, 1024, 50304, "124M parameters, GPT-2 small's shape"),
    "gpt2-medium": GPTShape(24, 16, 1024, 1024, 50304, "350M parameters, GPT-2 medium's shape"),
    "gpt2-large": GPTShape(36, 20, 1280, 1024, 50304, "774M parameters, GPT-2 large's shape"),
    "gpt2-xl": GPTShape(48, 25, 1600, 1024, 50304, "1.56B parameters, GPT-2 XL's shape"),
}
