"""Hugging Face models in-process: shapes from disk, the KV cache, tokenization, techniques through
the model's own switches, and every workload on tiny checkpoints (tests/hf_fixtures.py)."""

from __future__ import annotations

import importlib

import pytest
import torch

from profiler.config import ArchConfig, ConfigError, ModelConfig, RunConfig, validate
from profiler.engine import weights
from profiler.figures.theory import flops_per_token
from profiler.models import source as model_source
from profiler.models.hf_arch import ARCHITECTURES
from tests.helpers import NullControl
from tests.hf_fixtures import checkpoints_root, hf_config


def run_workload(config: RunConfig) -> tuple[dict, list[dict]]:
    messages: list[dict] = []
    validate(config)
    module = importlib.import_module(f"profiler.engine.workloads.{config.workload}")
    return module.run(config, messages.append, NullControl()), messages


def arch_model(name: str, **sizes) -> ModelConfig:
    arch = ArchConfig(name=name, n_layer=2, n_head=4, n_embd=32, block_size=64)
    for key, value in sizes.items():
        setattr(arch, key, value)
    return ModelConfig(source="hf-config", arch=arch)


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert"])
def test_the_shape_read_from_disk_is_the_built_models(name):
    model_cfg = hf_config(name).model
    on_disk = model_source.model_shape(model_cfg)  # torch-free: config.json + safetensors header
    model, origin = weights.load_model(model_cfg)
    assert str(checkpoints_root() / name) in origin
    assert (on_disk.n_layer, on_disk.n_head, on_disk.n_embd) == (2, 2 if name != "llama" else 4, 32)
    assert on_disk.kind == ("hf-encoder" if name == "bert" else "hf-causal")
    assert on_disk.parameters == model.parameter_count() == model.shape.parameters
    assert on_disk.matmul_parameters == model.shape.matmul_parameters
    assert len(model.blocks) == 2


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_each_architecture_is_built_at_the_chosen_size_and_its_formula_counts_it(name):
    sizes = {"n_kv_head": 2} if ARCHITECTURES[name].grouped_kv else {}
    model_cfg = arch_model(name, **sizes)
    predicted = model_source.model_shape(model_cfg)
    torch.manual_seed(0)
    model, _ = weights.load_model(model_cfg)
    assert model.kind == ARCHITECTURES[name].kind == predicted.kind
    assert len(model.blocks) == 2 and model.shape.vocab_size == 256  # byte tokens by default
    assert predicted.parameters == model.parameter_count()
    assert predicted.matmul_parameters == model.shape.matmul_parameters
    if sizes:
        assert model.hf.config.num_key_value_heads == 2


def test_flops_per_token_count_the_models_matmul_parameters():
    model, _ = weights.load_model(hf_config("llama").model)
    shape = model.shape
    # Llama's embedding is a lookup (untied): 6N counts the blocks, the norms and the head.
    assert shape.matmul_parameters == shape.parameters - shape.vocab_size * shape.n_embd
    attention = 12 * shape.n_layer * shape.n_head * (shape.n_embd // shape.n_head) * 32
    assert flops_per_token(shape, 32) == 6 * shape.matmul_parameters + attention


@pytest.mark.parametrize("name", ["gpt2", "llama"])
@torch.no_grad()
def test_kv_cache_decoding_gives_the_logits_of_full_recomputation(name):
    model, _ = weights.load_model(hf_config(name).model)
    model.eval()
    tokens = torch.randint(0, model.shape.vocab_size, (2, 20))
    full, _ = model(tokens)
    cache = model.new_kv_cache(24)
    pieces = [model(tokens[:, :6], kv_cache=cache)[0]]
    pieces += [model(tokens[:, t:t + 1], kv_cache=cache)[0] for t in range(6, 12)]
    pieces.append(model(tokens[:, 12:], kv_cache=cache)[0])
    assert cache.length == 20 and cache.nbytes() > 0
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="holds 24"):
        model(tokens[:, :5], kv_cache=cache)


def test_the_corpus_is_tokenized_with_the_models_own_tokenizer():
    from profiler.engine.data import load_corpus

    model, _ = weights.load_model(hf_config("llama").model)
    corpus = load_corpus("stdlib", "", 30_000, 0.1, model.shape.vocab_size, 1,
                         tokenizer=model.tokenizer)
    assert corpus.train.dtype == torch.int32 and int(corpus.train.max()) < len(model.tokenizer)
    text = model.tokenizer.decode(corpus.val[:200].tolist())
    assert "def " in text or "import" in text  # real Python source came back
    assert "validation tokens of the model's tokenizer" in corpus.description
    byte_corpus = load_corpus("stdlib", "", 30_000, 0.1, 256, 1)  # the byte path is unchanged
    assert byte_corpus.train.dtype == torch.uint8


def _saved_bytes_and_grads(model, tokens):
    saved = []

    def pack(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    model.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _, loss = model(tokens[:, :-1], tokens[:, 1:])
    loss.backward()
    return sum(saved), [p.grad.clone() for p in model.parameters()]


def test_checkpointing_through_transformers_saves_activations_and_keeps_gradients():
    from techniques import activation_checkpointing, registry

    torch.manual_seed(0)
    model, _ = weights.load_model(arch_model("llama", n_layer=4, n_embd=64, n_head=4))
    model.train()
    tokens = torch.randint(0, 256, (4, 65))
    plain_bytes, plain_grads = _saved_bytes_and_grads(model, tokens)
    state = type("State", (), {"model": model})()
    report = activation_checkpointing.apply(
        state, registry.validate_params("activation_checkpointing", {"every": 1}))
    assert "transformers activation checkpointing" in report and "4 of 4 layers" in report
    ckpt_bytes, ckpt_grads = _saved_bytes_and_grads(model, tokens)
    assert ckpt_bytes < 0.5 * plain_bytes, (ckpt_bytes, plain_bytes)
    for a, b in zip(plain_grads, ckpt_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    activation_checkpointing.remove(state)
    assert _saved_bytes_and_grads(model, tokens)[0] == plain_bytes


def test_attention_switches_through_attn_implementation_and_agrees():
    from techniques import attention, registry

    model, _ = weights.load_model(hf_config("gpt2").model)
    model.eval()
    tokens = torch.randint(0, model.shape.vocab_size, (2, 24))
    with torch.no_grad():
        sdpa = model(tokens)[0]
        state = type("State", (), {"model": model, "sdpa_backends": None})()
        report = attention.apply(state, registry.validate_params(
            "attention", {"implementation": "math", "backend": "auto"}))
        assert model.hf.config._attn_implementation == "eager" and "eager" in report
        eager = model(tokens)[0]
    torch.testing.assert_close(sdpa, eager, atol=1e-5, rtol=1e-5)


def test_techniques_that_cannot_act_on_an_hf_model_say_why():
    from techniques import registry

    hf_caps = {"model_kind": "hf-causal", "hf_checkpoint_every": False}
    heads = registry.get("prune_structured")
    why = registry.unavailable_reason(heads, {**heads.defaults(), "dim": "heads"}, hf_caps)
    assert "built-in GPT" in why and "rows or channels" in why
    ckpt = registry.get("activation_checkpointing")
    assert "every = 1" in registry.unavailable_reason(ckpt, {"every": 2}, hf_caps)
    assert registry.unavailable_reason(ckpt, {"every": 1}, hf_caps) is None
    assert registry.unavailable_reason(ckpt, {"every": 2}, {"model_kind": "builtin"}) is None
    encoder = registry.unavailable_reason(ckpt, {"every": 1}, {"model_kind": "hf-encoder"})
    assert "encoder" in encoder


def test_hf_configs_that_cannot_run_are_refused_with_a_sentence():
    config = RunConfig(device="cpu")
    config.model = arch_model("llama", n_embd=30, n_head=4)
    with pytest.raises(ConfigError, match=r"model.arch.n_embd: 30 does not split into 4 heads"):
        validate(config)
    config.model = arch_model("gpt2", n_kv_head=2)
    with pytest.raises(ConfigError, match="model.arch.n_kv_head: gpt2 has no grouped-query"):
        validate(config)
    config.model = arch_model("falcon")
    with pytest.raises(ConfigError, match="model.arch.name: 'falcon' is not an architecture"):
        validate(config)
    encoder = hf_config("bert", workload="train")
    with pytest.raises(ConfigError, match="workload: .* is an encoder model"):
        validate(encoder)


@pytest.mark.slow
def test_a_llama_checkpoint_trains_with_its_tokenizer_and_the_loss_falls():
    summary, messages = run_workload(hf_config("llama", techniques={"activation_checkpointing": {}}))
    started = next(m for m in messages if m["type"] == "started")["run"]
    assert started["model"]["arch"] == "llama" and "model's tokenizer" in started["data"]
    figures = summary["figures"]
    assert summary["steps_completed"] == 20
    assert figures["loss_val_final"]["value"] < figures["loss_val_first"]["value"] - 0.3
    assert figures["flops_per_token"]["value"] == flops_per_token(
        weights.load_model(hf_config("llama").model)[0].shape, 32)
    # Theory: optimizer states from the counted parameters; activations from the memory trace
    # of the run's own config (fake tensors), equal to what the run's probe measured.
    assert figures["predicted_optimizer_state_bytes"]["value"] == pytest.approx(
        figures["optimizer_state_bytes"]["value"], rel=0.01)
    assert figures["predicted_activation_bytes"]["value"] == pytest.approx(
        figures["saved_for_backward_bytes"]["value"], rel=0.05)
    assert "memory trace" in figures["predicted_activation_bytes"]["how"]
    assert figures["predicted_memory_bytes"]["value"] is not None
    assert figures["mfu"]["value"] is None  # CPU
    assert any("transformers activation checkpointing" in t["report"]
               for t in summary["techniques"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_infer_and_int8_compress_of_a_causal_checkpoint(name):
    summary, _ = run_workload(hf_config(name, workload="infer"))
    figures = summary["figures"]
    for key in ("prefill_latency", "ttft", "decode_latency"):
        values = [figures[f"{key}_p{q}_s"]["value"] for q in (50, 90, 99)]
        assert all(v > 0 for v in values) and values == sorted(values)
    assert 1 < figures["perplexity"]["value"] < 2 * 320  # random weights: about the vocabulary
    assert figures["kv_cache_bytes"]["value"] > 0

    summary, messages = run_workload(hf_config(name, workload="compress",
                                               techniques={"quantize_int8_dynamic": {}}))
    rows = {row["key"]: row for row in summary["comparison"]}
    assert rows["model_bytes"]["ratio"] < 0.8 and rows["disk_bytes"]["ratio"] < 0.8
    assert abs(rows["perplexity"]["compressed"] / rows["perplexity"]["baseline"] - 1) < 0.01
    assert 0 <= rows["kl_to_baseline"]["compressed"] < 1e-3
    reports = " ".join(t["report"] for t in summary["techniques"])
    assert "converted" in reports and "lm_head (output head" in reports
    if name == "gpt2":  # GPT-2's Conv1D layers are converted, then quantized, and it says so
        assert summary["techniques"][0]["name"] == "conv1d_to_linear"
        assert "converted 8 Linear layers" in reports
    assert "Perplexity" in summary["quality_loss"]


@pytest.mark.slow
def test_an_encoder_runs_infer_and_int8_compress_on_its_embeddings():
    summary, messages = run_workload(hf_config("bert", workload="infer"))
    assert "no generation" in summary["measures"]
    figures = summary["figures"]
    values = [figures[f"encode_latency_p{q}_s"]["value"] for q in (50, 90, 99)]
    assert all(v > 0 for v in values) and values == sorted(values)
    assert figures["encode_tokens_per_s"]["value"] > 0
    assert figures["perplexity"]["value"] is None
    assert any(m["type"] == "event" and "no generation" in m["message"] for m in messages)

    summary, _ = run_workload(hf_config("bert", workload="compress",
                                        techniques={"quantize_int8_dynamic": {}}))
    rows = {row["key"]: row for row in summary["comparison"]}
    assert rows["model_bytes"]["ratio"] < 0.8
    assert rows["embedding_cosine_mean"]["compressed"] > 0.99
    assert 0 < rows["embedding_max_abs_diff"]["compressed"] < 0.1
    assert "cosine similarity" in summary["quality_loss"]


@pytest.mark.slow
def test_distillation_needs_and_uses_a_shared_tokenizer():
    root = checkpoints_root()
    config = hf_config("gpt2", workload="distill", steps=10, warmup_steps=1,
                       distill={"teacher_train_steps": 15, "alpha": 0.9})
    config.distill.teacher = ModelConfig(source="hf", path=str(root / "llama"))
    summary, _ = run_workload(config)  # the llama teacher learns first, then teaches GPT-2
    figures = summary["figures"]
    assert summary["steps_completed"] == 10
    assert figures["kl_to_teacher_val_final"]["value"] < figures["kl_to_teacher_val_first"]["value"]
    # A teacher reading text through another tokenizer is refused before any work.
    # Same vocabulary size (400), different tokens: WordPiece ids are not byte values.
    config.model = arch_model("gpt2", vocab_size=400)
    config.distill.teacher = arch_model("gpt2", tokenizer=str(root / "bert"))
    with pytest.raises(ConfigError, match="distill.teacher: the teacher and the student tokenize"):
        validate(config)
