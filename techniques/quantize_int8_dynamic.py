"""Int8 dynamic quantization: int8 weights, activations quantized per batch at run time.

On CPU the fastest path this torch has is torch.ao's eager `quantize_dynamic` (fbgemm / x86
kernels; deprecated upstream but present). On CUDA it is torchao's int8 dynamic-activation,
int8-weight config; torchao is used on CUDA only, since on CPU it is far slower than torch.ao.
"""

from __future__ import annotations

import warnings

from profiler.errors import Unsupported
from techniques.registry import Param, TechniqueInfo, TechniqueParams, register


def _check(params: TechniqueParams, caps: dict) -> str | None:
    if caps.get("cuda") and "torchao" not in caps.get("packages", []):
        return ("int8 dynamic quantization on CUDA uses torchao, which is not installed "
                "(pip install torchao); or run it on the CPU")
    return None


INFO = TechniqueInfo(
    name="quantize_int8_dynamic",
    label="Int8 dynamic quantization",
    category="compression",
    stage="compress",
    summary="Linear weights stored in int8 (about 4x smaller than fp32), activations quantized "
            "on the fly: faster matmuls on CPUs with int8 kernels, a small quality loss.",
    source="Jacob et al. 2018 (integer-arithmetic-only inference); Zhu et al. 2023 (LLM "
           "compression survey)",
    params=(
        Param("granularity", str, "per_channel", "one scale per output row (per_channel) or "
              "one per matrix (per_tensor)", choices=("per_channel", "per_tensor")),
        Param("layers", str, "all", "which Linear layers of the blocks: all, attention or mlp",
              choices=("all", "attention", "mlp")),
    ),
    conflicts=("quantize_weight_only", "weight_cast"),
    check=_check,
    extra={"acts_on": ("model_bytes",), "workloads": ("infer", "compress")},
)


def apply(state, params: TechniqueParams) -> str:
    from techniques.compress_common import skipped_text, target_linears

    model = state.model
    chosen, skipped = target_linears(model, params.layers)
    if not chosen:
        raise Unsupported("techniques.quantize_int8_dynamic: no Linear layer matches "
                                  f"layers = {params.layers}; choose all")
    if state.device.type == "cuda":
        return _apply_torchao(model, chosen, skipped)
    import torch

    engines = torch.backends.quantized.supported_engines
    if not any(e in engines for e in ("x86", "fbgemm", "qnnpack")):
        raise Unsupported("techniques.quantize_int8_dynamic: this torch build has no "
                                  "quantized CPU engine (x86 / fbgemm / qnnpack)")
    with warnings.catch_warnings():  # torch.ao.quantization warns that it is deprecated
        warnings.simplefilter("ignore")
        from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
        from torch.ao.quantization import (
            default_dynamic_qconfig,
            per_channel_dynamic_qconfig,
            quantize_dynamic,
        )

        qconfig = (per_channel_dynamic_qconfig if params.granularity == "per_channel"
                   else default_dynamic_qconfig)
        quantize_dynamic(model, {name: qconfig for name, _ in chosen}, dtype=torch.qint8,
                         inplace=True)
    converted = [n for n, m in model.named_modules() if isinstance(m, DynamicLinear)]
    return (f"converted {len(converted)} Linear layers to int8 dynamic ({params.granularity} "
            f"weight scales, torch.ao {torch.backends.quantized.engine} kernels)"
            f"{skipped_text(skipped)}")


def _apply_torchao(model, chosen: list, skipped: list) -> str:
    from torchao.quantization import quantize_

    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig as config_cls
        config = config_cls()
    except ImportError:  # older torchao: functions instead of config classes
        from torchao.quantization import int8_dynamic_activation_int8_weight

        config = int8_dynamic_activation_int8_weight()
    from techniques.compress_common import keep_matmul_precision, skipped_text

    names = {name for name, _ in chosen}
    with keep_matmul_precision():
        quantize_(model, config, filter_fn=lambda module, fqn: fqn in names)

    return (f"converted {len(names)} Linear layers to int8 dynamic (torchao, CUDA)"
            f"{skipped_text(skipped)}")


register(INFO, apply=apply)
