"""Each training technique proven on a toy CPU model: it does what it claims."""

from __future__ import annotations

import math

import pytest
import torch

from profiler.config import RunConfig
from profiler.measure.capabilities import detect
from profiler.measure.memory_probe import saved_for_backward
from profiler.models.gpt import GPT
from profiler.models.presets import GPTShape
from techniques import registry, runtime

TINY = GPTShape(n_layer=4, n_head=2, n_embd=32, block_size=32, vocab_size=64, description="test")
CPU = torch.device("cpu")


def make_state(techniques: dict | None = None, seed: int = 0, **train) -> runtime.TrainState:
    torch.manual_seed(seed)
    config = RunConfig()
    config.techniques = techniques or {}
    config.limits.steps = 50
    for key, value in train.items():
        setattr(config.train, key, value)
    model = GPT(TINY)
    state = runtime.TrainState(config=config, device=CPU, caps=detect(CPU), model=model,
                               warn=lambda text: None)
    runtime.apply_all(state)
    return state


def batch(n: int = 4, t: int = 16, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    data = torch.randint(0, TINY.vocab_size, (n, t + 1), generator=gen)
    return data[:, :-1], data[:, 1:]


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


# --- registry ------------------------------------------------------------------------------------
def test_registry_refuses_duplicates_and_lists_every_module():
    names = {t.name for t in registry.all_techniques()}
    assert {"optimizer", "precision", "activation_checkpointing", "grad_accumulation", "compile",
            "attention", "lr_schedule", "grad_clip", "tf32"} <= names
    with pytest.raises(ValueError, match="twice"):
        registry.register(registry.get("precision"), apply=lambda state, params: "again")
    for info in registry.all_techniques():
        assert info.summary and info.source and info.label


@pytest.mark.parametrize("name, params, caps, words", [
    ("precision", {"dtype": "fp16"}, {"cuda": False}, "choose dtype = bf16 or fp32"),
    ("optimizer", {"algorithm": "adamw", "implementation": "fused"}, {"fused": []}, "choose implementation"),
    ("tf32", {}, {"cuda": True, "cuda_capability": 7.0}, "Ampere"),
    ("tf32", {}, {"cuda": False}, "no"),
    ("attention", {"implementation": "sdpa", "backend": "flash"}, {"cuda": False}, "CUDA GPUs only"),
    ("compile", {"mode": "default"}, {"compiler": False}, "C++ compiler"),
])
def test_impossible_choices_are_refused_with_a_reason(name, params, caps, words):
    info = registry.get(name)
    full = {**info.defaults(), **params}
    assert words in registry.unavailable_reason(info, full, caps)


def test_refused_before_the_run_in_the_worker_path():
    config = RunConfig()
    config.techniques = {"precision": {"dtype": "fp16"}}
    with pytest.raises(runtime.Unsupported, match="needs a CUDA GPU"):
        runtime.check_all(config, detect(CPU))


def test_param_validation_names_the_field():
    with pytest.raises(ValueError, match=r"techniques.grad_accumulation.micro_batches: must be at least 1"):
        registry.validate_params("grad_accumulation", {"micro_batches": 0})
    with pytest.raises(ValueError, match="not one of"):
        registry.validate_params("precision", {"dtype": "fp8"})


# --- activation checkpointing --------------------------------------------------------------------
def saved_bytes(state: runtime.TrainState, x, y) -> int:
    """Bytes autograd saves for backward (profiler.measure.memory_probe), then the backward (gradients)."""
    nbytes, loss = saved_for_backward(state.model, lambda: state.forward_model(x, y)[1])
    loss.backward()
    return nbytes


def test_checkpointing_halves_saved_activations_and_keeps_gradients():
    x, y = batch(8, 32)
    plain = make_state()
    plain_bytes = saved_bytes(plain, x, y)
    plain_grads = grads(plain.model)
    ckpt = make_state({"activation_checkpointing": {"every": 1}})
    ckpt_bytes = saved_bytes(ckpt, x, y)
    assert ckpt_bytes <= plain_bytes / 2, (ckpt_bytes, plain_bytes)
    for name, grad in grads(ckpt.model).items():
        torch.testing.assert_close(grad, plain_grads[name], rtol=1e-5, atol=1e-6)
    every_other = make_state({"activation_checkpointing": {"every": 2}})
    assert ckpt_bytes < saved_bytes(every_other, x, y) < plain_bytes


# --- optimizers ----------------------------------------------------------------------------------
def reference_adamw(params, grads_seq, lr, betas, eps, wd, decay_mask):
    """AdamW written out from Loshchilov & Hutter (Algorithm 2), no torch.optim."""
    params = [p.clone() for p in params]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    for t, step_grads in enumerate(grads_seq, 1):
        for i, g in enumerate(step_grads):
            m[i] = betas[0] * m[i] + (1 - betas[0]) * g
            v[i] = betas[1] * v[i] + (1 - betas[1]) * g * g
            m_hat = m[i] / (1 - betas[0] ** t)
            v_hat = v[i] / (1 - betas[1] ** t)
            decay = wd if decay_mask[i] else 0.0
            params[i] = params[i] - lr * decay * params[i] - lr * m_hat / (v_hat.sqrt() + eps)
    return params


@pytest.mark.parametrize("implementation", ["for-loop", "foreach", "fused"])
def test_adamw_matches_the_reference_update(implementation):
    state = make_state({"optimizer": {"algorithm": "adamw", "implementation": implementation}},
                       learning_rate=1e-2, weight_decay=0.1)
    model, opt = state.model, state.optimizer
    start = [p.detach().clone() for p in model.parameters()]
    decay_mask = [p.dim() >= 2 for p in model.parameters()]
    history = []
    for step in range(5):
        x, y = batch(seed=step)
        opt.zero_grad()
        model(x, y)[1].backward()
        history.append([p.grad.detach().clone() for p in model.parameters()])
        opt.step()
    expected = reference_adamw(start, history, 1e-2, (0.9, 0.95), 1e-8, 0.1, decay_mask)
    for got, want in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-6)


def test_decoupled_weight_decay_differs_from_l2_as_theory_says():
    """With zero gradients, AdamW shrinks weights by exactly (1 - lr*wd) per step; Adam's L2
    penalty goes through the adaptive moments and moves each weight by about lr * sign(w)."""
    lr, wd = 1e-2, 0.1
    results = {}
    for algorithm in ("adamw", "adam"):
        state = make_state({"optimizer": {"algorithm": algorithm}}, learning_rate=lr, weight_decay=wd)
        weight = state.model.blocks[0].mlp.fc.weight
        before = weight.detach().clone()
        weight.grad = torch.zeros_like(weight)
        for other in state.model.parameters():
            if other is not weight:
                other.grad = torch.zeros_like(other)
        state.optimizer.step()
        results[algorithm] = (before, weight.detach().clone())
    before, after = results["adamw"]
    torch.testing.assert_close(after, before * (1 - lr * wd))
    before, after = results["adam"]
    l2_grad = wd * before  # Adam folds the penalty into the gradient, then normalises it
    torch.testing.assert_close(after, before - lr * l2_grad / (l2_grad.abs() + 1e-8))
    # Most weights move by lr, whatever their size; AdamW moved them by lr * wd * |w| (tiny).
    assert (after - before).abs().median() > 10 * (lr * wd * before.abs()).median()


def test_optimizer_state_bytes_follow_the_algorithm():
    from techniques.optimizer import state_bytes

    n_bytes = sum(p.numel() * 4 for p in GPT(TINY).parameters())
    tensors = len(list(GPT(TINY).parameters()))
    for algorithm, momentum, states in (("adamw", 0.9, 2), ("sgd", 0.9, 1), ("sgd", 0.0, 0)):
        state = make_state({"optimizer": {"algorithm": algorithm, "momentum": momentum}})
        x, y = batch()
        state.forward_model(x, y)[1].backward()
        state.optimizer.step()
        steps = 4 * tensors if algorithm == "adamw" else 0  # Adam's fp32 step counters
        assert state_bytes(state.optimizer) == states * n_bytes + steps


def test_lr_schedule_warms_up_then_decays():
    from techniques.lr_schedule import factor

    assert factor(5, 100, 10, 0.1) == pytest.approx(0.5)
    assert factor(10, 100, 10, 0.1) == pytest.approx(1.0)
    assert factor(55, 100, 10, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert factor(100, 100, 10, 0.1) == pytest.approx(0.1)


def test_grad_clip_bounds_the_update_norm():
    state = make_state({"grad_clip": {"max_norm": 0.01}})
    x, y = batch()
    state.forward_model(x, y)[1].backward()
    norm = state.clip_gradients()
    assert norm > 0.01
    clipped = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in state.model.parameters()))
    assert clipped == pytest.approx(0.01, rel=1e-3)


# --- accumulation --------------------------------------------------------------------------------
def test_accumulation_equals_one_k_times_larger_batch():
    from profiler.engine.workloads.steps import train_step

    class Fixed:
        def __init__(self, x, y, parts):
            self.chunks = list(zip(x.chunk(parts), y.chunk(parts), strict=True))

        def next(self):
            return self.chunks.pop(0)

    x, y = batch(8, 16)
    big = make_state({"optimizer": {"algorithm": "sgd", "momentum": 0.0}}, learning_rate=0.1)
    acc = make_state({"optimizer": {"algorithm": "sgd", "momentum": 0.0},
                      "grad_accumulation": {"micro_batches": 4}}, learning_rate=0.1)
    loss_big, _, tokens_big = train_step(big, Fixed(x, y, 1), 1)
    loss_acc, _, tokens_acc = train_step(acc, Fixed(x, y, 4), 1)
    assert tokens_big == tokens_acc == 8 * 16
    assert loss_acc == pytest.approx(loss_big, rel=1e-5)
    for a, b in zip(big.model.parameters(), acc.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# --- precision -----------------------------------------------------------------------------------
def test_bf16_autocast_runs_matmuls_in_bf16_and_tracks_fp32():
    state = make_state({"precision": {"dtype": "bf16"}})
    x, y = batch()
    seen = []
    hook = state.model.blocks[0].mlp.fc.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with state.step_context():
        state.forward_model(x, y)
    hook.remove()
    assert seen == [torch.bfloat16]

    def curve(techniques):
        from profiler.engine.workloads.steps import train_step

        s = make_state(techniques, learning_rate=3e-3)

        class Repeat:
            step = 0

            def next(self):
                self.step += 1
                return batch(4, 16, seed=self.step % 4)

        data = Repeat()
        return [train_step(s, data, i)[0] for i in range(1, 51)]

    fp32 = curve({})
    bf16 = curve({"precision": {"dtype": "bf16"}})
    assert all(math.isfinite(v) for v in bf16)
    # bf16 keeps 8 bits of mantissa: the curves agree to within 3 % at every step.
    for a, b in zip(fp32, bf16, strict=True):
        assert abs(a - b) <= 0.03 * a, (a, b)
    assert bf16[-1] < 0.8 * bf16[0]


# --- attention and compile -----------------------------------------------------------------------
def test_math_attention_matches_sdpa():
    x, y = batch()
    sdpa = make_state()
    math_attn = make_state({"attention": {"implementation": "math"}})
    loss_a = sdpa.forward_model(x, y)[1]
    loss_b = math_attn.forward_model(x, y)[1]
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-6)
    loss_a.backward()
    loss_b.backward()
    for name, grad in grads(sdpa.model).items():
        torch.testing.assert_close(grad, grads(math_attn.model)[name], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_compiled_model_matches_eager():
    """One small cold compile (tens of seconds on two cores)."""
    x, y = batch(2, 8)
    eager = make_state()
    compiled = make_state({"compile": {"mode": "default"}})
    assert compiled.compiled and compiled.forward_model is not compiled.model
    loss_e = eager.forward_model(x, y)[1]
    loss_c = compiled.forward_model(x, y)[1]
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-4, atol=1e-5)


# --- mid-run changes -----------------------------------------------------------------------------
def test_change_applies_and_refuses_in_process():
    state = make_state()
    assert "2 micro-batches" in runtime.change(state, "grad_accumulation", {"micro_batches": 2})
    assert state.micro_batches == 2
    runtime.change(state, "grad_accumulation", {"enabled": False})
    assert state.micro_batches == 1
    runtime.change(state, "activation_checkpointing", {"every": 2})
    assert state.model.checkpoint_every == 2
    runtime.change(state, "optimizer", {"learning_rate": 5e-4})
    assert state.learning_rate(1) == 5e-4
    with pytest.raises(runtime.Refused, match="cannot change while a run goes"):
        runtime.change(state, "compile", {"mode": "default"})
    with pytest.raises(runtime.Refused, match="cannot change while a run goes"):
        runtime.change(state, "optimizer", {"algorithm": "sgd"})
    with pytest.raises(runtime.Refused, match="needs a CUDA GPU"):
        runtime.change(state, "precision", {"dtype": "fp16"})
    with pytest.raises(runtime.Refused, match="unknown technique"):
        runtime.change(state, "warp", {})
