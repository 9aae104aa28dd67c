"""CUDA paths of the techniques, proved on the CPU: what each sends to torch / torchao is
checked through fakes and stubs (a CUDA device object, a recording quantize_, a compiled-state
stub), so a GPU run meets no surprise the host side could have caught (issue 32). What only a
GPU can tell is in profiler/doctor_checks_techniques.py."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from profiler.config import RunConfig
from profiler.errors import Unsupported
from profiler.models.gpt import GPT
from profiler.models.presets import GPTShape
from techniques import quantize_weight_only as wo
from techniques import registry, runtime

TINY = GPTShape(2, 4, 64, 64, 256, "tiny")
CUDA = torch.device("cuda")  # a device object only: nothing is allocated on it


def cuda_state(techniques: dict | None = None, workload: str = "compress",
               warnings: list | None = None) -> runtime.TrainState:
    """A state that says "cuda" with a tiny CPU model: apply() takes its CUDA branch, and every
    call into torch / torchao that would need a GPU is faked by the test."""
    torch.manual_seed(0)
    config = RunConfig(workload=workload, device="cuda", techniques=techniques or {})
    caps = {"cuda": True, "cuda_capability": 9.0, "bf16": True, "packages": ["torchao"]}
    sink = warnings if warnings is not None else []
    return runtime.TrainState(config=config, device=CUDA, caps=caps, model=GPT(TINY).eval(),
                              warn=sink.append)


class _Packed(torch.Tensor):
    """Stands for a torchao weight subclass (what quantize_ leaves in a converted layer)."""


def recording_quantize(calls: list):
    """A quantize_ that records its config and marks the weights its filter picks as packed."""

    def quantize_(model, config, filter_fn=None):
        calls.append(config)
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and (filter_fn is None or filter_fn(module, name)):
                module.weight = torch.nn.Parameter(module.weight.detach().as_subclass(_Packed),
                                                   requires_grad=False)
    return quantize_


# --- 1. int4 weight-only: tinygemm packing, missing kernel packages refused --------------------
def test_int4_asks_torchao_for_the_tinygemm_packing_and_says_in_features_are_padded(monkeypatch):
    import torchao.quantization as tq

    calls: list = []
    monkeypatch.setattr(tq, "quantize_", recording_quantize(calls))
    state = cuda_state()
    report = wo.apply(state, registry.validate_params("quantize_weight_only",
                                                      {"bits": 4, "group_size": 64}))
    (config,) = calls
    assert isinstance(config, tq.Int4WeightOnlyConfig)
    assert config.int4_packing_format == "tile_packed_to_4d" and config.group_size == 64
    assert "converted 8 Linear layers to int4" in report
    assert "padded to a multiple of 1024" in report  # width 64 and 256: padded
    assert next(state.model.parameters()).dtype == torch.bfloat16  # tinygemm takes bf16


def test_int4_on_a_torchao_without_the_packing_parameter_keeps_its_default():
    @dataclasses.dataclass
    class OlderInt4Config:  # torchao <= 0.13: a layout argument, tinygemm by default
        group_size: int = 128
        layout: str = "tensor_core_tiled"

    config = wo.int4_config(OlderInt4Config, 32)
    assert config == OlderInt4Config(group_size=32)


@pytest.mark.parametrize(("error", "package", "pip"), [
    (ImportError("Requires mslk >= 1.0.0"), "mslk", "mslk-cuda"),  # torchao 0.18's plain int4
    (ImportError("Requires fbgemm-gpu-genai >= 1.2.0"), "fbgemm-gpu-genai", "fbgemm-gpu-genai"),
    (ModuleNotFoundError("No module named 'mslk.quantize'", name="mslk.quantize"), "mslk",
     "mslk-cuda"),
])
def test_a_missing_kernel_package_is_refused_with_its_name_not_a_crash(monkeypatch, error,
                                                                       package, pip):
    import torchao.quantization as tq

    def quantize_(model, config, filter_fn=None):
        raise error

    monkeypatch.setattr(tq, "quantize_", quantize_)
    with pytest.raises(Unsupported, match=f"Python package {package}, .*pip install {pip}.*"
                                          "choose bits = 8"):
        wo.apply(cuda_state(), registry.validate_params("quantize_weight_only", {"bits": 4}))


def test_layers_torchao_leaves_unpacked_are_not_counted_as_converted(monkeypatch):
    import torchao.quantization as tq

    def quantize_(model, config, filter_fn=None):  # converts nothing, as for a bad group size
        return model

    monkeypatch.setattr(tq, "quantize_", quantize_)
    report = wo.apply(cuda_state(), registry.validate_params("quantize_weight_only",
                                                             {"bits": 4, "group_size": 256}))
    assert "converted 0 Linear layers" in report
    assert "blocks.0.attn.qkv (in_features not a multiple of 256)" in report
