"""Run configuration: plain dataclasses, read from and written to TOML, validated in one place.

A config is data only. `RunConfig.from_dict` checks every key and type, `validate` checks every
value and combination; both raise ConfigError with one sentence that names the field and the fix.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import re
import stat
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

import tomli_w

from profiler.errors import ConfigError
from profiler.models.presets import GPT_PRESETS

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
PRESETS_DIR = Path(__file__).resolve().parent.parent / "assets" / "presets"
MAX_CONFIG_BYTES = 1_000_000
"""A config file is a few kB; a bigger one (or /dev/zero) is refused before it is read."""
MAX_TEXT_CHARS = 100_000
"""Longest text setting (a name, a path): a config must fit in one protocol message."""
MAX_LEARNING_RATE = 10.0
"""Above this no optimizer here trains: the loss diverges on the first steps."""


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
        config = _build(cls, data, "")
        return config

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def run_record(self) -> dict[str, str]:
        """What the run store keeps of a config, as plain data (the store imports no config)."""
        from profiler.model_source import model_label  # torch-free

        label = model_label(self.model)
        return {"config_toml": self.to_toml(), "name": self.name or label, "model": label,
                "workload": self.workload, "device": self.device}

    @classmethod
    def from_toml(cls, text: str) -> RunConfig:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("", f"the file is not valid TOML ({exc}); fix the syntax") from None
        except RecursionError:
            raise ConfigError("", "the file is not a usable TOML config (its tables or arrays "
                              "are nested too deeply); fix the file") from None
        except ValueError as exc:  # e.g. an integer of more than 4,300 digits
            raise ConfigError("", f"the file is not a usable TOML config ({str(exc)[:120]}); "
                              "fix the value") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        shown = _short_path(path)
        try:
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):
                kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
                raise ConfigError("", f"{shown} is {kind}; give the path of a TOML config file")
            if info.st_size > MAX_CONFIG_BYTES:
                raise ConfigError("", f"{shown} is {info.st_size:,} bytes, over the "
                                  f"{MAX_CONFIG_BYTES:,} a config may have; give a TOML config "
                                  "file")
            with path.open("rb") as fh:
                raw = fh.read(MAX_CONFIG_BYTES + 1)
            text = raw.decode("utf-8")
        except FileNotFoundError:
            raise ConfigError("", f"no config file at {shown}; check the path") from None
        except UnicodeDecodeError:
            raise ConfigError("", f"{shown} is not UTF-8 text; give a TOML config file") from None
        except OSError as exc:
            raise ConfigError("", f"cannot read {shown} ({exc.strerror or exc}); give a "
                              "readable TOML file") from None
        return cls.from_toml(text)

    def save(self, path: str | Path) -> None:
        """Write the TOML whole, onto a regular file or a new path only (files.FileRefused, an
        OSError, for a FIFO, device, symlink or folder)."""
        from profiler import files

        files.write_text(path, self.to_toml())


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, "a table"
    )


def _build(cls: type, data: Any, section: str) -> Any:
    where = section or "the top level"
    if not isinstance(data, dict):
        raise ConfigError(section, f"expected a table of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{section + '.' if section else ''}{unknown[0]}",
            f"unknown setting in {where}; valid settings are {', '.join(sorted(names))}",
        )
    values = {}
    for name, raw in data.items():
        tp = hints[name]
        path = f"{section}.{name}" if section else name
        if dataclasses.is_dataclass(tp):
            values[name] = _build(tp, raw, path)
        elif typing.get_origin(tp) is dict:
            values[name] = _techniques(raw, path)
        elif typing.get_origin(tp) is list:
            if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
                raise ConfigError(path, f"must be a list of strings, got {raw!r}")
            values[name] = list(raw)
        else:
            values[name] = _scalar(raw, tp, path)
    return cls(**values)


def _scalar(raw: Any, tp: Any, path: str) -> Any:
    if tp is float and isinstance(raw, int) and not isinstance(raw, bool):
        if abs(raw) > 1e300:
            raise ConfigError(path, f"must be a finite number, got an integer of {len(str(abs(raw)))} digits")
        return float(raw)
    if isinstance(raw, bool) and tp is not bool or not isinstance(raw, tp):
        raise ConfigError(path, f"must be {_type_name(tp)}, got {_shown(raw)}")
    if isinstance(raw, float) and not math.isfinite(raw):
        raise ConfigError(path, f"must be a finite number, got {raw}; give a number such as 0.1")
    if tp is int and abs(raw) >= 2**63:
        raise ConfigError(path, f"must be an integer below 2**63, got one of {len(str(abs(raw)))} digits")
    if tp is str and len(raw) > MAX_TEXT_CHARS:
        raise ConfigError(path, f"is {len(raw):,} characters long; keep it under {MAX_TEXT_CHARS:,}")
    return raw


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text):,} characters)"


def _short_path(path: Any) -> str:
    text = str(path)
    return text if len(text) <= 120 else f"{text[:80]}... ({len(text):,} characters)"


def _finite_params(params: dict, path: str) -> None:
    """Technique parameters: inf and nan are refused here with a sentence (TOML allows them)."""
    for key, value in params.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{path}.{key}", f"must be a finite number, got {value}; give a "
                              "number in the range `effiscope techniques` lists")


def _techniques(raw: Any, path: str) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict):
        raise ConfigError(path, "must be a table of [techniques.NAME] sections")
    out = {}
    for name, params in raw.items():
        if params is True:
            params = {}
        if not isinstance(params, dict):
            raise ConfigError(f"{path}.{name}", "must be a table of parameters (or true)")
        _finite_params(params, f"{path}.{name}")
        out[str(name)] = dict(params)
    return out


def _require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ConfigError(field, message)


def apply_overrides(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """A copy of config with settings replaced by dotted name ({"limits.steps": 50}), each
    value checked for its type and range like the same setting read from TOML (not validated:
    call validate() on the result, after every override, so the file and the overrides are
    judged together)."""
    data = config.to_dict()
    for dotted, value in overrides.items():
        if value is None:
            continue
        table = data
        *sections, name = dotted.split(".")
        for section in sections:
            table = table[section]
        table[name] = value
    return RunConfig.from_dict(data)


def validate(config: RunConfig) -> RunConfig:
    """Check values and combinations; raise ConfigError naming the field and the fix."""
    # A config built in code (the app's form, CLI overrides) gets the same type and range checks
    # as one read from TOML: a 20-digit step count is refused here, never sent to a worker.
    _build(RunConfig, config.to_dict(), "")
    _require(config.workload in WORKLOADS, "workload",
             f"{config.workload!r} is not a workload; choose one of {', '.join(WORKLOADS)}")
    dev = config.device
    _require(dev in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:[0-9]{1,4}", dev) is not None,
             "device", f"{_shown(dev)} is not a device; use auto, cpu, cuda or cuda:N (N the "
             "GPU's index, e.g. cuda:0)")
    shape = _model_shape(config.model, "model")
    data = config.data
    _require(data.source in DATA_SOURCES, "data.source",
             f"{data.source!r} is not a data source; choose one of {', '.join(DATA_SOURCES)}")
    if data.source == "path":
        _require(bool(data.path), "data.path", 'is empty; give a text file or folder for source = "path"')
        problem = path_problem(data.path)
        _require(problem is None, "data.path", f"{problem}; give an existing text file or folder")
    _require(data.max_train_bytes >= 10_000, "data.max_train_bytes",
             f"must be at least 10000, got {data.max_train_bytes}")
    _require(0.0 < data.val_fraction < 0.9, "data.val_fraction",
             f"must be above 0 and below 0.9 (both ends excluded; e.g. 0.1), got "
             f"{data.val_fraction}")
    train = config.train
    _require(train.batch_size >= 1, "train.batch_size", f"must be 1 or more, got {train.batch_size}")
    _require(train.seq_len >= 2, "train.seq_len", f"must be 2 or more, got {train.seq_len}")
    trains = config.workload in ("train", "distill") or (
        config.workload == "compress" and config.compress.finetune_steps > 0)
    _require(not trains or train.seq_len <= shape.block_size, "train.seq_len",
             f"{train.seq_len} is longer than the model's context of "
             f"{shape.block_size} tokens; set it to {shape.block_size} or less")
    _require(0.0 < train.learning_rate <= MAX_LEARNING_RATE, "train.learning_rate",
             f"must be above 0 and at most {MAX_LEARNING_RATE:g} (typically 1e-4 to 1e-2), got "
             f"{train.learning_rate:g}")
    _require(train.weight_decay >= 0.0, "train.weight_decay",
             f"must be 0 or more, got {train.weight_decay}")
    for name in ("beta1", "beta2"):
        value = getattr(train, name)
        _require(0.0 <= value < 1.0, f"train.{name}", f"must be in [0, 1), got {value}")
    _require(train.eval_interval >= 0, "train.eval_interval",
             f"must be 0 (off) or more, got {train.eval_interval}")
    _require(train.eval_batches >= 1, "train.eval_batches",
             f"must be 1 or more, got {train.eval_batches}")
    limits = config.limits
    _require(limits.steps >= 1, "limits.steps", f"must be 1 or more, got {limits.steps}")
    _require(limits.time_s >= 0, "limits.time_s", f"must be 0 (no limit) or more, got {limits.time_s}")
    _require(0 <= limits.warmup_steps < limits.steps, "limits.warmup_steps",
             f"must be at least 0 and below limits.steps ({limits.steps}), got {limits.warmup_steps}")
    _validate_launch(config)
    _require(config.peak_tflops >= 0, "peak_tflops",
             f"must be 0 (use the device table) or a positive TFLOP/s figure, got {config.peak_tflops}")
    from profiler.ssh_options import validate_ssh  # torch-free

    validate_ssh(config)
    from techniques import registry  # metadata only: no torch

    for name, params in config.techniques.items():
        try:
            registry.validate_params(name, params)
        except ValueError as exc:
            raise ConfigError("", str(exc)) from None
        workloads = registry.get(name).extra.get("workloads")
        _require(not workloads or config.workload in workloads, f"techniques.{name}",
                 f"does not apply to workload = {config.workload} (its weights cannot be "
                 f"trained); use it with workload = {' or '.join(workloads or ())}")
    _validate_workloads(config, shape)
    from profiler import config_rules  # torch-free

    config_rules.check(config, shape)
    return config


def _model_shape(model: ModelConfig, where: str):
    """The shape of the model a ModelConfig names (read from the checkpoint's header when loaded)."""
    _require(model.source in MODEL_SOURCES, f"{where}.source",
             f"{model.source!r} is not a model source; choose one of {', '.join(MODEL_SOURCES)}")
    _require(model.source != "preset" or model.preset in GPT_PRESETS, f"{where}.preset",
             f"{model.preset!r} is not a built-in model; choose one of {', '.join(GPT_PRESETS)}")
    _require(0.0 <= model.dropout < 1.0, f"{where}.dropout", f"must be in [0, 1), got {model.dropout}")
    from profiler import errors, model_source  # torch-free: reads the safetensors header only

    if model.source in ("checkpoint", "hf", "gguf") and model.path:
        problem = path_problem(model.path, allow_missing=model.source in ("hf", "gguf"))
        _require(problem is None, f"{where}.path",
                 f"{problem}; give a checkpoint file or folder on this machine")
    try:
        return model_source.model_shape(model)
    except errors.CheckpointError as exc:
        raise ConfigError(f"{where}.{exc.field}", str(exc)) from None
    except OSError as exc:  # a name too long, a device, a folder the checkpoint reader tripped on
        raise ConfigError(f"{where}.path", f"{_short_path(model.path)} cannot be read "
                          f"({exc.strerror or exc}); give a checkpoint file or folder") from None


def _validate_workloads(config: RunConfig, shape) -> None:
    _require(config.workload != "train" or config.model.source in ("preset", "hf", "hf-config"),
             "model.source", "training starts from a preset's random weights or a Hugging Face "
             'model in this version; set it to preset, hf or hf-config (use workload = "distill" '
             "to train a student from a saved teacher)")
    if getattr(shape, "kind", "builtin") == "hf-encoder":
        _require(config.workload in ("infer", "compress"), "workload",
                 f"{config.model.path or config.model.arch.name} is an encoder model (BERT-style), "
                 "which has no next-token head to train or distill; run it with workload = infer "
                 "or compress, or pick a causal language model")
    infer = config.infer
    for name in ("batch_size", "prompt_len", "gen_len", "repeats"):
        value = getattr(infer, name)
        _require(value >= 1, f"infer.{name}", f"must be 1 or more, got {value}")
    _require(infer.warmup_runs >= 0, "infer.warmup_runs", f"must be 0 or more, got {infer.warmup_runs}")
    _require(infer.eval_tokens >= 0, "infer.eval_tokens",
             f"must be 0 (skip) or more, got {infer.eval_tokens}")
    if config.workload in ("infer", "compress"):  # the model's context bounds what it can run
        _require(infer.prompt_len + infer.gen_len <= shape.block_size, "infer.gen_len",
                 f"prompt_len + gen_len = {infer.prompt_len + infer.gen_len} exceeds the "
                 f"model's context of {shape.block_size} tokens; shorten the prompt or the "
                 "generation")
        _require(2 <= infer.eval_seq_len <= shape.block_size, "infer.eval_seq_len",
                 f"must be between 2 and the model's context of {shape.block_size}, got "
                 f"{infer.eval_seq_len}")
    comp = config.compress
    _require(comp.finetune_steps >= 0, "compress.finetune_steps",
             f"must be 0 (none) or more, got {comp.finetune_steps}")
    _require(0.0 < comp.finetune_learning_rate <= 1.0, "compress.finetune_learning_rate",
             f"must be above 0 and at most 1 (typically 1e-5 to 1e-3), got "
             f"{comp.finetune_learning_rate:g}")
    if config.workload == "compress":
        from techniques import registry

        _require(any(registry.get(n).category == "compression" for n in config.techniques),
                 "techniques", "a compress run needs at least one compression technique; add "
                 "e.g. [techniques.quantize_int8_dynamic] or [techniques.prune_magnitude]")
    dist = config.distill
    _require(0.0 <= dist.alpha <= 1.0, "distill.alpha", f"must be in [0, 1], got {dist.alpha}")
    _require(0.0 < dist.temperature <= 100.0, "distill.temperature",
             f"must be above 0 and at most 100 (typically 1 to 10), got {dist.temperature:g}")
    _require(dist.teacher_train_steps >= 0, "distill.teacher_train_steps",
             f"must be 0 or more, got {dist.teacher_train_steps}")
    if config.workload == "distill":
        teacher = _model_shape(dist.teacher, "distill.teacher")
        _require(teacher.vocab_size == shape.vocab_size, "distill.teacher",
                 f"the teacher's vocabulary has {teacher.vocab_size} tokens and the student's "
                 f"{shape.vocab_size}; KL between next-token distributions needs the same "
                 "vocabulary, so choose a teacher and a student of the same vocabulary size")
        from profiler import model_source

        _require(model_source.vocabulary_id(dist.teacher) == model_source.vocabulary_id(config.model),
                 "distill.teacher", "the teacher and the student tokenize text differently "
                 "(different tokenizers give the same id different meanings, so their next-token "
                 "distributions cannot be compared); choose a teacher with the student's tokenizer")
        _require(config.train.seq_len <= teacher.block_size, "train.seq_len",
                 f"{config.train.seq_len} is longer than the teacher's context of "
                 f"{teacher.block_size} tokens; set it to {teacher.block_size} or less")


def _validate_launch(config: RunConfig) -> None:
    launch = config.launch
    _require(1 <= launch.nproc_per_node <= 1024, "launch.nproc_per_node",
             f"must be between 1 and 1024, got {launch.nproc_per_node}")
    _require(1 <= launch.nnodes <= 4096, "launch.nnodes", f"must be 1 or more, got {launch.nnodes}")
    _require(0 <= launch.node_rank < launch.nnodes, "launch.node_rank",
             f"must be between 0 and nnodes - 1 ({launch.nnodes - 1}), got {launch.node_rank}")
    _require(launch.rdzv_timeout_s >= 1, "launch.rdzv_timeout_s",
             f"must be 1 or more seconds, got {launch.rdzv_timeout_s}")
    if launch.rdzv_endpoint:
        host, _, port = launch.rdzv_endpoint.rpartition(":")
        _require(bool(host) and port.isdigit() and 0 < int(port) < 65536, "launch.rdzv_endpoint",
                 f"{launch.rdzv_endpoint!r} is not host:port; give node 0's address and a free "
                 "port, e.g. 10.0.0.1:29500")
    _require(launch.nnodes == 1 or bool(launch.rdzv_endpoint), "launch.rdzv_endpoint",
             "is needed when nnodes > 1: give node 0's address and a free port, e.g. 10.0.0.1:29500")
    world = launch.nproc_per_node * launch.nnodes
    parallel = [name for name in ("ddp", "fsdp") if name in config.techniques]
    _require(not (world > 1 and not parallel), "techniques",
             f"the job has {world} processes but neither ddp nor fsdp is enabled, so each would "
             "train its own unrelated copy; add [techniques.ddp] or [techniques.fsdp]")
    from techniques.registry import NEEDS_PROCESSES

    _require(not (world == 1 and parallel), "launch.nproc_per_node",
             f"techniques.{parallel[0] if parallel else ''} {NEEDS_PROCESSES}, or remove it")
    _require(len(parallel) < 2, "techniques", "ddp and fsdp cannot be combined; keep one of them")


def list_presets() -> list[str]:
    """Names of the shipped run presets (assets/presets/*.toml)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def path_problem(text: str, allow_missing: bool = False) -> str | None:
    """What is wrong with a data or model path, in words (None when it is a file or folder).

    A device (/dev/zero), a pipe or a socket is not text to read; a name too long for the
    system is said as such, not as a traceback.
    """
    path = Path(text).expanduser()
    shown = _short_path(text)
    try:
        info = path.stat()
    except FileNotFoundError:
        return None if allow_missing else f"{shown} does not exist"
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return f"the path is {len(text):,} characters, too long for this system"
        if allow_missing and exc.errno == errno.ENOTDIR:
            return None
        return f"{shown} cannot be read ({exc.strerror or exc})"
    if stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode):
        return None
    kind = ("a pipe (FIFO)" if stat.S_ISFIFO(info.st_mode) else "a socket" if
            stat.S_ISSOCK(info.st_mode) else "a device" if stat.S_ISCHR(info.st_mode) or
            stat.S_ISBLK(info.st_mode) else "not a regular file")
    return f"{shown} is {kind}, not a file or folder"


def resolve(target: str, overrides: dict[str, Any] | None = None) -> RunConfig:
    """A preset's name (nano) or the path of a TOML file, loaded, with `overrides` (dotted
    setting -> value, None = not given) applied, then validated as a whole."""
    return validate(apply_overrides(load_target(target), overrides or {}))


def load_target(target: str) -> RunConfig:
    """A preset's name (nano) or the path of a TOML file, loaded (types checked, not validated)."""
    if "\x00" in target:
        raise ConfigError("", "the config path holds a NUL character; give a preset name or a "
                          "TOML file's path")
    path = Path(target).expanduser()
    try:
        exists = path.exists()
    except OSError as exc:
        raise ConfigError("", f"{_short_path(target)} cannot be a config ({exc.strerror or exc}); "
                          "give a preset name or a shorter path") from None
    if path.suffix == ".toml" or exists:
        return RunConfig.load(path)
    preset = PRESETS_DIR / f"{target}.toml"
    if "/" not in target and len(target) < 100 and preset.exists():
        return RunConfig.load(preset)
    raise ConfigError(
        "", f"{_shown(target)} is neither a preset ({', '.join(list_presets())}) nor a TOML "
        "file; give one of those names or the path of a config"
    )
