"""A run config judged as a whole: every value and every combination (the model's context, the
workload's sections, the techniques' own checks, the launch), before a run exists. ConfigError
names the field and says how to fix it; the app and the CLI refuse the same things alike.
"""

from __future__ import annotations

import errno
import re
import stat
from pathlib import Path

from profiler.config.loading import build, short_path, shown
from profiler.config.sections import (
    DATA_SOURCES,
    MODEL_SOURCES,
    WORKLOADS,
    ModelConfig,
    RunConfig,
)
from profiler.errors import ConfigError
from profiler.models.presets import GPT_PRESETS

MAX_LEARNING_RATE = 10.0
"""Above this no optimizer here trains: the loss diverges on the first steps."""


def _require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ConfigError(field, message)


def validate(config: RunConfig, *, on_this_machine: bool = True) -> RunConfig:
    """Check values and combinations; raise ConfigError naming the field and the fix.
    on_this_machine=False leaves out what only this machine decides (its memory)."""
    # A config built in code (the app's form, CLI overrides) gets the same type and range checks
    # as one read from TOML: a 20-digit step count is refused here, never sent to a worker.
    build(RunConfig, config.to_dict(), "")
    _require(config.workload in WORKLOADS, "workload",
             f"{config.workload!r} is not a workload; choose one of {', '.join(WORKLOADS)}")
    dev = config.device
    _require(dev in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:[0-9]{1,4}", dev) is not None,
             "device", f"{shown(dev)} is not a device; use auto, cpu, cuda or cuda:N (N the "
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
    from profiler.config.ssh_options import validate_ssh  # torch-free

    validate_ssh(config)
    from techniques import registry  # metadata only: no torch
    from techniques.params import ParamError

    for name, params in config.techniques.items():
        try:
            registry.validate_params(name, params)
        except ParamError as exc:
            raise ConfigError(exc.field, exc.message) from None
        except ValueError as exc:
            raise ConfigError(f"techniques.{name}", str(exc)) from None
        workloads = registry.get(name).extra.get("workloads")
        _require(not workloads or config.workload in workloads, f"techniques.{name}",
                 f"does not apply to workload = {config.workload} (its weights cannot be "
                 f"trained); use it with workload = {' or '.join(workloads or ())}")
    _validate_workloads(config, shape)
    from profiler.config import rules as config_rules  # torch-free

    config_rules.check(config, shape, on_this_machine)
    return config


def _model_shape(model: ModelConfig, where: str):
    """The shape of the model a ModelConfig names (read from the checkpoint's header when loaded)."""
    _require(model.source in MODEL_SOURCES, f"{where}.source",
             f"{model.source!r} is not a model source; choose one of {', '.join(MODEL_SOURCES)}")
    _require(model.source != "preset" or model.preset in GPT_PRESETS, f"{where}.preset",
             f"{model.preset!r} is not a built-in model; choose one of {', '.join(GPT_PRESETS)}")
    _require(0.0 <= model.dropout < 1.0, f"{where}.dropout", f"must be in [0, 1), got {model.dropout}")
    from profiler import errors  # torch-free: reads the safetensors header only
    from profiler.models import source as model_source

    if model.source in ("checkpoint", "hf", "gguf") and model.path:
        problem = path_problem(model.path, allow_missing=model.source in ("hf", "gguf"))
        _require(problem is None, f"{where}.path",
                 f"{problem}; give a checkpoint file or folder on this machine")
    try:
        return model_source.model_shape(model)
    except errors.CheckpointError as exc:
        raise ConfigError(f"{where}.{exc.field}", str(exc)) from None
    except OSError as exc:  # a name too long, a device, a folder the checkpoint reader tripped on
        raise ConfigError(f"{where}.path", f"{short_path(model.path)} cannot be read "
                          f"({exc.strerror or exc}); give a checkpoint file or folder") from None


def _validate_workloads(config: RunConfig, shape) -> None:
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
        from profiler.models import source as model_source

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


def path_problem(text: str, allow_missing: bool = False) -> str | None:
    """What is wrong with a data or model path, in words (None when it is a file or folder).

    A device (/dev/zero), a pipe or a socket is not text to read; a name too long for the
    system is said as such, not as a traceback.
    """
    path = Path(text).expanduser()
    shown = short_path(text)
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
