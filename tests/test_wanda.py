"""Activation-aware (Wanda) pruning proven on a tiny GPT: a weight on a high-activation input
channel survives where magnitude pruning drops it."""

from __future__ import annotations

import pytest
import torch

from profiler.config import RunConfig
from profiler.measure.capabilities import detect
from profiler.models.gpt import GPT
from profiler.models.presets import GPTShape
from techniques import registry, runtime
from tests.helpers import NullControl

TINY = GPTShape(2, 4, 64, 64, 256, "tiny")
CPU = torch.device("cpu")
CHANNEL = 5  # the planted input channel of block 0's qkv


def planted_state(calibrate: bool = True) -> runtime.TrainState:
    """A GPT whose block-0 LayerNorm scales channel 5 by 50, with tiny qkv weights on it."""
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    with torch.no_grad():
        model.blocks[0].ln_1.weight[CHANNEL] = 50.0
        qkv = model.blocks[0].attn.qkv.weight
        qkv[:, CHANNEL] = 0.004 * torch.sign(torch.randn(qkv.size(0)))
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 256, (2, 32), generator=gen) for _ in range(8)]
    return runtime.TrainState(config=RunConfig(workload="compress", device="cpu"), device=CPU,
                              caps=detect(CPU), model=model, warn=lambda text: None,
                              calibration=(lambda n: batches[:n]) if calibrate else None)


def prune(name: str, **params) -> tuple[runtime.TrainState, str]:
    state = planted_state()
    checked = registry.validate_params(name, params)
    module = runtime.hooks(name)
    report = module.apply(state, checked)
    module.finalize(state, checked)
    return state, report


def test_planted_high_activation_channel_is_kept_where_magnitude_pruning_drops_it():
    magnitude, _ = prune("prune_magnitude", amount=0.5)
    wanda, report = prune("prune_wanda", amount=0.5)
    column = lambda state: state.model.blocks[0].attn.qkv.weight[:, CHANNEL]  # noqa: E731
    assert (column(magnitude) == 0).all()  # the smallest weights of the layer: all dropped
    assert (column(wanda) != 0).all()  # times a 50x activation norm: all kept
    assert "calibration batches" in report
    qkv = wanda.model.blocks[0].attn.qkv.weight
    assert ((qkv == 0).sum(dim=1) == qkv.size(1) // 2).all()  # 50 % of every output row
    assert not any(k.endswith(("_orig", "_mask")) for k in wanda.model.state_dict())


def test_wanda_2_4_keeps_two_of_every_four_and_the_planted_channel():
    state, report = prune("prune_wanda", pattern="2:4")
    for name, module in state.model.named_modules():
        if name.startswith("blocks.") and isinstance(module, torch.nn.Linear):
            groups = module.weight.view(module.weight.size(0), -1, 4)
            assert ((groups != 0).sum(-1) == 2).all(), name
    assert (state.model.blocks[0].attn.qkv.weight[:, CHANNEL] != 0).all()
    assert "2:4" in report


def test_wanda_without_calibration_text_says_what_to_use():
    state = planted_state(calibrate=False)
    with pytest.raises(runtime.Unsupported, match="prune_magnitude"):
        runtime.hooks("prune_wanda").apply(state, registry.validate_params("prune_wanda", {}))


def test_a_compress_run_prunes_by_activation_on_calibration_text(tmp_path):
    """Through the one engine: calibration batches come from the run's text, the masks are
    folded in (finalize), and half of every block Linear is zero."""
    from profiler.config import ModelConfig, validate
    from profiler.engine import weights
    from profiler.engine.workloads import compress as workload

    torch.manual_seed(0)
    weights.save_model(GPT(TINY), tmp_path / "model.safetensors", "tiny")
    config = RunConfig(workload="compress", device="cpu",
                       techniques={"prune_wanda": {"amount": 0.5, "calibration_batches": 2}})
    config.model = ModelConfig(source="checkpoint", path=str(tmp_path))
    config.data.max_train_bytes = 50_000
    config.train.batch_size, config.train.seq_len = 2, 32
    config.infer.prompt_len, config.infer.gen_len = 8, 4
    config.infer.repeats, config.infer.warmup_runs = 2, 1
    config.infer.eval_tokens, config.infer.eval_seq_len = 256, 32
    validate(config)
    messages: list[dict] = []
    summary = workload.run(config, messages.append, NullControl())
    rows = {row["key"]: row for row in summary["comparison"]}
    linear = TINY.n_layer * 12 * TINY.n_embd * TINY.n_embd
    dropped = rows["nonzero_parameters"]["baseline"] - rows["nonzero_parameters"]["compressed"]
    assert dropped == pytest.approx(linear / 2, rel=0.02)
    events = " ".join(m.get("message", "") for m in messages if m["type"] == "event")
    assert "2 calibration batches, 128 tokens" in events
    assert "made permanent" in events
