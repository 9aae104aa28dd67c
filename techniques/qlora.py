"""QLoRA: LoRA adapters over a frozen base whose blocks' Linear weights are stored in 4-bit NF4
(bitsandbytes), dequantized on the fly in bf16.

The frozen weights shrink about 4x against bf16 (plus one scale per 64 weights), on top of
LoRA's small gradient and optimizer memory. bitsandbytes' 4-bit kernels need a CUDA GPU: on any
other machine the technique is refused with the reason.
"""

from __future__ import annotations

from profiler.errors import Unsupported
from techniques import lora
from techniques.registry import TechniqueInfo, register

INFO = register(TechniqueInfo(
    name="qlora",
    label="QLoRA (4-bit base + LoRA)",
    category="memory",
    stage="model",
    summary="Stores the frozen base's Linear weights in 4-bit NF4 and trains LoRA adapters "
            "beside them: about 4x less weight memory than bf16 LoRA, a little slower.",
    source="Dettmers et al. 2023 (QLoRA: Efficient Finetuning of Quantized LLMs); peft, "
           "bitsandbytes",
    params=lora.PARAMS,
    requires=("cuda", "package:bitsandbytes", "package:peft"),
    conflicts=("lora",),
    check=lora.INFO.check,
    config_check=lora.config_check,
    extra={"acts_on": ("gradient_bytes", "optimizer_state_bytes", "model_bytes"), "workloads": ("train",)},
))


def quantize_base(model, device) -> int:
    """Replace every block Linear by a bitsandbytes Linear4bit (NF4, bf16 compute); returns how
    many. The weights are quantized when moved to the GPU."""
    import bitsandbytes as bnb
    import torch

    from techniques.compress_common import target_linears

    count = 0
    for name, module in target_linears(model, "all")[0]:
        q = bnb.nn.Linear4bit(module.in_features, module.out_features,
                              bias=module.bias is not None, compute_dtype=torch.bfloat16,
                              quant_type="nf4")
        q.weight = bnb.nn.Params4bit(module.weight.detach().cpu(), requires_grad=False,
                                     quant_type="nf4")
        if module.bias is not None:
            q.bias = torch.nn.Parameter(module.bias.detach().clone(), requires_grad=False)
        owner, _, attr = name.rpartition(".")
        setattr(model.get_submodule(owner) if owner else model, attr, q.to(device))
        count += 1
    return count


def apply(state, params: dict) -> str:
    if state.device.type != "cuda":
        raise Unsupported("techniques.qlora: bitsandbytes' 4-bit layers run on CUDA only; use "
                          "lora on this machine")
    quantized = quantize_base(state.model, state.device)
    report = lora.apply(state, params)
    return f"{quantized} block Linear layers stored in 4-bit NF4 (bitsandbytes); {report}"


save = lora.save
