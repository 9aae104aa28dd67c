"""Theory beside measurement, without torch: the built-in GPT's FLOPs and memory (gpt.py), a run
config's predicted memory (for_config.py) and MFU (mfu.py). Import from here."""

from __future__ import annotations

from profiler.figures.peaks import peak_flops
from profiler.figures.theory.for_config import (
    HF_ACTIVATIONS_NA,
    predict_for_config,
    predict_hf,
    technique_params,
)
from profiler.figures.theory.gpt import (
    ATTENTIONS,
    FROZEN_ACTIVATIONS_NA,
    LORA_LAYERS,
    OPTIMIZERS,
    activation_breakdown,
    checkpointed_blocks,
    flops_per_token,
    format_breakdown,
    lora_tensor_numels,
    lora_trainable_parameters,
    optimizer_state_bytes,
    parameter_numels,
    parameter_tensor_count,
    predict_memory,
    states_per_param,
)
from profiler.figures.theory.mfu import mfu, mfu_against

# Low-bit optimizer states: the knowledge lives with the technique (techniques/
# optimizer_low_bit.py, torch-free at the top); predictions read it from there.
from techniques.optimizer_low_bit import low_bit_adamw_bytes, low_bit_state_bytes

__all__ = [
    "ATTENTIONS", "FROZEN_ACTIVATIONS_NA", "HF_ACTIVATIONS_NA", "LORA_LAYERS", "OPTIMIZERS",
    "activation_breakdown", "checkpointed_blocks", "flops_per_token", "format_breakdown",
    "lora_tensor_numels", "lora_trainable_parameters", "low_bit_adamw_bytes",
    "low_bit_state_bytes", "mfu", "mfu_against", "optimizer_state_bytes", "parameter_numels",
    "parameter_tensor_count", "peak_flops", "predict_for_config", "predict_hf",
    "predict_memory", "states_per_param", "technique_params",
]
