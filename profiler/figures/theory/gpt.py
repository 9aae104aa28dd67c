"""The built-in GPT in numbers, without torch: FLOPs per token, parameter tensors, and the
memory a training step holds, part by part (profiler.figures.theory.for_config applies it to a run
config, profiler.figures.theory.mfu turns FLOPs into MFU).

FLOPs per token for training follow the PaLM / nanoGPT estimate: 6·N for the matrix multiplies
of forward and backward over N parameters, plus 12·L·H·Q·T for attention (L layers, H heads,
head size Q, sequence length T). Position embeddings are left out of N: they are a lookup.

The memory prediction is derived op by op from `profiler/models/gpt.py` and checked against what
`torch.autograd.graph.saved_tensors_hooks` sees (tests/test_theory.py), so it counts what
autograd really keeps for backward, not a rule of thumb. Per block, with B·T tokens of width C:

    LayerNorm ×2   input (residual dtype) + mean and rstd (B·T each)
    Linear ×4      its input: qkv C, attention proj C, fc C, MLP proj 4C   (weights are params)
    GELU           its input, 4C
    SDPA           the qkv output 3C (q, k, v are views of it: one storage), its output C (the
                   same storage the proj then reads) and the logsumexp, B·H·T fp32
    math attention q, kᵀ, v copies 3C (matmul makes contiguous copies of the head views), the
                   causal mask T² bool, the softmax output B·H·T² (on CUDA autocast, softmax
                   runs in fp32 and bmm saves its low-precision copy too)
    Dropout(p=0)   nothing: torch returns its input unchanged

Outside the blocks: token and position indices (int64), ln_f, the lm_head input, and for the
loss the fp32 log-softmax B·T·V plus the targets. Under autocast the matmul inputs are saved in
the autocast dtype, and so are the autocast copies of the weights (12·C² per block plus the
lm_head's V·C): they are not parameters, live from forward to backward, and saved_tensors_hooks
sees them, so they are counted as activations (key `autocast_weight_copies`).

Checkpointed blocks save nothing of their own; torch.utils.checkpoint (non-reentrant) keeps
each one's input (B·T·C, residual dtype) as a saved tensor, and that one does pass through the
active saved_tensors_hooks (torch 2.13: `_make_saved_tensor` in checkpoint.py). So
`activations_autograd_saved` (what the hooks count) includes them, `checkpoint_inputs` says how
much of it they are, and `activations` equals `activations_autograd_saved`. During backward one
checkpointed block is recomputed at a time: that transient is not included.
"""

from __future__ import annotations

from profiler.models.presets import GPTShape

OPTIMIZERS = ("adamw", "adam", "sgd")
"""The optimizers this module predicts (each must be in the optimizer technique's states table)."""
ATTENTIONS = ("sdpa", "math")
AUTOCAST_BYTES = {"bf16": 2, "fp16": 2}
INDEX_BYTES = 8  # int64 token ids, positions and targets
FP32_BYTES = 4


def flops_per_token(shape: GPTShape, seq_len: int, training: bool = True) -> float:
    """6N + 12·L·H·Q·T (training) or a third of it (a forward pass). For a Hugging Face model
    (HFShape) N is its matmul parameters, counted on the built model or by the family's formula."""
    if isinstance(shape, GPTShape):
        n = shape.parameter_count() - shape.block_size * shape.n_embd
    else:
        n = shape.matmul_parameters or shape.parameter_count()
    head = shape.n_embd // shape.n_head
    attention = 12 * shape.n_layer * shape.n_head * head * seq_len
    train = 6 * n + attention
    return float(train if training else train / 3)


def parameter_tensor_count(shape: GPTShape) -> int:
    """Parameter tensors of the built model: 12 per block (6 weights, 6 biases), wte, wpe, ln_f.

    The optimizers keep one small `step` tensor per parameter tensor, so the count matters.
    """
    return 12 * shape.n_layer + 4


def parameter_numels(shape: GPTShape) -> list[int]:
    """The size of each parameter tensor of the built-in GPT, in the order parameter_tensor_count
    counts them: wte (tied to lm_head, once), wpe, per block ln_1, qkv, attention proj, ln_2,
    fc and MLP proj (weight and bias each), ln_f."""
    width = shape.n_embd
    block = [width, width, 3 * width * width, 3 * width, width * width, width, width, width,
             4 * width * width, 4 * width, 4 * width * width, width]
    return [shape.vocab_size * width, shape.block_size * width] + block * shape.n_layer + \
        [width, width]


def checkpointed_blocks(n_layer: int, checkpoint_every: int) -> int:
    """How many blocks the model recomputes: those with index i % k == 0."""
    return len(range(0, n_layer, checkpoint_every)) if checkpoint_every > 0 else 0


def states_per_param(algorithm: str, momentum: float = 0.9) -> int:
    """State tensors per parameter, from the optimizer technique's registry entry (its one home);
    SGD without momentum keeps none."""
    from techniques import registry

    if algorithm == "sgd" and momentum == 0:
        return 0
    return registry.get("optimizer").extra["states_per_param"][algorithm]


def optimizer_state_bytes(shape: GPTShape, optimizer: str = "adamw", *, sgd_momentum: float = 0.9,
                          param_bytes: int = 4) -> int:
    """Bytes of torch.optim state: Adam(W) keeps exp_avg and exp_avg_sq in the parameter dtype
    plus a 4-byte fp32 `step` per parameter tensor; SGD keeps one momentum buffer, or nothing."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
    states = states_per_param(optimizer, sgd_momentum) * shape.parameter_count() * param_bytes
    if optimizer in ("adamw", "adam"):
        return states + FP32_BYTES * parameter_tensor_count(shape)
    return states


def activation_breakdown(shape: GPTShape, batch_size: int, seq_len: int, *, param_bytes: int = 4,
                         autocast_dtype: str | None = None, checkpoint_every: int = 0,
                         attention: str = "sdpa", device_type: str = "cuda") -> dict[str, int]:
    """Bytes saved for backward by one micro-batch forward, grouped by the kind of op.

    Keys: embedding_indices, layernorm, linear_inputs, gelu, attention, loss,
    autocast_weight_copies (summed over the blocks that are not checkpointed) and
    checkpoint_inputs (what torch.utils.checkpoint keeps of the checkpointed blocks).
    """
    tokens, width, heads, vocab = batch_size * seq_len, shape.n_embd, shape.n_head, shape.vocab_size
    act_bytes = AUTOCAST_BYTES[autocast_dtype] if autocast_dtype else param_bytes
    residual_bytes = param_bytes  # embeddings and the residual stream stay in the param dtype
    # LayerNorm's mean / rstd: accumulate dtype on CUDA, the input dtype on CPU.
    stat_bytes = param_bytes if device_type == "cpu" else max(param_bytes, FP32_BYTES)
    copies_weights = autocast_dtype is not None and act_bytes != param_bytes

    ln_block = 2 * (tokens * width * residual_bytes + 2 * tokens * stat_bytes)
    linear_block = 7 * tokens * width * act_bytes  # qkv C + proj C + fc C + MLP proj 4C
    gelu_block = 4 * tokens * width * act_bytes
    if attention == "sdpa":
        attention_block = 3 * tokens * width * act_bytes + batch_size * heads * seq_len * FP32_BYTES
    else:
        scores = batch_size * heads * seq_len * seq_len
        softmax_bytes = act_bytes
        if autocast_dtype and device_type != "cpu":  # CUDA autocast: fp32 softmax + bmm's copy
            softmax_bytes += FP32_BYTES
        attention_block = 3 * tokens * width * act_bytes + seq_len * seq_len + scores * softmax_bytes
    weights_block = 12 * width * width * act_bytes if copies_weights else 0

    plain_blocks = shape.n_layer - checkpointed_blocks(shape.n_layer, checkpoint_every)
    return {
        "embedding_indices": (tokens + seq_len) * INDEX_BYTES,
        "layernorm": plain_blocks * ln_block + tokens * width * residual_bytes
        + 2 * tokens * stat_bytes,
        "linear_inputs": plain_blocks * linear_block + tokens * width * act_bytes,  # + lm_head
        "gelu": plain_blocks * gelu_block,
        "attention": plain_blocks * attention_block,
        # fp32 log-softmax of the logits, the targets, and nll_loss's 4-byte total_weight
        "loss": tokens * vocab * FP32_BYTES + tokens * INDEX_BYTES + FP32_BYTES,
        "autocast_weight_copies": plain_blocks * weights_block
        + (vocab * width * act_bytes if copies_weights else 0),
        "checkpoint_inputs": checkpointed_blocks(shape.n_layer, checkpoint_every)
        * tokens * width * residual_bytes,
    }


FROZEN_ACTIVATIONS_NA = (
    "n/a: with a frozen base (LoRA) autograd keeps only what the trained adapters need, which "
    "depends on where they sit; the measured bytes saved for backward say it")


def predict_memory(shape: GPTShape, batch_size: int, seq_len: int, *, optimizer: str = "adamw",
                   sgd_momentum: float = 0.9, param_bytes: int = 4,
                   autocast_dtype: str | None = None, checkpoint_every: int = 0,
                   attention: str = "sdpa", micro_batches: int = 1,
                   device_type: str = "cuda", trained: list[int] | None = None,
                   adapter_parameters: int = 0, low_bit: dict | None = None) -> dict:
    """Predicted training memory in bytes, by part, for the built-in GPT.

    `batch_size` is per micro-batch (as in the run config): gradient accumulation over
    `micro_batches` leaves every part unchanged (gradients accumulate in place, activations are
    one micro-batch's). `device_type` only matters for math attention under autocast and for
    LayerNorm statistics of half-precision parameters. The causal-mask buffers are reported as
    `buffers`; `checkpoint_inputs` is part of `activations_autograd_saved`, which is all of
    `activations` (see the module docstring); `total` is the sum of weights, buffers, gradients, optimizer states and
    activations — allocator caching, workspaces and the recompute transient are not included.
    """
    _validate(shape, batch_size, seq_len, optimizer, param_bytes, autocast_dtype,
              checkpoint_every, attention, micro_batches)
    n = shape.parameter_count()
    parts = activation_breakdown(shape, batch_size, seq_len, param_bytes=param_bytes,
                                 autocast_dtype=autocast_dtype, checkpoint_every=checkpoint_every,
                                 attention=attention, device_type=device_type)
    autograd_saved = sum(parts.values())  # the checkpoint inputs are saved tensors too
    pred: dict = {
        "weights": n * param_bytes + adapter_parameters * FP32_BYTES,
        "buffers": shape.n_layer * shape.block_size * shape.block_size,  # bool causal masks
        "gradients": n * param_bytes,
        "optimizer_states": optimizer_state_bytes(shape, optimizer, sgd_momentum=sgd_momentum,
                                                  param_bytes=param_bytes),
        "activations_autograd_saved": autograd_saved,
        "checkpoint_inputs": parts["checkpoint_inputs"],  # included in the line above
        "activations": autograd_saved,
    }
    if trained is not None or low_bit is not None:
        from techniques.optimizer import predicted_state_bytes

        numels = trained if trained is not None else parameter_numels(shape)
        pred["gradients"] = sum(numels) * param_bytes
        pred["optimizer_states"], pred["optimizer_how"] = predicted_state_bytes(
            numels, optimizer, sgd_momentum, low_bit)
        if sum(numels) != n:  # a frozen base: which activations autograd keeps depends on it
            pred.update(activations=None, activations_autograd_saved=None,
                        checkpoint_inputs=None, activations_how=FROZEN_ACTIVATIONS_NA)
    pred["total"] = total_of(pred)
    return pred


def total_of(pred: dict) -> int | None:
    """The sum of the parts, or None where one of them is n/a."""
    parts = [pred.get(k) for k in ("weights", "buffers", "gradients", "optimizer_states",
                                   "activations")]
    return None if any(p is None for p in parts) else sum(parts)


def _validate(shape: GPTShape, batch_size: int, seq_len: int, optimizer: str, param_bytes: int,
              autocast_dtype: str | None, checkpoint_every: int, attention: str,
              micro_batches: int) -> None:
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
    if attention not in ATTENTIONS:
        raise ValueError(f"unknown attention {attention!r}; use one of {', '.join(ATTENTIONS)}")
    if autocast_dtype is not None and autocast_dtype not in AUTOCAST_BYTES:
        raise ValueError(f"unknown autocast_dtype {autocast_dtype!r}; use None, 'bf16' or 'fp16'")
    if param_bytes not in (2, 4, 8):
        raise ValueError(f"param_bytes must be 2, 4 or 8 (fp16/bf16, fp32, fp64), got {param_bytes}")
    if not 1 <= seq_len <= shape.block_size:
        raise ValueError(f"seq_len must be between 1 and the context of {shape.block_size}, "
                         f"got {seq_len}")
    if batch_size < 1 or micro_batches < 1 or checkpoint_every < 0:
        raise ValueError("batch_size and micro_batches must be 1 or more and checkpoint_every "
                         f"0 or more, got {batch_size}, {micro_batches}, {checkpoint_every}")


def format_breakdown(pred: dict[str, int]) -> str:
    """A few aligned lines in MiB, for logs and the estimate panel."""
    labels = {"weights": "weights", "buffers": "buffers", "gradients": "gradients",
              "optimizer_states": "optimizer states", "activations": "activations",
              "checkpoint_inputs": "  of which checkpoint inputs", "total": "total"}
    return "\n".join(f"{label:<29}{pred[key] / 2**20:>10.2f} MiB" if pred[key] is not None
                     else f"{label:<29}{'n/a':>14}"
                     for key, label in labels.items() if key in pred)


# --- LoRA (techniques/lora.py) ------------------------------------------------------------------
LORA_LAYERS = {"attention": ((1, 3), (1, 1)), "mlp": ((1, 4), (4, 1))}
"""Built-in GPT Linear layers per block as (in, out) multiples of the width C: attention qkv
C -> 3C and proj C -> C; MLP fc C -> 4C and proj 4C -> C."""


def lora_tensor_numels(shape: GPTShape, rank: int, target: str) -> list[int]:
    """The adapter tensors LoRA adds to the built-in GPT, the only ones that train: per adapted
    Linear A (r x in) and B (out x r); target = attention, mlp or all-linear."""
    parts = ("attention", "mlp") if target == "all-linear" else (target,)
    width = shape.n_embd
    per_block = [size for part in parts for i, o in LORA_LAYERS[part]
                 for size in (rank * i * width, o * width * rank)]
    return per_block * shape.n_layer


def lora_trainable_parameters(shape: GPTShape, rank: int, target: str) -> int:
    """Adapter parameters LoRA adds to the built-in GPT: r·(in + out) per adapted Linear."""
    return sum(lora_tensor_numels(shape, rank, target))
