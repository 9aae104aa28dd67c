"""Tiny Hugging Face checkpoints built on the spot: nothing is downloaded, ever.

Tokenizers are trained here with the `tokenizers` library on a few standard-library files;
models are written with `save_pretrained` (safetensors) from transformers' own config classes
(not through EffiScope's code under test). Each folder is what a user would have on disk.
"""

from __future__ import annotations

import json
import os
import sysconfig
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"

STDLIB = Path(sysconfig.get_paths()["stdlib"])
TRAINING_FILES = ("textwrap.py", "string.py", "shlex.py", "fnmatch.py", "glob.py")


def _texts() -> list[str]:
    return [(STDLIB / name).read_text(encoding="utf-8") for name in TRAINING_FILES]


def bpe_tokenizer(vocab_size: int = 320):
    """A byte-level BPE tokenizer (GPT-2 / Llama style) trained on standard-library text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_texts(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def wordpiece_tokenizer(vocab_size: int = 400):
    """A BERT-style WordPiece tokenizer trained on standard-library text."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special,
                                        show_progress=False)
    tok.train_from_iterator(_texts(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def save_gpt2(folder: Path, tokenizer, seed: int = 0) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=128,
                        vocab_size=len(tokenizer), bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_llama(folder: Path, tokenizer, seed: int = 0, layers: int = 2) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         hidden_size=32, intermediate_size=64, max_position_embeddings=128,
                         vocab_size=len(tokenizer), bos_token_id=0, eos_token_id=0,
                         pad_token_id=None)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_bert(folder: Path, tokenizer, seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(num_hidden_layers=2, num_attention_heads=2, hidden_size=32,
                        intermediate_size=64, max_position_embeddings=128,
                        vocab_size=len(tokenizer), pad_token_id=0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def truncate_weights(folder: Path, keep_fraction: float = 0.5) -> Path:
    """A copy of the checkpoint's damage: model.safetensors cut short."""
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    return folder


def needs_remote_code(folder: Path) -> Path:
    """A config.json that asks for modelling code shipped with the checkpoint."""
    path = folder / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    path.write_text(json.dumps(config), encoding="utf-8")
    (folder / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    return folder


def into_hub_cache(cache: Path, model_id: str, source: Path, revision: str = "0123abcd") -> Path:
    """Lay a checkpoint folder out as the hub does: models--org--name/snapshots/REV + refs/main."""
    import shutil

    repo = cache / ("models--" + model_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    shutil.copytree(source, snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


_BUILT: dict[str, Path] = {}


def checkpoints_root() -> Path:
    """gpt2/, llama/ (same BPE tokenizer) and bert/ (WordPiece) under one temporary folder,
    built once per test process (a few seconds) and removed when it exits."""
    if "root" not in _BUILT:
        import atexit
        import shutil
        import tempfile

        root = Path(tempfile.mkdtemp(prefix="effiscope-hf-"))
        atexit.register(shutil.rmtree, root, True)
        tokenizer = bpe_tokenizer()
        save_gpt2(root / "gpt2", tokenizer)
        save_llama(root / "llama", tokenizer)
        save_bert(root / "bert", wordpiece_tokenizer())
        _BUILT["root"] = root
    return _BUILT["root"]


def hf_config(name: str, workload: str = "train", **settings):
    """run_config (its keywords) for the checkpoint `name` of checkpoints_root(): 20 steps of
    8 x 32 tokens on 100 kB of text, and a short inference."""
    from tests.helpers import run_config

    infer = {"batch_size": 2, "prompt_len": 16, "gen_len": 8, "repeats": 4, "warmup_runs": 1,
             "eval_tokens": 512, "eval_seq_len": 32, **settings.pop("infer", {})}
    return run_config(**{"steps": 20, "warmup_steps": 2, "batch_size": 8, "seq_len": 32,
                         "learning_rate": 3e-3, "max_train_bytes": 100_000, **settings},
                      workload=workload, name=f"test-{name}", infer=infer,
                      model={"source": "hf", "path": str(checkpoints_root() / name)})
