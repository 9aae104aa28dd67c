"""LoRA, QLoRA, fp8 training and low-bit AdamW proven on a tiny CPU GPT (fp8 / QLoRA: their
refusals here, their effect on a GPU that has them)."""

from __future__ import annotations

import json

import pytest
import torch

from profiler.config import RunConfig
from profiler.figures import theory
from profiler.measure.capabilities import detect
from profiler.models.gpt import GPT
from profiler.models.presets import GPTShape
from techniques import registry, runtime
from techniques.optimizer import state_bytes

TINY = GPTShape(n_layer=2, n_head=2, n_embd=64, block_size=32, vocab_size=64, description="test")
CPU = torch.device("cpu")


def make_state(techniques: dict, device=CPU, **train) -> runtime.TrainState:
    torch.manual_seed(0)
    config = RunConfig()
    config.techniques = techniques
    for key, value in train.items():
        setattr(config.train, key, value)
    state = runtime.TrainState(config=config, device=device, caps=detect(device),
                               model=GPT(TINY).to(device), warn=lambda text: None)
    runtime.apply_all(state)
    return state


def steps(state: runtime.TrainState, n: int = 3, repeat: bool = False) -> list[float]:
    """n optimizer steps on random tokens (one fixed batch when repeat: the loss must fall)."""
    losses = []
    for i in range(n):
        gen = torch.Generator().manual_seed(0 if repeat else i)
        data = torch.randint(0, TINY.vocab_size, (4, 17), generator=gen).to(state.device)
        state.optimizer.zero_grad()
        loss = state.forward_model(data[:, :-1], data[:, 1:])[1]
        loss.backward()
        state.optimizer.step()
        losses.append(loss.item())
    return losses


# --- LoRA ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("target, layers", [("attention", ("attn.qkv", "attn.proj")),
                                            ("mlp", ("mlp.fc", "mlp.proj")),
                                            ("all-linear", ("attn.qkv", "attn.proj", "mlp.fc",
                                                            "mlp.proj"))])
def test_lora_trains_only_the_adapters(target, layers):
    state = make_state({"lora": {"rank": 4, "target": target}}, learning_rate=1e-2)
    adapters = {n for n, p in state.model.named_parameters() if p.requires_grad}
    assert adapters and all(".lora_A." in n or ".lora_B." in n for n in adapters)
    assert {n.split(".lora_")[0].split(".", 2)[2] for n in adapters} == set(layers)
    before = {n: p.detach().clone() for n, p in state.model.named_parameters()}
    steps(state, 3)
    changed = {n for n, p in state.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == adapters  # every adapter moved, not one base weight did
    assert "trainable parameters" in state.reports["lora"]


def test_lora_shrinks_optimizer_state_by_the_trainable_share():
    full = make_state({})
    steps(full, 1)
    adapted = make_state({"lora": {"rank": 2, "target": "all-linear"}})
    steps(adapted, 1)
    trainable = sum(p.numel() for p in adapted.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in full.model.parameters())
    tensors = sum(1 for p in adapted.model.parameters() if p.requires_grad)
    # Two fp32 moments a trainable parameter and a 4-byte step a trainable tensor: no more.
    assert state_bytes(adapted.optimizer) == 8 * trainable + 4 * tensors
    assert state_bytes(full.optimizer) == 8 * total + 4 * len(list(full.model.parameters()))
    assert trainable / total < 0.15
    grads = sum(p.grad.numel() for p in adapted.model.parameters() if p.grad is not None)
    assert grads == trainable  # frozen weights hold no gradient


def test_lora_keeps_the_models_own_forward_and_starts_from_it():
    plain = GPT(TINY)
    state = make_state({"lora": {"rank": 4, "target": "all-linear", "dropout": 0.1}})
    plain.load_state_dict({k.replace(".base_layer", ""): v for k, v in
                           state.model.state_dict().items() if "lora_" not in k})
    x = torch.randint(0, TINY.vocab_size, (2, 8))
    assert isinstance(state.model, GPT) and state.model.shape is TINY
    state.model.eval()
    torch.testing.assert_close(state.model(x)[0], plain(x)[0])  # B starts at zero


def test_lora_saves_adapter_and_merged_weights_that_load(tmp_path):
    from profiler.config import ModelConfig
    from profiler.engine import weights
    from techniques import lora

    state = make_state({"lora": {"rank": 4, "alpha": 8.0, "target": "attention"}},
                       learning_rate=1e-2)
    steps(state, 3)
    state.config.train.save_checkpoint = True
    state.config.output_dir = str(tmp_path)
    events = []
    written = lora.save(state, 3, lambda text: events.append({"message": text}),
                        lambda model: weights.save_run_weights(state.config, model, 3,
                                                               events.append))
    assert len(written) == 2 and all("saved to" in e["message"] for e in events)
    from safetensors.torch import load_file

    adapter = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert adapter and all("lora_A" in k or "lora_B" in k for k in adapter)
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8.0
    loaded, _ = weights.load_model(ModelConfig(source="checkpoint", path=str(tmp_path)))
    x = torch.randint(0, TINY.vocab_size, (2, 8))
    state.model.eval()
    torch.testing.assert_close(loaded.eval()(x)[0], state.model(x)[0], rtol=1e-4, atol=1e-5)
    torch.manual_seed(0)
    plain = GPT(TINY).eval()  # the untrained base: the merged weights differ from it
    assert not torch.allclose(loaded(x)[0], plain(x)[0])


def test_lora_refused_for_an_encoder_and_without_peft():
    info = registry.get("lora")
    assert "encoder" in registry.unavailable_reason(info, info.defaults(),
                                                    {"model_kind": "hf-encoder",
                                                     "packages": ["peft"]})
    assert "pip install peft" in registry.unavailable_reason(info, info.defaults(), {})


def test_qlora_greyed_out_without_cuda_and_bitsandbytes():
    info = registry.get("qlora")
    assert "CUDA" in registry.unavailable_reason(info, info.defaults(), {"cuda": False})
    assert "bitsandbytes" in registry.unavailable_reason(
        info, info.defaults(), {"cuda": True, "packages": ["peft"]})
    with pytest.raises(runtime.Unsupported, match="cannot be combined"):
        config = RunConfig(techniques={"lora": {}, "qlora": {}})
        runtime.check_all(config, {"cuda": True, "packages": ["peft", "bitsandbytes"]})


# --- fp8 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("caps, words", [({"cuda": False, "packages": ["torchao"]}, "CUDA"),
                                         ({"cuda": True, "cuda_capability": 8.0,
                                           "packages": ["torchao"]}, "8.9 or newer"),
                                         ({"cuda": True, "cuda_capability": 9.0}, "torchao")])
def test_fp8_is_greyed_out_where_the_gpu_has_no_fp8(caps, words):
    info = registry.get("float8_training")
    assert words in registry.unavailable_reason(info, info.defaults(), caps)


def test_fp8_is_available_on_hopper_and_picks_layers_with_dims_of_16():
    from techniques.float8_training import eligible

    info = registry.get("float8_training")
    caps = {"cuda": True, "cuda_capability": 9.0, "packages": ["torchao"]}
    assert registry.unavailable_reason(info, info.defaults(), caps) is None
    odd = GPT(GPTShape(n_layer=1, n_head=2, n_embd=24, block_size=8, vocab_size=32,
                       description="odd"))
    names, skipped = eligible(odd)
    assert names == set()  # 24 is no multiple of 16: every layer stays in high precision
    assert len(skipped) == 5  # 4 block layers + the tied lm_head
    assert len(eligible(GPT(TINY))[0]) == 4 * TINY.n_layer


@pytest.mark.gpu
def test_fp8_converts_and_trains_on_a_capable_gpu():
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("needs a CUDA GPU of compute capability 8.9+")
    from torchao.float8 import Float8Linear

    state = make_state({"float8_training": {}}, device=torch.device("cuda"), learning_rate=3e-3)
    converted = [m for m in state.model.modules() if isinstance(m, Float8Linear)]
    assert len(converted) == 4 * TINY.n_layer
    losses = steps(state, 20)
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


# --- low-bit optimizer states --------------------------------------------------------------------
def test_low_bit_state_prediction_follows_torchaos_layout():
    assert theory.low_bit_state_bytes(65536, 32) == 65536 * 4
    assert theory.low_bit_state_bytes(65536, 8) == 65536 + 65536 // 256 * 4 + 256 * 4
    assert theory.low_bit_state_bytes(65536, 4) == 65536 // 2 + 65536 // 128 * 4 + 16 * 4
    assert theory.low_bit_state_bytes(1000, 8) == 4000  # small tensors keep fp32 states
    big = [4096 * 256]
    assert theory.low_bit_adamw_bytes(big, 32) / theory.low_bit_adamw_bytes(big, 8) > 3.9


def test_low_bit_refusals_say_what_to_do():
    info = registry.get("optimizer_low_bit")
    defaults = info.defaults()
    assert "C++ compiler" in registry.unavailable_reason(info, defaults,
                                                         {"packages": ["torchao"]})
    assert "pip install torchao" in registry.unavailable_reason(info, defaults, {})
    assert "no 4-bit AdamW" in registry.unavailable_reason(
        info, {"bits": 4, "backend": "bitsandbytes"}, {"packages": ["bitsandbytes"]})
    # The plan asks the technique's rule (config_check) before anything is built.
    with pytest.raises(runtime.Unsupported, match="optimizer.algorithm is sgd; set "
                       "\\[techniques.optimizer\\] algorithm = \"adamw\""):
        make_state({"optimizer": {"algorithm": "sgd"}, "optimizer_low_bit": {}})


def test_low_bit_replaces_the_optimizer_after_it_is_built():
    order = [t.name for t in registry.all_techniques() if t.stage == "optimizer"]
    assert order.index("optimizer") < order.index("optimizer_low_bit")


@pytest.mark.slow
@pytest.mark.parametrize("bits", [8, 4])
def test_low_bit_state_bytes_match_the_prediction(bits):
    """torchao compiles its update once per tensor shape: about a minute on two cores."""
    if registry.unavailable_reason(registry.get("optimizer_low_bit"), {"bits": bits,
                                   "backend": "torchao"}, detect(CPU)):
        pytest.skip("no torchao or no C++ compiler for torch.compile on this machine")
    fp32 = make_state({}, learning_rate=3e-3)
    fp32_losses = steps(fp32, 6, repeat=True)
    low = make_state({"optimizer_low_bit": {"bits": bits}}, learning_rate=3e-3)
    losses = steps(low, 6, repeat=True)
    numels = [p.numel() for p in low.model.parameters()]
    predicted = theory.low_bit_adamw_bytes(numels, bits) + 4 * len(numels)  # + a step each
    measured = state_bytes(low.optimizer)  # the one home: torchao's real state storage
    assert abs(measured - predicted) <= 0.05 * predicted, (measured, predicted)
    assert measured < state_bytes(fp32.optimizer) / (2.5 if bits == 8 else 3.5)
    assert isinstance(low.optimizer.param_groups[0]["lr"], float)
    assert losses[-1] < losses[0] and abs(losses[-1] - fp32_losses[-1]) < 0.1 * fp32_losses[-1]


# --- metadata and listing ------------------------------------------------------------------------
NEW = ("lora", "qlora", "float8_training", "optimizer_low_bit", "prune_wanda")


def test_new_metadata_imports_without_torch_peft_or_torchao():
    import subprocess
    import sys

    code = ("import sys; from techniques import registry; "
            f"[registry.get(n) for n in {NEW!r}]; "
            "heavy = [m for m in ('torch', 'peft', 'torchao', 'bitsandbytes', 'gguf') "
            "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_effiscope_techniques_lists_them_with_reasons(capsys):
    from profiler.cli import main

    assert main(["techniques", "--device", "cpu", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)["techniques"]}
    assert set(NEW) <= set(rows)
    assert not rows["float8_training"]["available"] and "CUDA" in rows["float8_training"]["reason"]
    assert not rows["qlora"]["available"] and "CUDA" in rows["qlora"]["reason"]
    assert rows["lora"]["available"] and rows["prune_wanda"]["available"]


@pytest.mark.parametrize("target", ["attention", "mlp", "all-linear"])
def test_theory_predicts_the_lora_parameters(target):
    state = make_state({"lora": {"rank": 3, "target": target}})
    trainable = sum(p.numel() for p in state.model.parameters() if p.requires_grad)
    assert trainable == theory.lora_trainable_parameters(TINY, 3, target)


@pytest.mark.parametrize("arch, attention", [("llama", {"q_proj", "k_proj", "v_proj", "o_proj"}),
                                             ("gpt2", {"c_attn", "c_proj"})])
def test_lora_adapts_hugging_face_models_in_place(arch, attention):
    """llama's nn.Linear and GPT-2's Conv1D projections both get adapters; the wrapper keeps
    its interface (shape, blocks, forward returning logits and loss)."""
    from profiler.config import ArchConfig, ModelConfig
    from profiler.models import hf
    from techniques import lora

    torch.manual_seed(0)
    cfg = ModelConfig(source="hf-config", arch=ArchConfig(name=arch, n_layer=2, n_head=2,
                                                          n_embd=32, block_size=64))
    model, _ = hf.load(cfg)
    targets = lora.inject(model, registry.validate_params(
        "lora", {"rank": 2, "alpha": 4.0, "dropout": 0.0, "target": "attention"}))
    assert {name.rsplit(".", 1)[1] for name in targets} == attention
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    ids = torch.randint(0, 256, (2, 8))
    _, loss = model(ids, ids)
    loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" not in n)
    assert len(model.blocks) == 2
