"""Low-bit optimizer states: AdamW whose two moments are stored block-wise quantized in 8 or 4
bits (torchao.optim; bitsandbytes' 8-bit AdamW where installed) instead of fp32.

Optimizer state is 8 bytes per parameter in fp32 AdamW, often the largest item of training
memory; 8-bit states cut it about 4x, 4-bit about 8x (plus one fp32 scale per block). The update
itself is computed in fp32 from the dequantized states. It replaces the optimizer the always-on
`optimizer` technique built (same parameter groups, learning rate and betas): it is applied
after it, in the same stage.
"""

from __future__ import annotations

from profiler.errors import Unsupported
from techniques.registry import Param, RunFacts, TechniqueInfo, TechniqueParams, register

# torchao.optim's block-wise quantized AdamW: each state of a tensor with at least
# LOW_BIT_MIN_NUMEL elements (and a multiple of the block size) is stored as `bits`-bit codes, one
# fp32 scale per block and a 2**bits-entry fp32 lookup table; smaller tensors keep fp32 states.
LOW_BIT_BLOCK = {8: 256, 4: 128}
LOW_BIT_MIN_NUMEL = 4096


def low_bit_state_bytes(numel: int, bits: int, block_size: int | None = None) -> int:
    """Bytes of ONE AdamW state (exp_avg or exp_avg_sq) of a tensor of numel elements."""
    if bits == 32:
        return numel * 4
    block = block_size or LOW_BIT_BLOCK[bits]
    if numel < LOW_BIT_MIN_NUMEL or numel % block:
        return numel * 4
    return numel * bits // 8 + numel // block * 4 + 2**bits * 4


def low_bit_adamw_bytes(numels: list[int], bits: int, block_size: int | None = None) -> int:
    """Predicted AdamW state bytes (2 states per tensor, `step` scalars left out) over the
    trainable tensors' sizes; bits = 32 is plain fp32 AdamW."""
    return sum(2 * low_bit_state_bytes(n, bits, block_size) for n in numels)

BACKENDS = ("torchao", "bitsandbytes")


def _check(params: TechniqueParams, caps: dict) -> str | None:
    packages = caps.get("packages", [])
    if params.backend == "bitsandbytes":
        if "bitsandbytes" not in packages:
            return "needs the Python package bitsandbytes (pip install bitsandbytes); or choose "\
                   "backend = torchao"
        if params.bits == 4:
            return "bitsandbytes has no 4-bit AdamW; choose bits = 8 or backend = torchao"
        return None
    if "torchao" not in packages:
        return "needs the Python package torchao (pip install torchao)"
    if not caps.get("cuda") and not caps.get("compiler"):
        return ("torchao's low-bit AdamW compiles its update with torch.compile, which on a CPU "
                "needs a C++ compiler (gcc or clang) on the PATH")
    return None


def _config_check(params: TechniqueParams, facts: RunFacts) -> str | None:
    optimizer = facts.techniques.get("optimizer")
    algorithm = optimizer.algorithm if optimizer is not None else "adamw"
    if algorithm != "adamw":
        return (f"stores AdamW's two moments in low bits, but optimizer.algorithm is {algorithm}; "
                "set [techniques.optimizer] algorithm = \"adamw\" or remove optimizer_low_bit")
    return None


INFO = TechniqueInfo(
    name="optimizer_low_bit",
    label="Low-bit optimizer states",
    category="optimizer",
    stage="optimizer",
    summary="AdamW with its two moments stored in 8 or 4 bits (block-wise scales): about 4x / "
            "8x less optimizer memory than fp32 AdamW, a loss curve close to it.",
    source="Dettmers et al. 2022 (8-bit Optimizers via Block-wise Quantization); Li et al. 2023 "
           "(Memory Efficient Optimizers with 4-bit States); torchao",
    params=(
        Param("bits", int, 8, "bits per stored state value", choices=(8, 4)),
        Param("backend", str, "torchao", "torchao (8 or 4 bits, CPU and CUDA) or bitsandbytes "
              "(8 bits)", choices=BACKENDS),
    ),
    check=_check,
    config_check=_config_check,
    extra={"acts_on": ("optimizer_state_bytes",)},
)


def _torchao_class(bits: int):
    import torch
    from torchao.optim import AdamW4bit, AdamW8bit

    base = AdamW8bit if bits == 8 else AdamW4bit

    class LowBitAdamW(base):
        """torchao keeps lr as a tensor inside its compiled step; the loop sets floats."""

        def step(self, closure=None):
            for group in self.param_groups:
                if not isinstance(group["lr"], torch.Tensor):
                    group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32)
            try:
                return super().step(closure)
            finally:
                for group in self.param_groups:
                    group["lr"] = float(group["lr"])

    return LowBitAdamW


def apply(state, params: TechniqueParams) -> str:
    # An optimizer other than AdamW is refused before the run by _config_check (the plan asks it).
    if state.optimizer is None:
        raise Unsupported("techniques.optimizer_low_bit: no optimizer to replace")
    train = state.config.train
    groups = [{"params": list(g["params"]), "weight_decay": g["weight_decay"]}
              for g in state.optimizer.param_groups if g["params"]]
    kwargs = {"lr": train.learning_rate, "betas": (train.beta1, train.beta2)}
    if params.backend == "bitsandbytes":
        import bitsandbytes as bnb

        state.optimizer = bnb.optim.AdamW8bit(groups, **kwargs)
        kind = "bitsandbytes AdamW8bit"
        predicted = ""
    else:
        state.optimizer = _torchao_class(params.bits)(groups, **kwargs)
        kind = f"torchao AdamW{params.bits}bit"
        numels = [p.numel() for g in groups for p in g["params"]]
        low = low_bit_adamw_bytes(numels, params.bits)
        full = low_bit_adamw_bytes(numels, 32)
        predicted = (f"; predicted state {low / 2**20:.2f} MiB vs {full / 2**20:.2f} MiB in fp32 "
                     f"({full / low:.1f}x less)")
    return (f"{kind} over {sum(len(g['params']) for g in groups)} tensors, lr "
            f"{train.learning_rate:g}, same weight decay groups{predicted}")


register(INFO, apply=apply)
