"""The run config's sections: plain dataclasses, a docstring under every field (what the app's
form and `effiscope techniques` say of it), and the values some fields may take. Reading and
writing TOML is profiler.config.loading's, judging values profiler.config.validation's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from profiler.config import loading

WORKLOADS = ("train", "infer", "compress", "distill")
SECTIONS_READ = {
    "train": ("model", "data", "train", "limits", "launch", "techniques"),
    "infer": ("model", "data", "infer", "launch", "techniques"),
    "compress": ("model", "data", "infer", "compress", "train", "launch", "techniques"),
    "distill": ("model", "data", "train", "limits", "distill", "launch", "techniques"),
}
"""The config sections each workload reads (the top-level settings apply to all of them);
techniques that calibrate on training text (CALIBRATING) read `train` in any workload. A
settings diff shows only what the compared runs' workloads read (profiler.report.compare)."""
CALIBRATING = ("prune_wanda",)
MODEL_SOURCES = ("preset", "run", "checkpoint", "hf", "hf-config", "gguf")
DATA_SOURCES = ("stdlib", "path", "random")


@dataclass
class ArchConfig:
    """A Hugging Face architecture at a chosen size, with random weights (source = "hf-config")."""

    name: str = "llama"
    """Family: gpt2, llama, mistral, qwen2, gpt-neox (causal) or bert (encoder; `effiscope
    models` lists them)."""
    n_layer: int = 4
    """Transformer layers."""
    n_head: int = 4
    """Attention (query) heads."""
    n_kv_head: int = 0
    """Key/value heads for grouped-query attention (llama, mistral, qwen2); 0 = n_head."""
    n_embd: int = 256
    """Model width (hidden size); a multiple of n_head."""
    intermediate_size: int = 0
    """MLP width; 0 = the family's default (4 x n_embd, or ~8/3 x n_embd for SwiGLU families)."""
    block_size: int = 512
    """Context length (max_position_embeddings)."""
    vocab_size: int = 0
    """Embedding rows; 0 = the tokenizer's size (256 with UTF-8 bytes)."""
    tokenizer: str = ""
    """A local tokenizer folder or a model id in the local Hugging Face cache whose tokenizer
    to use; empty = UTF-8 bytes (256 tokens), like the built-in GPT."""


@dataclass
class ModelConfig:
    source: str = "preset"
    """Where the weights come from: "preset" (random weights of `preset`'s shape), "run" (the
    model.safetensors a past train run saved, see `run_id`), "checkpoint" (a .safetensors file
    of ours, or a folder holding model.safetensors, see `path`), "hf" (a Hugging Face checkpoint
    on this machine, see `path`), "hf-config" (a Hugging Face architecture with random
    weights, see `arch`) or "gguf" (a llama.cpp .gguf file, see `path`, dequantized to fp32).
    The shape comes with the weights."""
    preset: str = "gpt-nano"
    """Built-in GPT size preset (gpt-nano, gpt-mini, gpt2-small, ...) when source = "preset"."""
    run_id: str = ""
    """The past run whose saved weights to load when source = "run" (a unique prefix is enough)."""
    path: str = ""
    """The checkpoint file or folder when source = "checkpoint"; for source = "hf", a local
    checkpoint folder (config.json, *.safetensors, tokenizer files) or a model id (org/name)
    found in the local Hugging Face cache; for source = "gguf", a .gguf file (or a folder
    holding exactly one). Nothing is downloaded."""
    arch: ArchConfig = field(default_factory=ArchConfig)
    """The architecture and size when source = "hf-config"."""
    dropout: float = 0.0
    """Dropout probability in attention and MLP outputs (0 disables it; for Hugging Face models
    it replaces the checkpoint's own dropout settings)."""


@dataclass
class DataConfig:
    source: str = "stdlib"
    """Where text comes from: "stdlib" (this Python's own standard-library sources), "path" (a
    text file or folder of yours) or "random" (uniform random tokens, for pure speed runs)."""
    path: str = ""
    """The file or folder read when source = "path"."""
    max_train_bytes: int = 4_000_000
    """At most this much text is read for training (reading more only slows the start)."""
    val_fraction: float = 0.1
    """Share of the files (or of a single file's tail) held out for validation."""


@dataclass
class TrainConfig:
    batch_size: int = 16
    """Sequences per step."""
    seq_len: int = 128
    """Tokens per sequence; at most the model's context length."""
    learning_rate: float = 1e-3
    """Peak learning rate of AdamW."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay (applied to matrices, not to biases or norms)."""
    beta1: float = 0.9
    """AdamW first-moment decay."""
    beta2: float = 0.95
    """AdamW second-moment decay."""
    eval_interval: int = 25
    """Validation loss every this many steps (and at the first and last step); 0 turns it off."""
    eval_batches: int = 4
    """Batches averaged for one validation loss."""
    save_checkpoint: bool = False
    """Save the final weights as model.safetensors in the run folder, so infer, compress and
    distill runs can load them (model.source = "run")."""


@dataclass
class InferConfig:
    batch_size: int = 1
    """Sequences generated at once."""
    prompt_len: int = 64
    """Prompt tokens per sequence (taken from held-out text), processed in one prefill."""
    gen_len: int = 32
    """Tokens generated per sequence after the prompt, one decode step each with the KV cache."""
    repeats: int = 10
    """Timed generations; p50 / p90 / p99 are taken over them."""
    warmup_runs: int = 2
    """Generations run first and left out of every figure (allocator and caches warming up)."""
    eval_tokens: int = 16384
    """Held-out tokens scored for perplexity (and for KL in compress runs); 0 skips it."""
    eval_seq_len: int = 128
    """Window length for perplexity: each window is scored with its own context only."""


@dataclass
class CompressConfig:
    finetune_steps: int = 0
    """Training steps after pruning, before pruning is made permanent (pruned weights stay zero);
    batches follow train.batch_size and train.seq_len."""
    finetune_learning_rate: float = 3e-4
    """AdamW learning rate of those fine-tuning steps."""


@dataclass
class DistillConfig:
    teacher: ModelConfig = field(default_factory=lambda: ModelConfig(preset="gpt-mini"))
    """The teacher model: a past run, a checkpoint, or a (larger) preset; same vocabulary as the
    student (`model`)."""
    teacher_train_steps: int = 0
    """Train the teacher on the same text for this many steps before distilling (useful for a
    preset teacher, whose random weights would teach nothing); 0 uses it as loaded."""
    alpha: float = 0.5
    """Weight of the distillation term: loss = alpha·KL(teacher‖student at T)·T² +
    (1 - alpha)·cross-entropy on the text."""
    temperature: float = 2.0
    """Softmax temperature T applied to both models' logits in the KL term."""


@dataclass
class LimitsConfig:
    steps: int = 200
    """Optimizer steps to run."""
    time_s: float = 0.0
    """Stop after this many seconds of training as well (0 = no time limit)."""
    warmup_steps: int = 5
    """First steps excluded from speed summaries (allocator, caches and kernels warming up)."""


@dataclass
class LaunchConfig:
    nproc_per_node: int = 1
    """Worker processes on this machine; more than 1 starts the worker under torchrun."""
    nnodes: int = 1
    """Machines in the job; start the same config on each, with its own node_rank."""
    node_rank: int = 0
    """This machine's index in the job, 0 .. nnodes-1; node 0 hosts the rendezvous."""
    rdzv_endpoint: str = ""
    """host:port where the nodes meet (node 0's address); empty on one machine = a free port."""
    rdzv_timeout_s: int = 300
    """How long the nodes wait for each other before the job gives up."""
    ssh: str = ""
    """Run the worker on another machine: `ssh HOST <remote_command>` with HOST = user@host, host
    or a Host alias of ~/.ssh/config (empty = here). Needs key login (ssh runs in batch mode)."""
    ssh_options: list[str] = field(default_factory=list)
    """Extra ssh client arguments, one per item, e.g. ["-p", "2222", "-i", "~/.ssh/lab"]; only
    options that shape the connection (-p -i -l -J -4 -6 -C -q -v, -o KEY=VALUE) are accepted."""
    remote_command: str = "effiscope worker"
    """What ssh runs on the remote machine: the worker, speaking the protocol on its stdin/stdout
    (e.g. "/opt/venv/bin/effiscope worker")."""


@dataclass
class RunConfig:
    name: str = ""
    """A label for the run in the history (free text)."""
    workload: str = "train"
    """What the worker does: train (language modelling), infer (latency, tokens/s, perplexity),
    compress (apply compression techniques, compare with the original) or distill (a teacher
    trains the student `model`)."""
    device: str = "auto"
    """auto (CUDA when present, else CPU), cpu, cuda or cuda:N."""
    seed: int = 1337
    """Seed for weights, data order and dropout: the same seed gives the same run."""
    peak_tflops: float = 0.0
    """Peak dense TFLOP/s of this device for MFU (0 = from EffiScope's device table)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    compress: CompressConfig = field(default_factory=CompressConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    output_dir: str = ""
    """Folder the worker may write artifacts into (the run folder); set by the front end when it
    starts a run, empty = write nothing."""
    techniques: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Enabled techniques: name -> parameters (see `effiscope techniques`)."""

    # --- conversion -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> RunConfig:
        config = loading.build(cls, data, "")
        return config

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def run_record(self) -> dict[str, str]:
        """What the run store keeps of a config, as plain data (the store imports no config)."""
        from profiler.models.source import model_label  # torch-free

        label = model_label(self.model)
        return {"config_toml": self.to_toml(), "name": self.name or label, "model": label,
                "workload": self.workload, "device": self.device}

    @classmethod
    def from_toml(cls, text: str) -> RunConfig:
        return cls.from_dict(loading.parse_toml(text))

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        return cls.from_toml(loading.read_config_file(path))

    def save(self, path: str | Path) -> None:
        """Write the TOML whole, onto a regular file or a new path only (files.FileRefused, an
        OSError, for a FIFO, device, symlink or folder)."""
        from profiler import files

        files.write_text(path, self.to_toml())
