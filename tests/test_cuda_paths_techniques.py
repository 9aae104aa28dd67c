"""CUDA paths of the techniques, proved on the CPU: what each sends to torch / torchao is
checked through fakes and stubs (a CUDA device object, a recording quantize_, a compiled-state
stub), so a GPU run meets no surprise the host side could have caught (issue 32). What only a
GPU can tell is in profiler/cli/doctor/checks_techniques.py."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from profiler.cli.doctor.checks_techniques import recording_sdpa
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


# --- 4. forced SDPA backends: the cached path passes no mask; fp32 + flash refused -------------
@torch.no_grad()
def test_cached_generation_passes_no_mask_and_equals_the_uncached_model():
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    tokens = torch.randint(0, TINY.vocab_size, (2, 14))
    with recording_sdpa() as calls:
        cache = model.new_kv_cache(14)
        cached = [model(tokens[:, :8], kv_cache=cache)[0]]  # prefill from an empty cache
        prefill_calls = list(calls)
        for position in range(8, 14):  # one-token decode steps
            cached.append(model(tokens[:, position:position + 1], kv_cache=cache)[0])
        decode_calls = calls[len(prefill_calls):]
    full = model(tokens)[0]  # the training forward, no cache
    assert torch.allclose(cached[0], full[:, :8], atol=1e-5)
    for step, logits in enumerate(cached[1:]):
        assert torch.allclose(logits[:, 0], full[:, 8 + step], atol=1e-5)
    assert len(prefill_calls) == TINY.n_layer and len(decode_calls) == 6 * TINY.n_layer
    assert all(c["mask"] is None and c["is_causal"] and c["queries"] == c["keys"] == 8
               for c in prefill_calls)
    assert all(c["mask"] is None and not c["is_causal"] and c["queries"] == 1
               for c in decode_calls)
    assert [c["keys"] for c in decode_calls[::TINY.n_layer]] == list(range(9, 15))


@torch.no_grad()
def test_a_chunk_appended_to_a_filled_cache_keeps_its_mask_and_the_same_result():
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    tokens = torch.randint(0, TINY.vocab_size, (1, 12))
    cache = model.new_kv_cache(12)
    model(tokens[:, :5], kv_cache=cache)
    with recording_sdpa() as calls:
        chunk = model(tokens[:, 5:], kv_cache=cache)[0]  # 7 queries after 5 cached positions
    assert len(calls) == TINY.n_layer
    assert all(c["mask"] is not None and c["mask"].shape == (7, 12) for c in calls)
    assert torch.allclose(chunk, model(tokens)[0][:, 5:], atol=1e-5)


def test_the_workload_generation_path_never_passes_a_mask():
    from profiler.engine.workloads.generation import generate_once

    state = runtime.TrainState.plain(GPT(TINY).eval())
    with recording_sdpa() as calls:
        result = generate_once(state, torch.randint(0, TINY.vocab_size, (2, 6)), gen_len=4)
    assert result["_decode_tokens"] == 2 * 3
    assert len(calls) == 4 * TINY.n_layer and all(c["mask"] is None for c in calls)


def _validated(workload: str, techniques: dict) -> RunConfig:
    from profiler.config import validate

    # A CUDA run's config (validation is torch-free: it judges the config, not this machine).
    config = RunConfig(workload=workload, device="cuda", techniques=techniques)
    if workload == "train":
        config.train.seq_len = 32
    return validate(config)


@pytest.mark.parametrize(("workload", "techniques", "words"), [
    ("infer", {"attention": {"backend": "flash"}}, "add \\[techniques.weight_cast\\]"),
    ("infer", {"attention": {"backend": "cudnn"}}, "cudnn SDPA backend has no fp32 kernel"),
    ("compress", {"attention": {"backend": "flash"}, "weight_cast": {}},
     "times the original fp32 model"),
    ("train", {"attention": {"backend": "flash"}}, "set \\[techniques.precision\\] dtype = bf16"),
    ("train", {"attention": {"backend": "flash"}, "precision": {"dtype": "fp32"}},
     "computes attention in fp32"),
])
def test_a_16_bit_only_backend_on_fp32_is_refused_before_the_run(workload, techniques, words):
    from profiler.config import ConfigError

    with pytest.raises(ConfigError, match=f"techniques.attention: .*{words}"):
        _validated(workload, techniques)


@pytest.mark.parametrize(("workload", "techniques"), [
    ("infer", {"attention": {"backend": "flash"}, "weight_cast": {"dtype": "bf16"}}),
    ("infer", {"attention": {"backend": "flash"}, "quantize_weight_only": {"bits": 4}}),
    ("infer", {"attention": {"backend": "efficient"}}),  # efficient has an fp32 kernel
    ("train", {"attention": {"backend": "flash"}, "precision": {"dtype": "bf16"}}),
    ("train", {"attention": {"backend": "cudnn"}, "precision": {"dtype": "fp16"}}),
])
def test_16_bit_backends_on_16_bit_runs_pass_validation(workload, techniques):
    assert _validated(workload, techniques).techniques == techniques


def test_the_cli_exits_2_with_the_sentence_for_flash_on_fp32(tmp_path, capsys):
    from profiler import cli

    path = tmp_path / "flash.toml"
    path.write_text('workload = "infer"\ndevice = "cpu"\n[techniques.attention]\n'
                    'backend = "flash"\n', encoding="utf-8")
    assert cli.main(["run", str(path)]) == 2
    assert "flash SDPA backend has no fp32 kernel" in capsys.readouterr().err


def test_switching_autocast_off_under_flash_is_refused_mid_run():
    state = runtime.TrainState.plain(GPT(TINY), config=RunConfig(workload="train"))
    state.active = registry.in_force({"precision": {"dtype": "bf16"},
                                      "attention": {"implementation": "sdpa", "backend": "flash"}})
    with pytest.raises(runtime.Refused, match="no fp32 kernel.*the run goes on as it was"):
        runtime.change(state, "precision", {"enabled": False})
    with pytest.raises(runtime.Refused, match="no fp32 kernel"):
        runtime.change(state, "precision", {"dtype": "fp32"})
    assert state.active["precision"] == {"dtype": "bf16"}


def test_the_doctors_flash_generation_check_runs_its_host_side_on_a_cpu():
    from profiler.cli.doctor.base import Context
    from profiler.cli.doctor.checks_techniques import check_flash_generation

    figures = check_flash_generation(Context(device=torch.device("cpu"), quick=True))
    assert figures["sdpa_calls"] == 16 * 4 and figures["sdpa_calls_with_mask"] == 0
    assert figures["logits_rel_error_vs_uncached_math"] <= 1e-4
    assert "flash kernel needs CUDA" in figures["summary"]


# --- 5. 2:4 sparsity: the compressed form is made after the weight cast ------------------------
def test_2to4_weights_are_converted_after_the_cast_in_their_16_bit_dtype(monkeypatch):
    import torch.sparse

    seen: list[torch.Tensor] = []

    def to_sparse_semi_structured(weight):  # cuSPARSELt's converter, faked: records its input
        seen.append(weight.detach().clone())
        return weight.detach().as_subclass(_Packed)

    monkeypatch.setattr(torch.sparse, "to_sparse_semi_structured", to_sparse_semi_structured)
    techniques = {"prune_semi_structured": {}, "weight_cast": {"dtype": "bf16"}}
    state = cuda_state(techniques, workload="infer")
    from techniques.registry import INFER_STAGES

    applied = runtime.apply_all(state, runtime.plan(state.config, state.caps, INFER_STAGES))
    assert [a["name"] for a in applied] == ["prune_semi_structured", "prune_semi_structured",
                                            "weight_cast", "prune_semi_structured"]
    assert "8 layers in compressed 2:4 form (bfloat16)" in applied[-1]["report"]
    assert len(seen) == 8 and all(w.dtype == torch.bfloat16 for w in seen)
    for weight in seen:  # masks folded in before: 2 zeros in every 4
        assert ((weight.view(weight.size(0), -1, 4) == 0).sum(-1) >= 2).all()
    converted = [m.weight for n, m in state.model.named_modules()
                 if n.startswith("blocks.") and isinstance(m, torch.nn.Linear)]
    assert all(isinstance(w, _Packed) for w in converted)
    assert runtime.finalize(state) == []  # once only


@pytest.mark.parametrize(("techniques", "words"), [
    ({"prune_semi_structured": {}}, "weights stay fp32; add \\[techniques.weight_cast\\]"),
    ({"prune_semi_structured": {}, "quantize_weight_only": {"bits": 4}}, "a weight has one format"),
    ({"prune_semi_structured": {"layers": "mlp"}, "weight_cast": {},
      "quantize_weight_only": {"layers": "all"}}, "a weight has one format"),
])
def test_2to4_acceleration_that_cannot_work_is_refused_before_the_run(techniques, words):
    from profiler.config import ConfigError

    with pytest.raises(ConfigError, match=f"techniques.prune_semi_structured: .*{words}"):
        _validated("compress", techniques)


@pytest.mark.parametrize("techniques", [
    {"prune_semi_structured": {}, "weight_cast": {"dtype": "fp16"}},
    {"prune_semi_structured": {"accelerate": False}},
    {"prune_semi_structured": {"layers": "attention"}, "quantize_weight_only": {"bits": 4,
                                                                              "layers": "mlp"}},
])
def test_2to4_combinations_that_work_pass_validation(techniques):
    assert _validated("compress", techniques).techniques == techniques


# --- 10. under torch.compile the SDPA backend cannot change mid-run ----------------------------
def compiled_train_state(backend: str = "auto") -> runtime.TrainState:
    """A train state whose model the compile technique has wrapped (a stub: compiled is set,
    nothing is traced), with the attention technique in force."""
    state = runtime.TrainState.plain(GPT(TINY), config=RunConfig(workload="train"))
    state.caps = {"cuda": True, "cuda_capability": 9.0, "bf16": True, "compiler": True}
    params = registry.validate_params("attention", {"implementation": "sdpa", "backend": backend})
    runtime.hooks("attention").apply(state, params)
    state.active = {"attention": params, **registry.in_force({"precision": {"dtype": "bf16"},
                                                             "compile": {}})}
    state.compiled = True
    return state


@pytest.mark.parametrize("params", [{"backend": "efficient"}, {"backend": "flash"},
                                    {"enabled": False}])
def test_a_backend_change_while_compiled_is_refused_and_draws_no_segment(params):
    from profiler.engine.workloads.loop import handle_command

    state = compiled_train_state("cudnn")
    events: list[dict] = []
    changed = handle_command({"type": "set", "technique": "attention", "params": params},
                             state, 7, events.append)
    assert changed == 0  # no segment starts for a change that did not happen
    (event,) = events
    assert event["kind"] == "refused" and "fixed in the compiled graph" in event["message"]
    assert state.active["attention"]["backend"] == "cudnn"
    assert state.sdpa_backends == [torch.nn.attention.SDPBackend.CUDNN_ATTENTION]


def test_while_compiled_a_change_that_keeps_the_backend_still_applies():
    state = compiled_train_state()
    report = runtime.change(state, "attention", {"implementation": "math"})  # a guarded attribute
    assert "explicit softmax" in report and state.model.blocks[0].attn.attention == "math"
    state.compiled = False  # eager: the backend changes
    assert "efficient backend only" in runtime.change(state, "attention",
                                                      {"implementation": "sdpa",
                                                       "backend": "efficient"})


# --- 11. torchao formats that need torch.compile say "eager" when it is missing ----------------
def test_int8_weight_only_warns_that_it_runs_eager_and_int4_does_not(monkeypatch):
    import torchao.quantization as tq

    monkeypatch.setattr(tq, "quantize_", recording_quantize([]))
    warnings: list[str] = []
    report = wo.apply(cuda_state({"quantize_weight_only": {}}, warnings=warnings),
                      registry.validate_params("quantize_weight_only", {}))
    assert "eager mode: int8 weight-only runs slower than its baseline" in report
    assert len(warnings) == 1 and warnings[0] in report
    warnings.clear()
    report = wo.apply(cuda_state({"quantize_weight_only": {"bits": 4}}, warnings=warnings),
                      registry.validate_params("quantize_weight_only", {"bits": 4}))
    assert "eager" not in report and warnings == []  # tinygemm is a fused kernel


@pytest.mark.parametrize(("techniques", "eager"), [
    ({"float8_training": {}}, True),
    ({"float8_training": {}, "compile": {}}, False),
])
def test_fp8_training_says_eager_unless_the_run_compiles(monkeypatch, techniques, eager):
    import torchao.float8

    from techniques import float8_training

    converted: list[str] = []

    def convert_to_float8_training(model, config=None, module_filter_fn=None):
        converted.extend(n for n, m in model.named_modules()
                         if isinstance(m, torch.nn.Linear) and module_filter_fn(m, n))
        return model

    monkeypatch.setattr(torchao.float8, "convert_to_float8_training", convert_to_float8_training)
    warnings: list[str] = []
    report = float8_training.apply(cuda_state(techniques, workload="train", warnings=warnings),
                                   registry.validate_params("float8_training", {}))
    assert len(converted) == 8 and "converted 8 Linear layers" in report
    assert ("eager mode: fp8 training" in report) == eager
    assert len(warnings) == int(eager)
    assert all("add [techniques.compile]" in w for w in warnings)


def test_the_infer_figures_how_text_says_eager_for_int8_weight_only():
    from techniques.compile import eager_how

    assert eager_how(registry.in_force({"quantize_weight_only": {}}), "infer") == \
        "; eager: int8 weight-only without torch.compile"
    assert eager_how(registry.in_force({"quantize_weight_only": {"bits": 4}}), "infer") == ""
    assert eager_how(registry.in_force({"weight_cast": {}}), "compress") == ""


# --- 13. CUDA-graph compile modes: a mark per model call, the loss cloned out of the graph ------
class _StaticLoss(torch.autograd.Function):
    """Returns the loss through one buffer that every call overwrites, as a CUDA graph's static
    output memory is overwritten by its next replay; gradients pass straight through."""

    @staticmethod
    def forward(ctx, loss, buffer):
        buffer.copy_(loss)
        return buffer.view_as(buffer)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _GraphReplay:
    """What torch.compile returns under a CUDA-graph mode, faked on the CPU."""

    def __init__(self, model):
        self.model, self.buffer = model, torch.zeros(())

    def __call__(self, x, y=None):
        logits, loss = self.model(x, y)
        return logits, (None if loss is None else _StaticLoss.apply(loss, self.buffer))


class _Batches:
    def __init__(self, batches):
        self.batches, self.index = batches, 0

    def next(self):
        self.index += 1
        return self.batches[self.index - 1]


@pytest.mark.parametrize(("mode", "marks"), [("reduce-overhead", 2 * 3), ("max-autotune", 2 * 3),
                                             ("default", 0)])
def test_cudagraph_modes_mark_each_model_call_and_keep_each_micro_steps_loss(monkeypatch, mode,
                                                                             marks):
    from profiler.engine.workloads.steps import accumulated_step, lm_loss_of
    from techniques import compile as compile_technique

    calls: list[int] = []
    monkeypatch.setattr(torch, "compile", lambda module, **options: _GraphReplay(module))
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: calls.append(1))
    torch.manual_seed(0)
    model = GPT(TINY)
    state = runtime.TrainState.plain(model, config=RunConfig(workload="train"))
    state.optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    state.base_lr = 0.0  # the weights stay, so every micro-batch's loss is known beforehand
    state.micro_batches = 2
    report = compile_technique.apply(state, registry.validate_params("compile", {"mode": mode}))
    assert ("marks a new cudagraph step" in report) == (mode != "default")
    assert ("gradients of 28 parameters" in report) == (mode != "default")
    batches = [(torch.randint(0, 256, (2, 16)), torch.randint(0, 256, (2, 16))) for _ in range(6)]
    with torch.no_grad():
        eager = [model(x, y)[1].item() for x, y in batches]
    feed = _Batches(batches)
    means = [accumulated_step(state, feed, step, lm_loss_of(state))[0].item()
             for step in (1, 2, 3)]
    assert len(calls) == marks  # one mark before every model call, and only under CUDA graphs
    expected = [(eager[i] + eager[i + 1]) / 2 for i in (0, 2, 4)]
    if mode == "default":  # the fake's overwritten buffer: what an unguarded loop would read
        assert means == pytest.approx([eager[i + 1] for i in (0, 2, 4)], rel=1e-5)
    else:
        assert means == pytest.approx(expected, rel=1e-5)


# --- QLoRA: the merged weights are saved dequantized -------------------------------------------
class _Fake4bit(torch.nn.Module):
    """Stands for a bitsandbytes Linear4bit: packed bytes as its weight, the float weight it
    would dequantize to kept aside."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = torch.nn.Parameter(torch.zeros(linear.weight.numel() // 2, 1,
                                                     dtype=torch.uint8), requires_grad=False)
        self.bias = linear.bias
        self.dequantized = linear.weight.detach().clone()


def test_qlora_saves_merged_weights_dequantized_with_the_adapter_added(monkeypatch, tmp_path):
    from techniques import lora, qlora

    monkeypatch.setattr(qlora, "_bnb_four_bit", lambda: (
        lambda m: isinstance(m, _Fake4bit), lambda m: m.dequantized))
    torch.manual_seed(0)
    model = GPT(TINY)
    lora.inject(model, registry.validate_params("lora", {"target": "attention"}))
    for _, layer in lora.lora_layers(model):
        for b in layer.lora_B.values():  # peft starts B at zero: give the update a value
            torch.nn.init.normal_(b.weight, std=0.1)
    expected = {k: v.clone() for k, v in lora.merged_copy(model).state_dict().items()}
    for _, layer in lora.lora_layers(model):  # now store the bases 4-bit, as QLoRA does
        layer.base_layer = _Fake4bit(layer.base_layer)
    model.blocks[0].mlp.fc = _Fake4bit(model.blocks[0].mlp.fc)  # a 4-bit layer, no adapter
    config = RunConfig(workload="train", output_dir=str(tmp_path))
    config.train.save_checkpoint = True
    state = runtime.TrainState.plain(model, config=config)
    state.active = {"qlora": registry.validate_params("qlora", {"target": "attention"})}
    saved: list[torch.nn.Module] = []
    qlora.save(state, 5, lambda message: None, lambda m: saved.append(m) or "model.safetensors")
    (merged,) = saved
    assert not any(isinstance(m, _Fake4bit) for m in merged.modules())
    weights = merged.state_dict()
    assert set(weights) == set(expected)
    assert all(torch.allclose(weights[k].float(), expected[k].float(), atol=1e-6)
               for k in expected)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


# --- torchao <= 0.17 turned TF32 on process-wide inside quantize_ -------------------------------
def test_quantizing_leaves_the_processes_fp32_matmul_precision_as_it_was(monkeypatch):
    import torchao.quantization as tq

    from techniques import quantize_int8_dynamic
    from techniques.compress_common import target_linears

    def quantize_(model, config, filter_fn=None):  # what torchao 0.10 .. 0.17 did
        torch.set_float32_matmul_precision("high")

    monkeypatch.setattr(tq, "quantize_", quantize_)
    original = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        wo.apply(cuda_state(), registry.validate_params("quantize_weight_only", {}))
        assert torch.get_float32_matmul_precision() == "highest"
        model = GPT(TINY)
        quantize_int8_dynamic._apply_torchao(model, *target_linears(model))  # its CUDA path
        assert torch.get_float32_matmul_precision() == "highest"
    finally:
        torch.set_float32_matmul_precision(original)


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_a_hugging_face_models_cached_generation_passes_sdpa_no_mask(name):
    """transformers skips its mask for a prefill from an empty cache and a one-token step (no
    padding), so backend = flash can run an HF model's generation too."""
    from profiler.config import ArchConfig, ModelConfig
    from profiler.engine import weights
    from profiler.engine.workloads.generation import generate_once

    arch = ArchConfig(name=name, n_layer=2, n_head=4, n_embd=32, block_size=64)
    model, _ = weights.load_model(ModelConfig(source="hf-config", arch=arch), torch.device("cpu"),
                                  0.0)
    with recording_sdpa() as calls:
        generate_once(runtime.TrainState.plain(model.eval()), torch.randint(0, 256, (2, 8)), 4)
    assert len(calls) == 4 * 2 and all(c["mask"] is None for c in calls)
    assert [c["is_causal"] for c in calls[::2]] == [True, False, False, False]


class _StaticGrad(torch.autograd.Function):
    """Identity forward; backward hands out its gradient through one buffer every call
    overwrites, as a tensor object of its own (autograd may adopt it as .grad without a copy),
    as the backward of a CUDA graph does."""

    buffer: torch.Tensor | None = None

    @staticmethod
    def forward(ctx, weight):
        return weight.view_as(weight)

    @staticmethod
    def backward(ctx, grad):
        if _StaticGrad.buffer is None or _StaticGrad.buffer.shape != grad.shape:
            _StaticGrad.buffer = torch.zeros_like(grad)
        _StaticGrad.buffer.copy_(grad)
        return _StaticGrad.buffer.view_as(grad)


class _Regression(torch.nn.Module):
    """A Linear layer whose weight gradient comes back through _StaticGrad."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1, bias=False)

    def forward(self, x, y=None):
        out = torch.nn.functional.linear(x, _StaticGrad.apply(self.linear.weight))
        return out, ((out - y) ** 2).mean()


@pytest.mark.parametrize(("mode", "exact"), [("reduce-overhead", True), ("default", False)])
def test_cudagraph_modes_keep_each_micro_steps_gradient(monkeypatch, mode, exact):
    from profiler.engine.workloads.steps import accumulated_step, lm_loss_of
    from techniques import compile as compile_technique

    monkeypatch.setattr(torch, "compile", lambda module, **options: module)
    torch.manual_seed(0)
    batches = [(torch.randn(8, 4), torch.randn(8, 1)) for _ in range(2)]
    start = torch.randn(1, 4)

    def weight_after_one_step(graphed: bool) -> torch.Tensor:
        model = _Regression()
        with torch.no_grad():
            model.linear.weight.copy_(start)
        state = runtime.TrainState.plain(model, config=RunConfig(workload="train"))
        state.optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        state.base_lr, state.micro_batches = 1.0, 2
        if graphed:
            compile_technique.apply(state, registry.validate_params("compile", {"mode": mode}))
        accumulated_step(state, _Batches(list(batches)), 1, lm_loss_of(state))
        return model.linear.weight.detach().clone()

    reference = start - sum(2 * ((x @ start.T - y) * x).mean(0) for x, y in batches) / 2
    # Unguarded, the second micro-step's backward overwrites the first one's adopted .grad:
    assert not torch.allclose(weight_after_one_step(graphed=False), reference, atol=1e-3)
    assert torch.allclose(weight_after_one_step(graphed=True), reference, atol=1e-6) == exact
