"""QLoRA: LoRA adapters over a frozen base whose blocks' Linear weights are stored in 4-bit NF4
(bitsandbytes), dequantized on the fly in bf16.

The frozen weights shrink about 4x against bf16 (plus one scale per 64 weights), on top of
LoRA's small gradient and optimizer memory. bitsandbytes' 4-bit kernels need a CUDA GPU: on any
other machine the technique is refused with the reason. The merged weights a run saves are
dequantized to fp32 first (the adapter is saved beside them as for LoRA).
"""

from __future__ import annotations

from profiler.errors import Unsupported
from techniques import lora
from techniques.registry import TechniqueInfo, TechniqueParams, register

INFO = TechniqueInfo(
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
)


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


def apply(state, params: TechniqueParams) -> str:
    if state.device.type != "cuda":
        raise Unsupported("techniques.qlora: bitsandbytes' 4-bit layers run on CUDA only; use "
                          "lora on this machine")
    quantized = quantize_base(state.model, state.device)
    report = lora.apply(state, params)
    return f"{quantized} block Linear layers stored in 4-bit NF4 (bitsandbytes); {report}"


def _bnb_four_bit():
    """(is this a 4-bit layer, its weight dequantized) from bitsandbytes."""
    import bitsandbytes as bnb

    return (lambda module: isinstance(module, bnb.nn.Linear4bit),
            lambda module: bnb.functional.dequantize_4bit(module.weight.data,
                                                          module.weight.quant_state))


def dequantized_merged_copy(model):
    """A copy of model with every adapter merged and every 4-bit layer back in fp32: W =
    dequantize(W_nf4) + scale·B·A as a plain nn.Linear. The saved merged weights must be floats
    any loader reads; bitsandbytes' packed NF4 bytes (two weights per uint8, with a separate
    quantization state) would load as garbage, and peft's own merge would quantize the sum
    again, adding a second rounding."""
    import copy

    import torch

    is_4bit, dequantize = _bnb_four_bit()
    merged = copy.deepcopy(model)

    def as_linear(base, delta=None) -> torch.nn.Linear:
        weight = dequantize(base).float()
        if delta is not None:
            weight = weight + delta
        linear = torch.nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                                 device=weight.device)
        with torch.no_grad():
            linear.weight.copy_(weight.reshape(base.out_features, base.in_features))
            if base.bias is not None:
                linear.bias.copy_(base.bias.float())
        return linear

    def replace(name: str, module: torch.nn.Module) -> None:
        owner, _, attr = name.rpartition(".")
        setattr(merged.get_submodule(owner) if owner else merged, attr, module)

    for name, layer in lora.lora_layers(merged):
        base = layer.get_base_layer()
        if is_4bit(base):
            delta = sum(layer.get_delta_weight(a).float() for a in layer.active_adapters)
            replace(name, as_linear(base, delta))
        else:
            layer.merge(safe_merge=True)
            replace(name, base)
    for name, module in list(merged.named_modules()):
        if is_4bit(module):  # a quantized layer without an adapter
            replace(name, as_linear(module))
    for param in merged.parameters():
        param.requires_grad_(True)
    return merged


def save(state, steps: int, tell, save_weights) -> list[str]:
    """LoRA's save (the adapter, and the merged weights) with the merged weights dequantized."""
    return lora.save(state, steps, tell, save_weights, merge=dequantized_merged_copy)


register(INFO, apply=apply, save=save)
