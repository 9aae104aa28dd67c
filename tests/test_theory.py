"""Theory against measurement: predicted memory vs what autograd and torch.optim really keep;
the peak table and MFU."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

import profiler.models.gpt as gpt_module
from profiler.figures.theory import (
    flops_per_token,
    format_breakdown,
    mfu,
    optimizer_state_bytes,
    peak_flops,
    predict_memory,
)
from profiler.measure.memory_probe import saved_for_backward
from profiler.models.gpt import GPT
from profiler.models.presets import GPT_PRESETS, GPTShape

ROOT = Path(__file__).resolve().parent.parent
TINY = GPTShape(n_layer=2, n_head=4, n_embd=64, block_size=64, vocab_size=256, description="test")
SHAPES = {"tiny": TINY, "gpt-nano": GPT_PRESETS["gpt-nano"]}
BATCH_SIZE, SEQ_LEN = 4, 64
TOLERANCE = 0.10
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _model(shape: GPTShape, attention: str = "sdpa", checkpoint_every: int = 0) -> GPT:
    torch.manual_seed(0)
    model = GPT(shape)
    model.train()
    model.set_attention(attention)
    model.checkpoint_every = checkpoint_every
    return model


def _batch(shape: GPTShape) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, shape.vocab_size, (BATCH_SIZE, SEQ_LEN + 1), generator=generator)
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


def _saved_by_grad_fn(loss: torch.Tensor, param_storages: set[int]) -> dict[str, int]:
    """Bytes per grad_fn name, storages counted once: the table to read when a case drifts."""
    per_op: dict[str, int] = defaultdict(int)
    seen_nodes, seen_storages, stack = set(), set(param_storages), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen_nodes:
            continue
        seen_nodes.add(node)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
        for attr in dir(node):
            if not attr.startswith("_saved_"):
                continue
            try:
                values = getattr(node, attr)
            except RuntimeError:  # e.g. a checkpointed node's placeholder
                continue
            for value in values if isinstance(values, tuple) else (values,):
                if isinstance(value, torch.Tensor):
                    ptr = value.untyped_storage().data_ptr()
                    if ptr not in seen_storages:
                        seen_storages.add(ptr)
                        per_op[type(node).__name__] += value.untyped_storage().nbytes()
    return dict(sorted(per_op.items(), key=lambda item: -item[1]))


def _forward(shape: GPTShape, attention: str, checkpoint_every: int,
             autocast: str | None) -> tuple[GPT, Callable[[], torch.Tensor]]:
    """The model and one training forward of it (in its autocast), which returns the loss."""
    model = _model(shape, attention, checkpoint_every)
    idx, targets = _batch(shape)

    def forward() -> torch.Tensor:
        with torch.autocast("cpu", dtype=AUTOCAST[autocast]) if autocast else nullcontext():
            return model(idx, targets)[1]

    return model, forward


def measure_saved_bytes(shape: GPTShape, attention: str = "sdpa", checkpoint_every: int = 0,
                        autocast: str | None = None) -> int:
    """Bytes saved for backward by one forward, measured as the workloads measure them
    (profiler.measure.memory_probe: storages counted once, the parameters' left out)."""
    return saved_for_backward(*_forward(shape, attention, checkpoint_every, autocast))[0]


def explain(shape: GPTShape, attention: str, checkpoint_every: int, autocast: str | None) -> str:
    """Saved bytes per grad_fn (a storage goes to the first node found holding it): built only
    when a case drifts, since walking a checkpointed graph recomputes its blocks (slow) and
    shows their recomputed tensors, not the checkpoint inputs."""
    model, forward = _forward(shape, attention, checkpoint_every, autocast)
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return f"saved per grad_fn: {_saved_by_grad_fn(forward(), param_storages)}"


_MEASURED: dict[tuple, int] = {}


def measured(shape_name: str, attention: str = "sdpa", checkpoint_every: int = 0,
             autocast: str | None = None) -> int:
    key = (shape_name, attention, checkpoint_every, autocast)
    if key not in _MEASURED:
        _MEASURED[key] = measure_saved_bytes(SHAPES[shape_name], attention, checkpoint_every,
                                             autocast)
    return _MEASURED[key]


CASES = [  # (attention, checkpoint_every, autocast)
    pytest.param("sdpa", 0, None, id="sdpa"),
    pytest.param("math", 0, None, id="math"),
    pytest.param("sdpa", 1, None, id="checkpoint-every-block"),
    pytest.param("sdpa", 2, None, id="checkpoint-every-2nd"),
    pytest.param("math", 2, None, id="math-checkpoint-every-2nd"),
    pytest.param("sdpa", 0, "bf16", id="autocast-bf16"),
    pytest.param("math", 0, "bf16", id="math-autocast-bf16"),
    pytest.param("sdpa", 2, "bf16", id="checkpoint-every-2nd-bf16"),
]


@pytest.mark.parametrize("shape_name", list(SHAPES))
@pytest.mark.parametrize(("attention", "checkpoint_every", "autocast"), CASES)
def test_predicted_activations_match_saved_tensors(shape_name, attention, checkpoint_every,
                                                   autocast):
    counted_bytes = measured(shape_name, attention, checkpoint_every, autocast)
    pred = predict_memory(SHAPES[shape_name], BATCH_SIZE, SEQ_LEN, attention=attention,
                          checkpoint_every=checkpoint_every, autocast_dtype=autocast,
                          device_type="cpu")
    predicted_bytes = pred["activations_autograd_saved"]
    error = abs(predicted_bytes - counted_bytes) / counted_bytes
    print(f"{shape_name} {attention} ck={checkpoint_every} {autocast}: "
          f"predicted {predicted_bytes} counted {counted_bytes} ({error:.2%})")
    assert error <= TOLERANCE, (f"predicted {predicted_bytes} B, counted {counted_bytes} B; "
                                + explain(SHAPES[shape_name], attention, checkpoint_every,
                                          autocast))
    assert pred["activations"] == predicted_bytes


@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_checkpoint_inputs_are_what_checkpoint_receives(shape_name, monkeypatch):
    """The checkpoint inputs are predicted apart; count the tensors checkpoint() is handed."""
    shape = SHAPES[shape_name]
    received: dict[int, int] = {}
    real_checkpoint = gpt_module.checkpoint

    def counting_checkpoint(fn, *args, **kwargs):
        for arg in args:
            if isinstance(arg, torch.Tensor):
                received[arg.untyped_storage().data_ptr()] = arg.untyped_storage().nbytes()
        return real_checkpoint(fn, *args, **kwargs)

    monkeypatch.setattr(gpt_module, "checkpoint", counting_checkpoint)
    model = _model(shape, checkpoint_every=1)
    idx, targets = _batch(shape)
    model(idx, targets)
    pred = predict_memory(shape, BATCH_SIZE, SEQ_LEN, checkpoint_every=1, device_type="cpu")
    assert sum(received.values()) == pred["checkpoint_inputs"]


@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_checkpointing_every_block_at_least_halves_saved_bytes(shape_name):
    plain_bytes = measured(shape_name)
    checkpointed_bytes = measured(shape_name, checkpoint_every=1)
    assert checkpointed_bytes <= plain_bytes / 2


def _state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(value.untyped_storage().nbytes() for state in optimizer.state.values()
               for value in state.values() if isinstance(value, torch.Tensor))


@pytest.mark.parametrize(("name", "make", "momentum"), [
    ("adamw", lambda params: torch.optim.AdamW(params, lr=1e-3), 0.9),
    ("adam", lambda params: torch.optim.Adam(params, lr=1e-3), 0.9),
    ("sgd", lambda params: torch.optim.SGD(params, lr=1e-3, momentum=0.9), 0.9),
    ("sgd", lambda params: torch.optim.SGD(params, lr=1e-3), 0.0),
])
def test_optimizer_states_equal_torch_optim_after_one_step(name, make, momentum):
    model = _model(TINY)
    optimizer = make(model.parameters())
    idx, targets = _batch(TINY)
    model(idx, targets)[1].backward()
    optimizer.step()
    pred = predict_memory(TINY, BATCH_SIZE, SEQ_LEN, optimizer=name, sgd_momentum=momentum)
    assert pred["optimizer_states"] == _state_bytes(optimizer)
    assert pred["optimizer_states"] == optimizer_state_bytes(TINY, name, sgd_momentum=momentum)
    weight_bytes = sum(p.nbytes for p in model.parameters())
    assert pred["weights"] == weight_bytes
    assert pred["gradients"] == sum(p.grad.nbytes for p in model.parameters())
    assert pred["buffers"] == sum(b.nbytes for b in model.buffers())


def test_prediction_parts_add_up_and_format():
    pred = predict_memory(GPT_PRESETS["gpt2-small"], 8, 1024, autocast_dtype="bf16",
                          checkpoint_every=2, micro_batches=4)
    parts = ("weights", "buffers", "gradients", "optimizer_states", "activations")
    assert pred["total"] == sum(pred[key] for key in parts)
    assert 0 < pred["checkpoint_inputs"] < pred["activations_autograd_saved"]
    text = format_breakdown(pred)
    assert "total" in text and "MiB" in text


@pytest.mark.parametrize("bad", [dict(optimizer="lion"), dict(attention="flash"),
                                 dict(autocast_dtype="fp8"), dict(param_bytes=3),
                                 dict(checkpoint_every=-1)])
def test_bad_arguments_raise_with_the_fix(bad):
    with pytest.raises(ValueError, match="use|must"):
        predict_memory(TINY, 1, 8, **bad)


def test_flops_per_token_keeps_its_formula():
    shape = GPT_PRESETS["gpt2-small"]
    n = shape.parameter_count() - shape.block_size * shape.n_embd
    assert flops_per_token(shape, 1024) == 6 * n + 12 * 12 * 12 * 64 * 1024
    assert flops_per_token(shape, 1024, training=False) == flops_per_token(shape, 1024) / 3


def test_theory_and_peaks_import_without_torch():
    code = ("import sys\nimport profiler.figures.theory, profiler.figures.peaks\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("device_name", "dtype", "tflops"), [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.5),
    ("NVIDIA H100 PCIe", "bf16", 756.5),
    ("NVIDIA H100 NVL", "fp16", 835.5),
    ("NVIDIA H200", "bf16", 989.5),
    ("NVIDIA A100-SXM4-80GB", "bf16", 312),
    ("NVIDIA A100-PCIE-40GB", "tf32", 156),
    ("NVIDIA A100 80GB PCIe", "fp32", 19.5),
    ("NVIDIA L4", "bf16", 121),
    ("NVIDIA L40S", "bf16", 362.05),
    ("NVIDIA A10", "fp16", 125),
    ("Tesla T4", "fp16", 65),
    ("Tesla V100-SXM2-16GB", "fp16", 125),
    ("NVIDIA GeForce RTX 3090", "bf16", 71),
    ("NVIDIA GeForce RTX 4090", "torch.bfloat16", 165.2),
    ("AMD Instinct MI300X", "bfloat16", 1307.4),
])
def test_peak_flops_of_known_devices(device_name, dtype, tflops):
    assert peak_flops(device_name, dtype) == pytest.approx(tflops * 1e12)
    assert peak_flops(device_name.upper(), dtype) == pytest.approx(tflops * 1e12)


@pytest.mark.parametrize(("device_name", "dtype"), [
    ("cpu", "fp32"), ("x86_64", "bf16"), ("Intel(R) Xeon(R) Platinum 8375C CPU", "fp32"),
    ("NVIDIA A10G", "bf16"), ("NVIDIA GeForce RTX 3090 Ti", "bf16"), ("Apple M2", "fp16"),
    ("Tesla T4", "bf16"), ("Tesla V100-PCIE-32GB", "tf32"), ("NVIDIA H100", "fp4"),
])
def test_no_peak_for_cpu_unknown_devices_and_missing_dtypes(device_name, dtype):
    assert peak_flops(device_name, dtype) is None
    value, reason = mfu(1e5, 1e9, device_name, dtype)
    assert value is None and reason.startswith("n/a:")


def test_mfu_says_why_not_on_cpu():
    assert mfu(1e4, 1e8, "cpu", "fp32") == (None, "n/a: no peak FLOP/s known for CPU")


@pytest.mark.parametrize("dtype", ["int8", "fp8", "float8_e4m3fn"])
def test_mfu_is_none_for_int8_and_fp8_even_with_a_peak(dtype):
    assert peak_flops("NVIDIA H100 80GB HBM3", dtype) is not None  # listed, but not for MFU
    value, reason = mfu(1e6, 1e9, "NVIDIA H100 80GB HBM3", dtype)
    assert value is None and "n/a" in reason
    assert mfu(1e6, 1e9, "NVIDIA H100 80GB HBM3", dtype, override_tflops=500)[0] is None


def test_mfu_is_nanogpt_style():
    shape = GPT_PRESETS["gpt2-small"]
    per_token = flops_per_token(shape, 1024)
    tokens_per_s = 150_000.0
    value, how = mfu(tokens_per_s, per_token, "NVIDIA A100-SXM4-40GB", "bf16")
    assert value == pytest.approx(tokens_per_s * per_token / 312e12)
    assert 0 < value < 1
    assert "312 TFLOP/s" in how and "A100 bf16 dense" in how


def test_override_wins_over_the_table_and_over_unknown():
    assert peak_flops("cpu", "fp32", override_tflops=2.5) == pytest.approx(2.5e12)
    value, how = mfu(1000.0, 1e9, "Mystery GPU", "bf16", override_tflops=100)
    assert value == pytest.approx(1000.0 * 1e9 / 100e12)
    assert "user override" in how
    with pytest.raises(ValueError, match="positive"):
        peak_flops("NVIDIA H200", "bf16", override_tflops=0)
