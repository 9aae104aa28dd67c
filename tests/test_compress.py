"""Compression techniques prove their effect on a tiny GPT, in-process; one compress run and one
`bench compress` run in-process too (no worker)."""

from __future__ import annotations

import json

import pytest
import torch

from profiler.config import ConfigError, ModelConfig, RunConfig, validate
from profiler.engine import weights
from profiler.measure import sizes
from profiler.measure.capabilities import detect
from profiler.models.gpt import GPT
from profiler.models.presets import GPTShape
from techniques import registry, runtime
from techniques.compress_common import semi_structured_mask
from tests.helpers import NullControl

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = GPTShape(2, 4, 64, 64, 256, "tiny")
CPU = torch.device("cpu")


def tiny_state(techniques: dict | None = None, seed: int = 0) -> runtime.TrainState:
    torch.manual_seed(seed)
    config = RunConfig(workload="compress", device="cpu", techniques=techniques or {})
    return runtime.TrainState(config=config, device=CPU, caps=detect(CPU), model=GPT(TINY).eval(),
                              warn=lambda text: None)


def compress(state: runtime.TrainState) -> list[dict]:
    from techniques.registry import INFER_STAGES

    return runtime.apply_all(state, runtime.plan(state.config, state.caps, INFER_STAGES))


def block_linears(model) -> dict[str, torch.nn.Module]:
    return {n: m for n, m in model.named_modules() if n.startswith("blocks.")
            and (isinstance(m, torch.nn.Linear) or type(m).__name__ == "Linear")}


def test_int8_dynamic_converts_every_block_linear_and_is_about_4x_smaller():
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    state = tiny_state({"quantize_int8_dynamic": {}})
    original = GPT(TINY).eval()
    original.load_state_dict(state.model.state_dict())
    tokens = torch.randint(0, 256, (2, 32))
    fp32_bytes = sum(m.weight.numel() * 4 for m in block_linears(state.model).values())
    [applied] = compress(state)
    converted = {n: m for n, m in state.model.named_modules() if isinstance(m, DynamicLinear)}
    assert f"converted {len(converted)} Linear layers to int8 dynamic" in applied["report"]
    assert "skipped lm_head (tied to the embedding)" in applied["report"]
    assert len(converted) == 4 * TINY.n_layer
    assert all(isinstance(m, DynamicLinear) for m in block_linears(state.model).values())
    assert state.model.lm_head.weight is state.model.wte.weight
    tensors = sizes.weight_tensors(state.model)
    int8_bytes = sum(t.numel() * t.element_size() for name, t in tensors.items()
                     if name.startswith("blocks.") and ".weight." in name)
    assert all(t.dtype == torch.int8 for n, t in tensors.items() if n.endswith("int_repr"))
    # int8 values plus one fp64 scale and one int64 zero point per output row
    assert 0.25 <= int8_bytes / fp32_bytes < 0.25 + 16 / (4 * TINY.n_embd) + 0.01
    with torch.no_grad():
        expected, _ = original(tokens)
        got, _ = state.model(tokens)
    kl = (expected.softmax(-1) * (expected.log_softmax(-1) - got.log_softmax(-1))).sum(-1)
    assert kl.mean() < 1e-3
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()


def test_weight_cast_halves_the_weight_bytes():
    state = tiny_state({"weight_cast": {"dtype": "bf16"}})
    before = sizes.model_bytes(state.model)
    compress(state)
    assert sizes.model_bytes(state.model) == before // 2
    assert all(p.dtype == torch.bfloat16 for p in state.model.parameters())


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_magnitude_pruning_reaches_the_requested_sparsity_exactly(scope):
    state = tiny_state({"prune_magnitude": {"amount": 0.3, "scope": scope}})
    compress(state)
    weights = [m.weight for m in block_linears(state.model).values()]
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == round(0.3 * total) if scope == "global" else zeros == sum(
        round(0.3 * w.numel()) for w in weights)
    if scope == "layer":
        for w in weights:
            assert int((w == 0).sum()) == round(0.3 * w.numel())


def test_permanent_pruning_survives_save_and_load(tmp_path):
    state = tiny_state({"prune_magnitude": {"amount": 0.5}})
    compress(state)
    assert not any(name.endswith(("_orig", "_mask")) for name in state.model.state_dict())
    zeros = {n: int((m.weight == 0).sum()) for n, m in block_linears(state.model).items()}
    weights.save_model(state.model, tmp_path / "model.safetensors", "tiny")
    loaded, _ = weights.load_model(ModelConfig(source="checkpoint", path=str(tmp_path)))
    assert {n: int((m.weight == 0).sum()) for n, m in block_linears(loaded).items()} == zeros


def test_masks_kept_during_fine_tuning_hold_pruned_weights_at_zero():
    from profiler.engine.data import BatchSampler
    from profiler.engine.workloads.compress import finetune

    state = tiny_state()
    wanted = {"prune_magnitude": registry.validate_params("prune_magnitude", {"amount": 0.4})}
    batches = BatchSampler(torch.randint(0, 256, (5000,), dtype=torch.uint8), 4, 16, 0, CPU)
    applied = runtime.apply_all(state, wanted, finetune=lambda: finetune(
        state, batches, 3, 1e-2, lambda message: None, NullControl()))
    assert [a["name"] for a in applied] == ["prune_magnitude", "finetune", "prune_magnitude"]
    assert "3 AdamW steps" in applied[1]["report"]
    for module in block_linears(state.model).values():
        assert int((module.weight == 0).sum()) >= round(0.4 * module.weight.numel())


def test_structured_pruning_zeroes_whole_rows():
    state = tiny_state({"prune_structured": {"amount": 0.25, "dim": "rows"}})
    compress(state)
    for module in block_linears(state.model).values():
        zero_rows = int((module.weight == 0).all(dim=1).sum())
        assert zero_rows == round(0.25 * module.weight.size(0))


def test_structured_pruning_removes_whole_attention_heads():
    state = tiny_state({"prune_structured": {"amount": 0.5, "dim": "heads"}})
    [applied, _] = compress(state)
    assert applied["report"].startswith(f"zeroed {TINY.n_layer * 2} of {TINY.n_layer * 4} "
                                        "attention heads")
    head_dim = TINY.n_embd // TINY.n_head
    for block in state.model.blocks:
        qkv = block.attn.qkv.weight.view(3, TINY.n_head, head_dim, TINY.n_embd)
        bias = block.attn.qkv.bias.view(3, TINY.n_head, head_dim)
        proj = block.attn.proj.weight.view(TINY.n_embd, TINY.n_head, head_dim)
        dead = [h for h in range(TINY.n_head) if (qkv[:, h] == 0).all()]
        assert len(dead) == 2
        for h in dead:
            assert (bias[:, h] == 0).all() and (proj[:, h] == 0).all()


def test_semi_structured_mask_keeps_two_of_every_four():
    weight = torch.randn(8, 16)
    mask = semi_structured_mask(weight).view(8, 4, 4)
    assert (mask.sum(-1) == 2).all()
    kept = (weight.abs().view(8, 4, 4) * mask).amax(-1)
    assert torch.equal(kept, weight.abs().view(8, 4, 4).amax(-1))


@pytest.mark.parametrize(("techniques", "why"), [
    ({"prune_semi_structured": {}}, "needs an NVIDIA GPU with CUDA"),
    ({"quantize_weight_only": {"bits": 4}}, "needs an NVIDIA GPU with CUDA"),
    ({"prune_magnitude": {"amount": 1.0}}, "pruning 100 % zeroes every weight"),
    ({"prune_structured": {"amount": 1.0, "dim": "heads"}}, "removes every attention head"),
    ({"quantize_int8_dynamic": {}, "weight_cast": {}}, "cannot be combined"),
])
def test_impossible_choices_are_refused_with_a_reason(techniques, why):
    with pytest.raises(runtime.Unsupported, match=why):
        compress(tiny_state(techniques))


def test_int4_on_an_older_gpu_says_which_gpu_it_needs():
    info = registry.get("quantize_weight_only")
    caps = {"cuda": True, "cuda_capability": 7.5, "packages": ["torchao"]}
    why = registry.unavailable_reason(info, info.defaults() | {"bits": 4}, caps)
    assert "Ampere or newer" in why and "bits = 8" in why
    assert registry.unavailable_reason(info, info.defaults(), caps) is None


def test_quantized_weights_cannot_be_trained_and_the_config_says_so():
    config = RunConfig(workload="train", techniques={"quantize_int8_dynamic": {}})
    with pytest.raises(ConfigError, match="techniques.quantize_int8_dynamic: does not apply to "
                                          "workload = train"):
        validate(config)
    config = RunConfig(workload="compress")
    with pytest.raises(ConfigError, match="at least one compression technique"):
        validate(config)


def test_compress_run_compares_original_and_compressed_side_by_side(tmp_path):
    from profiler.engine.workloads import compress as workload

    torch.manual_seed(0)
    weights.save_model(GPT(TINY), tmp_path / "model.safetensors", "tiny")
    config = RunConfig(workload="compress", device="cpu",
                       techniques={"prune_magnitude": {"amount": 0.5}})
    config.model = ModelConfig(source="checkpoint", path=str(tmp_path))
    config.data.max_train_bytes = 50_000
    config.infer.prompt_len, config.infer.gen_len = 8, 4
    config.infer.repeats, config.infer.warmup_runs = 2, 1
    config.infer.eval_tokens, config.infer.eval_seq_len = 256, 32
    validate(config)
    messages: list[dict] = []
    summary = workload.run(config, messages.append, NullControl())
    rows = {row["key"]: row for row in summary["comparison"]}
    assert rows["parameters"]["ratio"] == 1.0
    nonzero = rows["nonzero_parameters"]
    assert nonzero["compressed"] < nonzero["baseline"]
    linear = sum(4 * TINY.n_embd * TINY.n_embd * 3 for _ in range(TINY.n_layer))
    assert nonzero["baseline"] - nonzero["compressed"] == pytest.approx(linear / 2, rel=0.02)
    assert rows["model_bytes"]["ratio"] == 1.0  # zeros in a dense tensor save nothing
    assert rows["disk_bytes"]["compressed"] > 0
    assert rows["kl_to_baseline"]["compressed"] > 0
    assert rows["perplexity"]["baseline"] > 1 and rows["perplexity"]["compressed"] > 1
    for key in ("prefill_latency_p50_s", "decode_latency_p50_s", "decode_tokens_per_s"):
        assert rows[key]["baseline"] > 0 and rows[key]["ratio"] > 0
    assert summary["quality_loss"].startswith("Perplexity ")
    assert "KL(baseline‖compressed)" in summary["quality_loss"]
    # quality carries the batch size it was scored at, KL as mean and p99, top-1 agreement
    figures = summary["figures"]
    for key in ("perplexity", "kl_to_baseline", "kl_p99", "top1_agreement"):
        assert "scored 1 window(s) per forward pass" in figures[key]["how"], key
    assert figures["kl_p99"]["value"] >= figures["kl_to_baseline"]["value"] > 0
    assert 0 < figures["top1_agreement"]["value"] < 1
    assert "scored 1 window(s) per forward pass" in summary["quality_loss"]
    assert "dynamic" not in summary["quality_loss"]  # pruning does not depend on the batch
    # timed figures carry their distribution; two runs a side are too few for an interval
    assert figures["decode_tokens_per_s"]["distribution"]["n"] == 2
    assert figures["baseline_prefill_latency_p50_s"]["distribution"]["n"] == 2
    speedup = figures["speedup_decode"]["vs_baseline"]
    assert not speedup["significant"]  # no interval: no verdict either way, whatever the load
    assert speedup["verdict"] in ("not comparable", "machine busy")
    if speedup["verdict"] == "not comparable":
        assert "an interval needs" in speedup["reason"]
    assert "no interval: too few timed runs" in summary["quality_loss"]
    samples = [m for m in messages if m["type"] == "sample"]
    assert [m["phase"] for m in samples] == ["warmup", "measure", "measure", "eval"]
    assert "baseline_decode_tokens_per_s" in samples[1]["metrics"]
    json.dumps(summary)  # plain data only


def test_bench_compress_prints_ratios_against_fp32(capsys, tmp_path):
    from profiler.cli import main

    record = tmp_path / "benchmarks.md"
    code = main(["bench", "compress", "gpt-nano", "--train-steps", "0", "--repeats", "1",
                 "--warmup", "0", "--gen-len", "3", "--prompt-len", "8", "--eval-tokens", "256",
                 "--only", "per-channel,2:4", "--json", "--record", str(record)])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    rows = {row["option"]: row for row in result["rows"]}
    assert set(rows) == {"fp32", "int8 dynamic (per-channel)", "2:4 semi-structured (bf16)"}
    assert rows["fp32"]["speedup"] == 1.0
    int8 = rows["int8 dynamic (per-channel)"]
    assert 0.2 < int8["bytes_ratio"] < 0.5 and int8["speedup"] > 0 and int8["kl_to_fp32"] >= 0
    assert not rows["2:4 semi-structured (bf16)"]["available"]
    text = record.read_text()
    assert text.startswith("# Benchmarks") and "| int8 dynamic (per-channel) |" in text
    assert "effiscope bench compress gpt-nano --train-steps 0" in text


def _planted_run(tmp_path, monkeypatch, slowdown: float, techniques: dict, busy: str = ""
                 ) -> dict:
    """A compress run whose timings are planted: each model's generations take the same cycle of
    durations, the compressed model's scaled by `slowdown`; the models themselves are real."""
    from profiler.engine.workloads import compress as workload

    first_seen: list[int] = []
    calls = {"n": 0}

    def planted(state, prompts, gen_len):
        if id(state) not in first_seen:
            first_seen.append(id(state))
        scale = slowdown if first_seen.index(id(state)) == 1 else 1.0
        calls["n"] += 1
        base = (1.0, 1.1, 0.95, 1.05)[calls["n"] % 4] * 1e-3 * scale  # identical cycle per block
        steps = [base] * (gen_len - 1)
        return {"prefill_latency_s": 4 * base, "ttft_s": 4.5 * base, "decode_latency_s": base,
                "decode_tokens_per_s": 1 / base, "prefill_tokens_per_s": 8 / (4 * base),
                "kv_cache_bytes": 1, "_decode_steps_s": steps, "_decode_tokens": len(steps)}

    monkeypatch.setattr(workload, "generate_once", planted)
    # The timings are planted: whatever else this machine runs, they describe a quiet one.
    monkeypatch.setattr(workload.busy, "sentence", lambda summary: busy)
    torch.manual_seed(0)
    weights.save_model(GPT(TINY), tmp_path / "model.safetensors", "tiny")
    config = RunConfig(workload="compress", device="cpu", techniques=techniques)
    config.model = ModelConfig(source="checkpoint", path=str(tmp_path))
    config.data.max_train_bytes = 50_000
    config.infer.prompt_len, config.infer.gen_len = 8, 4
    config.infer.repeats, config.infer.warmup_runs = 8, 1
    config.infer.eval_tokens, config.infer.eval_seq_len = 128, 32
    validate(config)
    return workload.run(config, lambda message: None, NullControl())


def test_a_technique_that_changes_nothing_shows_no_significant_difference(tmp_path, monkeypatch):
    # pruning 0 % leaves every weight as it was: the planted equal pair
    summary = _planted_run(tmp_path, monkeypatch, 1.0, {"prune_magnitude": {"amount": 0.0}})
    rows = {row["key"]: row for row in summary["comparison"]}
    for key in ("prefill_latency_p50_s", "ttft_p50_s", "decode_latency_p50_s",
                "decode_tokens_per_s"):
        interval = rows[key]["vs_baseline"]
        assert interval["ratio"] == pytest.approx(1.0), key
        assert interval["ci_low"] <= 1.0 <= interval["ci_high"], key
        assert interval["verdict"] == "within noise", key
    assert "vs_baseline" not in rows["decode_latency_p90_s"]  # no interval claimed for a p90
    figures = summary["figures"]
    assert figures["speedup_decode"]["vs_baseline"]["verdict"] == "within noise"
    assert figures["decode_tokens_per_s_ratio"]["vs_baseline"]["significant"] is False
    assert figures["decode_tokens_per_s"]["distribution"]["n"] == 8
    sentence = summary["quality_loss"]
    assert "decoding tokens/s: within noise (1.00x, 95 % interval" in sentence
    assert "prefill latency: within noise" in sentence
    # the original against itself: no divergence, every top-1 token the same
    assert figures["kl_to_baseline"]["value"] == 0.0 and figures["kl_p99"]["value"] == 0.0
    assert figures["top1_agreement"]["value"] == 1.0
    assert rows["perplexity"]["baseline"] == rows["perplexity"]["compressed"]
    # The report's table says so too, with the interval; a size row keeps its bare ratio.
    from profiler.report.recommend import compression_cells

    cell = compression_cells("decode_tokens_per_s", rows["decode_tokens_per_s"])[3]
    assert cell.startswith("1.00x (") and cell.endswith("), within noise")
    assert compression_cells("model_bytes", rows["model_bytes"])[3] == "1.00x"


def test_a_planted_slowdown_is_reported_with_its_interval(tmp_path, monkeypatch):
    summary = _planted_run(tmp_path, monkeypatch, 2.0, {"quantize_int8_dynamic": {}})
    rows = {row["key"]: row for row in summary["comparison"]}
    decode = rows["decode_tokens_per_s"]["vs_baseline"]
    assert decode["ratio"] == pytest.approx(0.5) and decode["significant"]
    assert decode["ci_high"] < 1 and decode["verdict"] == "worse"
    from profiler.report.recommend import compression_cells

    cell = compression_cells("decode_tokens_per_s", rows["decode_tokens_per_s"])[3]
    assert cell.startswith("0.500x (") and "within noise" not in cell
    sentence = summary["quality_loss"]
    assert "decoding runs at 0.500x (95 % interval" in sentence
    assert "prefill takes 2.00x (95 % interval" in sentence
    # dynamic int8: the quality figures depend on how many windows share a forward pass (one
    # activation scale per forward input), and say so beside each figure and in the sentence
    protocol = ("dynamic int8 quantizes each forward input's activations with one scale taken "
                "over the whole input (here 1 window): this figure holds for 1 window per "
                "forward pass")
    assert protocol in sentence and "scored 1 window(s) per forward pass" in sentence
    for key in ("perplexity", "kl_to_baseline", "perplexity_change_percent"):
        assert protocol in summary["figures"][key]["how"], key
    assert summary["scoring"] == {"windows_per_pass": 1, "windows": 4, "seq_len": 32,
                                  "batch_dependent": ["quantize_int8_dynamic"]}


def test_scoring_the_original_against_itself_and_against_a_changed_copy():
    from profiler.engine.workloads.generation import score

    original = tiny_state()
    changed = tiny_state(seed=0)
    with torch.no_grad():
        for p in changed.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    windows = [torch.randint(0, 256, (17,)) for _ in range(5)]
    same = score([original, original], windows, batch_size=2)
    assert same["kl"] == [0.0, 0.0] and same["kl_p99"] == [0.0, 0.0]
    assert same["top1_agreement"] == [1.0, 1.0] and same["batch_size"] == 2
    got = score([original, changed], windows, batch_size=2)
    with torch.no_grad():  # independently, token by token
        x = torch.stack(windows)[:, :-1]
        p, q = (s.model(x)[0].double().log_softmax(-1) for s in (original, changed))
    kl = (p.exp() * (p - q)).sum(-1).flatten()
    assert got["kl"][1] == pytest.approx(float(kl.mean()), rel=1e-4)
    assert got["kl_p99"][1] == pytest.approx(float(torch.quantile(kl, 0.99)), rel=1e-3)
    assert got["kl_p99"][1] > got["kl"][1] > 0
    agree = float((p.argmax(-1) == q.argmax(-1)).double().mean())
    assert got["top1_agreement"][1] == pytest.approx(agree) and agree < 1


def test_dynamic_int8_quality_depends_on_the_batch_it_is_scored_in():
    from profiler.engine.workloads.generation import score

    original = tiny_state()
    quantized = tiny_state({"quantize_int8_dynamic": {}})
    compress(quantized)
    windows = [torch.randint(0, 256, (33,)) for _ in range(8)]
    one = score([original, quantized], windows, batch_size=1)
    eight = score([original, quantized], windows, batch_size=8)
    assert one["perplexity"][0] == pytest.approx(eight["perplexity"][0], rel=1e-5)  # fp32: same
    assert one["kl"][1] != eight["kl"][1]  # int8: activation ranges taken per batch


def test_a_compress_run_on_a_busy_machine_gives_no_speed_verdict(tmp_path, monkeypatch):
    # The same planted 2x slowdown, but the run's machine was shared: the one verdict rule
    # (profiler.figures.significance) withholds the speed verdict and says why; sizes are still judged.
    busy = "other processes used 1.7 of 2 cores during this run: its speed figures are unreliable"
    summary = _planted_run(tmp_path, monkeypatch, 2.0, {"quantize_int8_dynamic": {}}, busy)
    rows = {row["key"]: row for row in summary["comparison"]}
    decode = rows["decode_tokens_per_s"]["vs_baseline"]
    assert decode["ratio"] == pytest.approx(0.5) and decode["ci_high"] < 1
    assert decode["verdict"] == "machine busy" and not decode["significant"]
    assert decode["reason"] == busy
    from profiler.report.recommend import compression_cells

    assert compression_cells("decode_tokens_per_s", rows["decode_tokens_per_s"])[3].endswith(
        ", machine busy")
    assert "machine busy" in summary["quality_loss"]
