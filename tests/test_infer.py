"""Inference: the KV cache, perplexity, checkpoints, and a train -> save -> infer round trip."""

from __future__ import annotations

import json
import math
import textwrap

import pytest
import torch

from profiler.config import ConfigError, ModelConfig, RunConfig, validate
from profiler.engine import weights
from profiler.engine.workloads.generation import eval_windows, generate_once, score
from profiler.models import source as model_source
from profiler.models.gpt import GPT
from profiler.models.presets import GPTShape
from techniques import runtime

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = GPTShape(2, 2, 32, 48, 256, "tiny")


def tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(TINY).eval()


@pytest.mark.parametrize("attention", ["sdpa", "math"])
@torch.no_grad()
def test_kv_cache_decoding_gives_the_logits_of_full_recomputation(attention):
    model = tiny_model()
    model.set_attention(attention)
    tokens = torch.randint(0, 256, (3, 20))
    full, _ = model(tokens)
    cache = model.new_kv_cache(24)
    pieces = [model(tokens[:, :6], kv_cache=cache)[0]]  # prefill
    pieces += [model(tokens[:, t:t + 1], kv_cache=cache)[0] for t in range(6, 12)]  # decode
    pieces.append(model(tokens[:, 12:], kv_cache=cache)[0])  # a chunk after decoding
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_kv_cache_refuses_more_positions_than_it_holds():
    model = tiny_model()
    cache = model.new_kv_cache(8)
    model(torch.zeros(1, 8, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match="exceeds|holds 8"):
        model(torch.zeros(1, 1, dtype=torch.long), kv_cache=cache)


def test_perplexity_is_exp_of_the_mean_token_cross_entropy():
    model = tiny_model()
    text = torch.randint(0, 256, (2000,), dtype=torch.uint8)
    windows = eval_windows(text, 16, 400)
    assert len(windows) == 25 and all(w.numel() == 17 for w in windows)
    # Independently: every predicted token's -log p, averaged, exponentiated.
    with torch.no_grad():
        nll = []
        for w in windows:
            logits, _ = model(w[None, :-1].long())
            logp = torch.log_softmax(logits[0].double(), dim=-1)
            nll += (-logp[torch.arange(16), w[1:].long()]).tolist()
    expected = math.exp(sum(nll) / len(nll))
    got = score([runtime.TrainState.plain(model)], windows, batch_size=7)
    assert got["tokens"] == 400
    assert got["perplexity"][0] == pytest.approx(expected, rel=1e-5)


def test_generation_times_prefill_and_every_decode_step():
    model = tiny_model()
    prompts = torch.randint(0, 256, (2, 10))
    result = generate_once(runtime.TrainState.plain(model), prompts, gen_len=5)
    assert len(result["_decode_steps_s"]) == 4 and result["_decode_tokens"] == 8
    assert 0 < result["prefill_latency_s"] <= result["ttft_s"]
    # keys + values, every layer, batch 2, all 15 positions, fp32
    assert result["kv_cache_bytes"] == 2 * TINY.n_layer * 2 * 15 * TINY.n_embd * 4


def test_checkpoint_round_trip_keeps_weights_and_tying(tmp_path):
    model = tiny_model(3)
    weights.save_model(model, tmp_path / "model.safetensors", "tiny")
    source = ModelConfig(source="checkpoint", path=str(tmp_path))
    assert model_source.model_shape(source).as_dict() == TINY.as_dict()
    loaded, origin = weights.load_model(source)
    assert "tiny" in origin
    assert loaded.lm_head.weight is loaded.wte.weight
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_checkpoints_that_cannot_be_used_are_refused_with_a_sentence(tmp_path):
    config = RunConfig(workload="infer")
    config.model.source = "checkpoint"
    config.model.path = str(tmp_path / "nothing.safetensors")
    with pytest.raises(ConfigError, match="model.path: .*does not exist"):
        validate(config)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    config.model.path = str(tmp_path / "junk.safetensors")
    with pytest.raises(ConfigError, match="not a readable safetensors"):
        validate(config)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    config.model.path = str(tmp_path / "foreign.safetensors")
    with pytest.raises(ConfigError, match="no EffiScope model shape"):
        validate(config)
    config.model.source, config.model.run_id = "run", "no-such-run"
    with pytest.raises(ConfigError, match="model.run_id: no run"):
        validate(config)


def test_a_generation_longer_than_the_context_is_refused():
    config = RunConfig(workload="infer")
    config.infer.prompt_len, config.infer.gen_len = 200, 100
    with pytest.raises(ConfigError, match="infer.gen_len: prompt_len \\+ gen_len = 300 exceeds"):
        validate(config)
    config.workload = "train"  # a train run never generates: no complaint
    validate(config)


def _run_cli(capsys, toml_path) -> dict:
    from profiler.cli import main

    code = main(["run", str(toml_path), "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


@pytest.mark.slow
def test_train_saves_weights_and_infer_loads_them_from_the_run(tmp_path, capsys, effiscope_home):
    common = textwrap.dedent("""
        device = "cpu"
        [data]
        max_train_bytes = 100000
    """)
    (tmp_path / "train.toml").write_text('workload = "train"\n' + common + textwrap.dedent("""
        [train]
        batch_size = 8
        seq_len = 32
        eval_interval = 0
        save_checkpoint = true
        [limits]
        steps = 8
        warmup_steps = 1
    """))
    trained = _run_cli(capsys, tmp_path / "train.toml")
    run_dir = effiscope_home / "runs" / trained["run_id"]
    assert trained["checkpoint"] == str(run_dir / "model.safetensors")
    assert model_source.read_header(run_dir / "model.safetensors")[1]["preset"] == "gpt-nano"

    (tmp_path / "infer.toml").write_text('workload = "infer"\n' + common + textwrap.dedent(f"""
        [model]
        source = "run"
        run_id = "{trained['run_id']}"
        [infer]
        batch_size = 2
        prompt_len = 16
        gen_len = 6
        repeats = 3
        warmup_runs = 1
        eval_tokens = 512
        eval_seq_len = 64
        [techniques.prune_magnitude]
        amount = 0.25
    """))
    served = _run_cli(capsys, tmp_path / "infer.toml")
    assert served["workload"] == "infer" and served["measured_steps"] == 3
    assert trained["run_id"] in served["model"]
    figures = served["figures"]
    for key in ("prefill_latency", "ttft", "decode_latency"):
        values = [figures[f"{key}_p{q}_s"]["value"] for q in (50, 90, 99)]
        assert all(v > 0 for v in values) and values == sorted(values)
    assert figures["decode_tokens_per_s"]["unit"] == "tokens/s"
    for key in ("prefill_latency_p50_s", "ttft_p50_s", "decode_tokens_per_s"):  # timed figures
        dist = figures[key]["distribution"]
        assert dist["n"] == 3 and dist["median"] == figures[key]["value"] > 0, key
    assert figures["decode_latency_p50_s"]["distribution"]["n"] == 3 * 5  # every decode step
    assert "scored 2 window(s) per forward pass" in figures["perplexity"]["how"]
    assert 1 < figures["perplexity"]["value"] < 256
    assert figures["nonzero_parameters"]["value"] < figures["parameters"]["value"]
    stream_path = effiscope_home / "runs" / served["run_id"] / "stream.jsonl"
    stream = [json.loads(line) for line in stream_path.read_text().splitlines()]
    phases = [m["phase"] for m in stream if m["type"] == "sample"]
    assert phases == ["warmup", "measure", "measure", "measure", "eval"]
    assert any("pruned" in m.get("message", "") for m in stream if m["type"] == "event")
