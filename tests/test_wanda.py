"""Activation-aware (Wanda) pruning proven on a tiny GPT: a weight on a high-activation input
channel survives where magnitude pruning drops it."""

from __future__ import annotations

import pytest
import torch

from profiler.capabilities import detect
from profiler.config import RunConfig
from profiler.models.gpt import GPT
from profiler.models.presets import GPTShape
from techniques import registry, runtime

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
    module = runtime.implementation(name)
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
        runtime.implementation("prune_wanda").apply(state, registry.get("prune_wanda").defaults())
