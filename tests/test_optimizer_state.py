"""How many bytes an optimizer's state holds, and what the prediction says it will, against the
libraries' own tensors: torchao's block-wise quantized AdamW states (created by torchao's own
code, on CPU) and a peft LoRA model's trainable tensors, gradients and AdamW state."""

from __future__ import annotations

import pytest
import torch

from profiler.config import RunConfig
from profiler.figures import theory
from profiler.models.gpt import GPT
from profiler.models.presets import GPT_PRESETS
from techniques.optimizer import predicted_state_bytes, state_bytes, trained_numels
from tests.helpers import run_config

SMALL = {"batch_size": 2, "seq_len": 32, "validated": True}  # gpt-nano, 2 x 32 tokens a step

torchao_optim = pytest.importorskip("torchao.optim")


def _torchao_states(bits: int) -> tuple[torch.optim.Optimizer, list[int]]:
    """A torchao low-bit AdamW whose state is initialised by torchao's own code (its
    _new_buffer, as its step does on the first call), without the compiled update."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.Linear(256, 8))
    kind = torchao_optim.AdamW8bit if bits == 8 else torchao_optim.AdamW4bit
    optimizer = kind(model.parameters(), lr=1e-3)
    for param in model.parameters():
        state = optimizer.state[param]
        state["step"] = torch.tensor(0.0)
        state["exp_avg"] = optimizer._new_buffer(param, True)
        state["exp_avg_sq"] = optimizer._new_buffer(param, False)
    return optimizer, [p.numel() for p in model.parameters()]


@pytest.mark.parametrize("bits", [8, 4])
def test_state_bytes_count_torchaos_quantized_states_by_their_real_storage(bits):
    optimizer, numels = _torchao_states(bits)
    quantized = [v for s in optimizer.state.values() for v in s.values()
                 if type(v) not in (torch.Tensor, torch.nn.Parameter)]
    assert len(quantized) == 2  # the 256 x 256 weight's two moments; the rest stay fp32
    own = 0  # torchao's own parts of each state: codes, block scales, lookup table
    for per_param in optimizer.state.values():
        for value in per_param.values():
            if any(value is q for q in quantized):
                own += sum(getattr(value, name).nbytes for name in type(value).tensor_attrs)
            else:
                own += value.nbytes
    assert state_bytes(optimizer) == own
    fp32 = sum(2 * 4 * n + 4 for n in numels)
    assert state_bytes(optimizer) < fp32 / (3 if bits == 8 else 5)  # not the fp32 size
    predicted, how = predicted_state_bytes(numels, "adamw", 0.9, {"bits": bits,
                                                                  "backend": "torchao"})
    assert predicted == own and f"{bits}-bit" in how


def test_state_bytes_count_a_storage_two_states_share_once():
    """A view or a shared table is one storage: counted once."""
    shared = torch.zeros(1024)

    class Holder:
        state = {0: {"a": shared, "b": shared[:512], "step": torch.tensor(1.0)}}

    assert state_bytes(Holder()) == 1024 * 4 + 4


@pytest.mark.parametrize("target", ["attention", "mlp", "all-linear"])
def test_lora_prediction_counts_only_peft_adapters_as_trained(target):
    """The prediction of a LoRA run: gradients and AdamW state of the adapters peft adds, each
    to the byte, weights with the adapters beside the frozen base; activations n/a (they
    depend on which layers train) instead of a full fine-tune's."""
    from techniques import lora, registry

    torch.manual_seed(0)
    model = GPT(GPT_PRESETS["gpt-nano"])
    base = sum(p.numel() for p in model.parameters())
    params = registry.validate_params("lora", {"rank": 4, "alpha": 8.0, "dropout": 0.0,
                                               "target": target})
    lora.inject(model, params)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-3)
    x = torch.randint(0, 256, (2, 32))
    model(x, x)[1].backward()
    optimizer.step()
    grads = sum(p.grad.nbytes for p in model.parameters() if p.grad is not None)

    predicted = theory.predict_for_config(run_config(**SMALL, techniques={"lora": params}), 1)
    assert sorted(theory.lora_tensor_numels(GPT_PRESETS["gpt-nano"], 4, target)) == sorted(
        p.numel() for p in trained)
    assert predicted["gradients"] == grads
    assert predicted["optimizer_states"] == state_bytes(optimizer)
    assert predicted["weights"] == sum(p.nbytes for p in model.parameters())
    assert predicted["activations"] is None and predicted["total"] is None
    assert "frozen base" in predicted["activations_how"]
    full = theory.predict_for_config(run_config(**SMALL), 1)
    assert full["gradients"] == base * 4 > 5 * predicted["gradients"]  # was counted as trained
    # Read from the built model (as the worker does): the same figures.
    from_model = theory.predict_for_config(run_config(**SMALL, techniques={"lora": params}), 1,
                                           trained_numels(optimizer))
    assert from_model["gradients"] == grads
    assert from_model["optimizer_states"] == state_bytes(optimizer)


def test_a_full_run_predicts_every_parameter_and_torch_optims_real_state():
    shape = GPT_PRESETS["gpt-nano"]
    assert sum(theory.parameter_numels(shape)) == shape.parameter_count()
    assert len(theory.parameter_numels(shape)) == theory.parameter_tensor_count(shape)
    torch.manual_seed(0)
    model = GPT(shape)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 256, (2, 32))
    model(x, x)[1].backward()
    optimizer.step()
    predicted = theory.predict_for_config(run_config(**SMALL), 1, trained_numels(optimizer))
    assert predicted["optimizer_states"] == state_bytes(optimizer)
    assert predicted["activations"] is not None  # nothing frozen: predicted op by op
    low = theory.predict_for_config(
        run_config(**SMALL, techniques={"optimizer_low_bit": {"bits": 8}}), 1)
    numels = theory.parameter_numels(shape)
    assert low["optimizer_states"] == theory.low_bit_adamw_bytes(numels, 8) + 4 * len(numels)
    assert low["optimizer_states"] < predicted["optimizer_states"] / 3


def test_a_hugging_face_lora_estimate_says_n_a_until_the_model_is_built():
    config = RunConfig(device="cpu", techniques={"lora": {}})
    config.model.source = "hf-config"
    config.model.arch.name = "llama"
    config.model.arch.n_layer, config.model.arch.n_head, config.model.arch.n_embd = 2, 4, 64
    config.model.arch.vocab_size = 512
    predicted = theory.predict_for_config(config, 1)
    assert predicted["gradients"] is None and predicted["optimizer_states"] is None
    assert "once it is built" in predicted["optimizer_how"]
    built = theory.predict_for_config(config, 1, [4 * 64, 64 * 4] * 4)
    assert built["gradients"] == 4 * 2 * 4 * 256
    assert built["optimizer_states"] == 2 * 4 * 2 * 4 * 256 + 4 * 8


@pytest.mark.slow
def test_an_8_bit_adamw_runs_summary_measures_and_predicts_its_real_state():
    """The run's own figures: measured from torchao's state tensors and predicted from the
    config, both the 8-bit size (they were the fp32 size). torchao compiles its update: slow."""
    from profiler.measure.capabilities import detect
    from techniques import registry
    from tests.helpers import run_train

    if registry.unavailable_reason(registry.get("optimizer_low_bit"), {"bits": 8,
                                   "backend": "torchao"}, detect("cpu")):
        pytest.skip("no torchao or no C++ compiler for torch.compile on this machine")
    summary, _ = run_train({"optimizer_low_bit": {"bits": 8}}, steps=2)
    figures = summary["figures"]
    measured = figures["optimizer_state_bytes"]["value"]
    assert measured == figures["predicted_optimizer_state_bytes"]["value"]
    assert "8-bit" in figures["predicted_optimizer_state_bytes"]["how"]
    assert measured < 2 * figures["gradient_bytes"]["value"] / 3  # fp32 AdamW: 2x the grads
