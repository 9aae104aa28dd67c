"""GGUF as a model source: a tiny Llama saved with save_pretrained, written to GGUF here with
the gguf package (as llama.cpp's converter lays it out), loads through profiler/models/gguf.py
and gives the logits of the safetensors it came from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from profiler.config import ConfigError, ModelConfig, RunConfig, validate
from profiler.errors import CheckpointError
from profiler.models import source as model_source
from tests import hf_fixtures

gguf = pytest.importorskip("gguf")


def _permute(array, heads: int):
    """llama.cpp's converter reorders q / k rows for its rotary layout; transformers undoes it."""
    rows = array.shape[0]
    return array.reshape(heads, 2, rows // heads // 2, *array.shape[1:]).swapaxes(1, 2).reshape(
        array.shape)


def write_gguf(folder: Path, out: Path, quant: str = "F32", arch: str = "llama",
               tokenizer=None) -> Path:
    import numpy as np
    from safetensors.torch import load_file

    cfg = json.loads((folder / "config.json").read_text())
    tensors = load_file(str(folder / "model.safetensors"))
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg["num_hidden_layers"])
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_name("tiny llama")
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(cfg["num_attention_heads"])
    writer.add_head_count_kv(cfg["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    writer.add_rope_freq_base(float(cfg.get("rope_theta") or 10000.0))
    writer.add_vocab_size(cfg["vocab_size"])
    if tokenizer is not None:
        vocab = tokenizer.get_vocab()
        model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
        writer.add_tokenizer_model("gpt2")
        writer.add_token_list([t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])])
        writer.add_token_types([1] * len(vocab))
        writer.add_token_merges([m if isinstance(m, str) else " ".join(m)
                                 for m in model["merges"]])
        writer.add_bos_token_id(0)
        writer.add_eos_token_id(0)
    qtype = getattr(gguf.GGMLQuantizationType, quant)
    for name, tensor in tensors.items():
        array = tensor.float().numpy()
        if name.endswith("q_proj.weight"):
            array = _permute(array, cfg["num_attention_heads"])
        if name.endswith("k_proj.weight"):
            array = _permute(array, cfg["num_key_value_heads"])
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        array = np.ascontiguousarray(array)
        if array.ndim == 2 and quant != "F32":
            writer.add_tensor(new, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(new, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama")
    tokenizer = hf_fixtures.bpe_tokenizer()
    hf_fixtures.save_llama(folder, tokenizer)
    return folder, tokenizer


def reference_logits(folder: Path, ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    with torch.no_grad():
        return model(ids).logits


def test_an_f32_gguf_gives_the_logits_of_its_safetensors(llama, tmp_path):
    from profiler.models import gguf as loader

    folder, _ = llama
    path = write_gguf(folder, tmp_path / "tiny-f32.gguf")
    config = RunConfig(workload="infer")
    config.model = ModelConfig(source="gguf", path=str(path))
    validate(config)  # the header is enough: shape, sizes, architecture
    shape = loader.shape(config.model)
    assert (shape.n_layer, shape.n_embd, shape.arch) == (2, 32, "llama")
    model, origin = loader.load(config.model)
    assert "GGUF, F32" in origin and "UTF-8 bytes" in origin
    assert loader.vocabulary_id(config.model) == "bytes"
    ids = torch.randint(0, shape.vocab_size, (2, 12))
    with torch.no_grad():
        logits, _ = model.eval()(ids)
    torch.testing.assert_close(logits, reference_logits(folder, ids), rtol=1e-5, atol=1e-5)


def test_a_q8_0_gguf_names_its_quantization_and_stays_close(llama, tmp_path):
    from profiler.models import gguf as loader

    folder, tokenizer = llama
    path = write_gguf(folder, tmp_path / "tiny-q8.gguf", "Q8_0", tokenizer=tokenizer)
    cfg = ModelConfig(source="gguf", path=str(path))
    assert loader.read(str(path)).quantization == "Q8_0"
    model, origin = loader.load(cfg)
    assert "GGUF, Q8_0" in origin
    assert loader.vocabulary_id(cfg).startswith("gguf-tokens-")
    assert model_source.model_name(cfg) == "tiny-q8"
    ids = torch.randint(0, 300, (2, 12))
    with torch.no_grad():
        logits, _ = model.eval()(ids)
    expected = reference_logits(folder, ids)
    assert not torch.equal(logits, expected)  # 8-bit blocks: close, not equal
    assert (logits - expected).abs().max() < 0.02 * expected.abs().max()
    # the file's own tokenizer, rebuilt by transformers, maps text to the same ids
    assert "UTF-8 bytes" not in origin
    text = "def f(x): return x"
    assert model.tokenizer(text).input_ids == tokenizer(text).input_ids


def test_an_architecture_the_loader_cannot_read_gets_a_sentence(llama, tmp_path):
    from profiler.models import gguf as loader

    folder, _ = llama
    path = write_gguf(folder, tmp_path / "odd.gguf", arch="wavenet9")
    with pytest.raises(CheckpointError, match="wavenet9 model, an architecture transformers' "
                                              "GGUF loader cannot read"):
        loader.load(ModelConfig(source="gguf", path=str(path)))
    config = RunConfig(workload="infer")
    config.model = ModelConfig(source="gguf", path=str(path))
    with pytest.raises(ConfigError, match=r"model.path: .*model.source = \"hf\""):
        validate(config)


def test_a_missing_or_damaged_file_is_refused_with_the_fix(tmp_path):
    config = RunConfig(workload="infer")
    config.model = ModelConfig(source="gguf", path=str(tmp_path / "none.gguf"))
    with pytest.raises(ConfigError, match="does not exist; give an existing .gguf file"):
        validate(config)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 20)
    config.model.path = str(bad)
    with pytest.raises(ConfigError, match="not a readable GGUF file"):
        validate(config)


def test_a_gguf_model_is_traced_from_its_header(llama, tmp_path):
    """The memory trace builds a GGUF model from its header alone (no tensor dequantized): its
    weights are the loaded model's, fp32 as load() gives them."""
    from profiler.engine import memory_trace
    from profiler.models import gguf as loader

    folder, _ = llama
    path = write_gguf(folder, tmp_path / "tiny-f32.gguf")
    config = RunConfig(workload="infer", device="cpu")
    config.model = ModelConfig(source="gguf", path=str(path))
    config.infer.batch_size, config.infer.prompt_len, config.infer.gen_len = 2, 8, 4
    result = memory_trace.trace(validate(config), target="cpu")
    model, _ = loader.load(config.model)
    assert result["resident"]["weights"] == sum(p.nbytes for p in model.parameters())
    assert result["resident"]["kv_cache"] > 0 and result["peak_phase"] in ("prefill", "decode")
