"""LoRA (low-rank adapters, through peft): freeze the model, train a rank-r update B·A beside
chosen Linear layers.

The base weights get no gradients and no optimizer state: only the adapters do, so gradient and
AdamW memory shrink by the share of trainable parameters (often under 1 %). peft's
`inject_adapter_in_model` edits the model in place, so it keeps its own forward, `shape` and
`blocks`. After training, `save` writes the adapter (peft's adapter_model.safetensors +
adapter_config.json) and the merged weights (W + scale·B·A, in the model's own format) into the
run folder, so infer and compress runs can load the fine-tuned model.
"""

from __future__ import annotations

from pathlib import Path

from profiler.errors import Unsupported
from techniques.registry import (
    Param,
    RunFacts,
    TechniqueInfo,
    TechniqueParams,
    register,
    validate_params,
)

TARGETS = ("attention", "mlp", "all-linear")
ADAPTER_DIR = "adapter"


def _check(params: TechniqueParams, caps: dict) -> str | None:
    if caps.get("model_kind") == "hf-encoder":
        return "an encoder model is not trained here (infer and compress only); nothing to adapt"
    return None


def config_check(params: TechniqueParams, facts: RunFacts) -> str | None:
    """A rank above a layer's narrowest side adds parameters and no capacity: B·A of an
    out x in layer has rank at most min(out, in)."""
    groups = ("attention", "mlp") if params.target == "all-linear" else (params.target,)
    widths = [facts.linear_widths[g] for g in groups if g in facts.linear_widths]
    if widths and params.rank > min(widths):
        return (f"rank = {params.rank} is above the narrowest adapted layer's width "
                f"({min(widths)}), where an update B·A can have rank {min(widths)} at most; "
                f"set rank to {min(widths)} or less (typically 4 to 64)")
    return None


PARAMS = (
    Param("rank", int, 8, "rank r of each adapter (B is out x r, A is r x in)", min=1, max=1024),
    Param("alpha", float, 16.0, "scale of the update: W + (alpha / r)·B·A", min=0.001,
          max=4096.0),
    Param("dropout", float, 0.0, "dropout on the adapter's input while training", min=0.0,
          max=0.9),
    Param("target", str, "attention", "which Linear layers of the blocks get adapters: "
          "attention, mlp or all-linear (both)", choices=TARGETS),
)

INFO = TechniqueInfo(
    name="lora",
    label="LoRA adapters",
    category="memory",
    stage="model",
    summary="Freezes the model and trains low-rank adapters beside its Linear layers: gradients "
            "and optimizer states for a few % of the parameters; about the quality of full "
            "fine-tuning on narrow tasks.",
    source="Hu et al. 2021 (LoRA: Low-Rank Adaptation of Large Language Models); peft",
    params=PARAMS,
    requires=("package:peft",),
    conflicts=("qlora",),
    check=_check,
    config_check=config_check,
    extra={"acts_on": ("gradient_bytes", "optimizer_state_bytes"), "workloads": ("train",)},
)


# --- implementation (imports torch and peft) ------------------------------------------------------
def target_modules(model, target: str) -> list[str]:
    """Full names of the blocks' Linear layers (and GPT-2 Conv1D layers) that get adapters."""
    from techniques.compress_common import target_linears

    layers = {"attention": "attention", "mlp": "mlp", "all-linear": "all"}[target]
    names = [name for name, _ in target_linears(model, layers)[0]]
    blocks_name = getattr(model, "_blocks_name", None)
    if blocks_name is not None:  # a Hugging Face model: GPT-2 keeps Conv1D, which peft adapts too
        prefix = f"hf.{blocks_name}."
        for name, module in model.named_modules():
            if type(module).__name__ != "Conv1D" or not name.startswith(prefix):
                continue
            inner = name[len(prefix):].lower()
            part = "attention" if ("attn" in inner or "attention" in inner) else "mlp"
            if layers in ("all", part):
                names.append(name)
    return names


def lora_config(params: TechniqueParams, targets: list[str]):
    from peft import LoraConfig

    return LoraConfig(r=params.rank, lora_alpha=params.alpha,
                      lora_dropout=params.dropout, target_modules=targets, bias="none")


def inject(model, params: TechniqueParams) -> list[str]:
    """Freeze every parameter of model and add adapters in place; returns the adapted layers."""
    from peft import inject_adapter_in_model

    targets = target_modules(model, params.target)
    if not targets:
        raise Unsupported(f"techniques.lora: the model has no {params.target} Linear layers "
                          "in its blocks; choose another target")
    for param in model.parameters():
        param.requires_grad_(False)
    inject_adapter_in_model(lora_config(params, targets), model)
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)
    return targets


def counts(model) -> tuple[int, int]:
    """(trainable, frozen) parameters, a tied tensor once."""
    seen, trainable, frozen = set(), 0, 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        if param.requires_grad:
            trainable += param.numel()
        else:
            frozen += param.numel()
    return trainable, frozen


def apply(state, params: TechniqueParams) -> str:
    try:
        import peft  # noqa: F401
    except ImportError:
        raise Unsupported("techniques.lora: needs the peft package (pip install peft)") from None
    model = state.model
    base_total = sum(counts(model))
    targets = inject(model, params)
    model.to(state.device)
    trainable, frozen = counts(model)
    full_mib = 2 * 4 * base_total / 2**20
    lora_mib = 2 * 4 * trainable / 2**20
    return (f"LoRA r={params.rank}, alpha {params.alpha:g} (scale "
            f"{params.alpha / params.rank:g}), dropout {params.dropout:g} on "
            f"{len(targets)} {params.target} layers: {trainable:,} trainable parameters "
            f"({trainable / (trainable + frozen):.2%}), {frozen:,} frozen; AdamW state "
            f"{lora_mib:.2f} MiB instead of {full_mib:.1f} MiB for full fine-tuning "
            f"(gradients likewise)")


def lora_layers(model):
    from peft.tuners.lora import LoraLayer

    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, LoraLayer)]


def merged_copy(model):
    """A copy of model with every adapter merged into its base weight (W + scale·B·A) and the
    adapter layers replaced by their base layers: the model's own class and state-dict names."""
    import copy

    merged = copy.deepcopy(model)
    for name, module in lora_layers(merged):
        module.merge(safe_merge=True)
        owner, _, attr = name.rpartition(".")
        setattr(merged.get_submodule(owner) if owner else merged, attr, module.get_base_layer())
    for param in merged.parameters():
        param.requires_grad_(True)
    return merged


def save_adapter(model, folder: str | Path, params: TechniqueParams) -> Path:
    """peft's adapter files: adapter_model.safetensors (the A and B matrices only) and
    adapter_config.json; returns the folder."""
    import json

    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu()
               for k, v in get_peft_model_state_dict(model).items()}
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = lora_config(params, target_modules_of(model)).to_dict()
    (folder / "adapter_config.json").write_text(json.dumps(_plain(config), indent=2),
                                                encoding="utf-8")
    return folder


def target_modules_of(model) -> list[str]:
    return [name for name, _ in lora_layers(model)]


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def save(state, steps: int, tell, save_weights, merge=None) -> list[str]:
    """When train.save_checkpoint is on: the adapter in <run folder>/adapter/ and the merged
    weights where a plain run saves its own (model.safetensors, or hf-model/ for a Hugging Face
    model), so model.source = "run" loads the fine-tuned model. Returns the paths written.

    The engine calls this instead of the plain save path when LoRA is active (the adapted
    model's state dict has base_layer / lora_ names no loader of ours reads); save_weights(model)
    is that plain path (profiler.engine.weights.save_run_weights for this run); tell(text) says what
    was saved (an info event); merge(model) makes the merged copy (default merged_copy;
    QLoRA's dequantizes its 4-bit layers)."""
    config = state.config
    if not config.train.save_checkpoint:
        return []
    if not (config.output_dir and steps):  # says why nothing is saved, as for a plain run
        save_weights(state.model)
        return []
    active = [state.active[name] for name in ("lora", "qlora") if name in state.active]
    params = active[0] if active else validate_params(INFO.name, {})
    folder = save_adapter(state.model, Path(config.output_dir) / ADAPTER_DIR, params)
    tell(f"LoRA adapter saved to {folder} (adapter_model.safetensors, adapter_config.json)")
    merged = save_weights((merge or merged_copy)(state.model))
    return [str(folder)] + ([merged] if merged else [])


register(INFO, apply=apply, save=save)
