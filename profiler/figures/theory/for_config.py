"""A run config's predicted memory (torch-free: the app's estimate panel uses it too): the
built-in GPT's from profiler.figures.theory.gpt with the config's techniques applied (precision,
checkpointing, LoRA, low-bit states, FSDP sharding); a Hugging Face model's from its parameter
count, its activations n/a."""

from __future__ import annotations

from profiler.figures.theory.gpt import (
    FP32_BYTES,
    lora_tensor_numels,
    predict_memory,
    states_per_param,
    total_of,
)
from profiler.models.presets import GPTShape


def technique_params(techniques: dict, name: str) -> dict | None:
    """A technique's parameters as a run uses them (the registry's defaults filled in), or None
    when the config leaves it out; an always-on technique (the optimizer) is never left out."""
    from techniques import registry

    info = registry.get(name)
    if name not in techniques and not info.always_on:
        return None
    return {**info.defaults(), **(techniques.get(name) or {})}


def _trained_by_technique(techniques: dict, shape) -> tuple[list[int] | None, str]:
    """The tensors LoRA / QLoRA train on the built-in GPT (its adapters), from the shape; None
    and why for a model whose layers are known only once it is built."""
    for name in ("lora", "qlora"):
        params = technique_params(techniques, name)
        if params is None:
            continue
        if not isinstance(shape, GPTShape):
            return None, (f"n/a: {name}'s adapters on a Hugging Face model are counted once it is "
                          "built (the run's summary predicts them from the built model)")
        return lora_tensor_numels(shape, params["rank"], params["target"]), ""
    return None, ""


def predict_for_config(config: object, world_size: int | None = None,
                       trained: list[int] | None = None) -> dict:
    """predict_memory for a run config (torch-free: the app's estimate panel uses it too).

    trained: the sizes of the tensors the optimizer updates, read from the built model
    (techniques.optimizer.trained_numels) where there is one; else what the config says trains
    (every parameter, or LoRA's adapters). Per process: with FSDP, weights, gradients and
    optimizer states are split across the job's processes; activations are per process either
    way.
    """
    from profiler.models.presets import GPT_PRESETS

    if getattr(config.model, "source", "preset") in ("hf", "hf-config"):
        return predict_hf(config, world_size, trained)
    techniques = getattr(config, "techniques", {}) or {}
    shape = GPT_PRESETS[config.model.preset]
    optimizer = technique_params(techniques, "optimizer")
    precision = technique_params(techniques, "precision")
    checkpoint = technique_params(techniques, "activation_checkpointing")
    attention = technique_params(techniques, "attention")
    accumulation = technique_params(techniques, "grad_accumulation")
    low_bit = technique_params(techniques, "optimizer_low_bit")
    adapters, _ = _trained_by_technique(techniques, shape)
    if trained is None:
        trained = adapters
    device = config.device if config.device != "auto" else "cuda"
    prediction = predict_memory(
        shape, config.train.batch_size, config.train.seq_len,
        optimizer=optimizer["algorithm"], sgd_momentum=optimizer["momentum"],
        autocast_dtype=None if not precision or precision["dtype"] == "fp32" else precision["dtype"],
        checkpoint_every=checkpoint["every"] if checkpoint else 0,
        attention=attention["implementation"] if attention else "sdpa",
        micro_batches=accumulation["micro_batches"] if accumulation else 1,
        device_type="cpu" if device == "cpu" else "cuda", trained=trained,
        adapter_parameters=sum(trained) if adapters is not None and trained else 0,
        low_bit=low_bit,
    )
    if "qlora" in techniques:
        prediction.update(weights=None, total=None, weights_how=(
            "n/a: QLoRA's 4-bit NF4 base weights (bitsandbytes) are not predicted"))
    world = world_size or config.launch.nproc_per_node * config.launch.nnodes
    if "fsdp" in techniques and world > 1:
        for key in ("weights", "gradients", "optimizer_states"):
            if prediction[key] is not None:
                prediction[key] = -(-prediction[key] // world)  # ceil: shards are padded
        prediction["total"] = total_of(prediction)
        prediction["sharded_over"] = world
    return prediction


HF_ACTIVATIONS_NA = ("n/a: activations are predicted op by op for the built-in GPT only; for a "
                     "Hugging Face model they depend on its own code (see the measured peak)")


def predict_hf(config: object, world_size: int | None = None,
               trained: list[int] | None = None) -> dict:
    """Weights, gradients and optimizer states of a Hugging Face model from its parameter count
    (fp32 weights, as EffiScope trains), or from the tensors that train where the built model
    gave them (`trained`); activations and the total are None (n/a), not guessed.

    Without `trained`, Adam(W)'s small per-tensor `step` counters are left out (a few hundred
    bytes), and what LoRA or a low-bit optimizer keeps is n/a: both depend on each tensor."""
    from profiler.models import source as model_source
    from techniques.optimizer import predicted_state_bytes

    shape = model_source.model_shape(config.model)
    n = shape.parameters
    techniques = getattr(config, "techniques", {}) or {}
    optimizer = technique_params(techniques, "optimizer")
    low_bit = technique_params(techniques, "optimizer_low_bit")
    _, lora_why = _trained_by_technique(techniques, shape)
    adapters = 0
    pred: dict = {"activations": None, "total": None, "activations_how": HF_ACTIVATIONS_NA,
                  "parameters_how": shape.parameters_how}
    if trained is not None:
        adapters = sum(trained) if lora_why else 0
        pred["gradients"] = sum(trained) * FP32_BYTES
        pred["optimizer_states"], pred["optimizer_how"] = predicted_state_bytes(
            trained, optimizer["algorithm"], optimizer["momentum"], low_bit)
    elif lora_why or low_bit is not None:
        why = lora_why or ("n/a: low-bit states depend on each tensor's size; the run's summary "
                           "predicts them from the built model")
        pred.update(gradients=None if lora_why else (n * FP32_BYTES if n is not None else None),
                    optimizer_states=None, optimizer_how=why)
    else:
        states = states_per_param(optimizer["algorithm"], optimizer["momentum"])
        pred["gradients"] = n * FP32_BYTES if n is not None else None
        pred["optimizer_states"] = states * n * FP32_BYTES if n is not None else None
    pred["weights"] = n * FP32_BYTES + adapters * FP32_BYTES if n is not None else None
    world = world_size or config.launch.nproc_per_node * config.launch.nnodes
    if "fsdp" in techniques and world > 1:
        for key in ("weights", "gradients", "optimizer_states"):
            if pred.get(key) is not None:
                pred[key] = -(-pred[key] // world)
        pred["sharded_over"] = world
    return pred
