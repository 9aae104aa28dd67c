"""The dimensions a tuning search varies, one value at a time: each dimension's values (the
config's own, the defaults, and why this machine or config cannot run one), how a value is set
in a run config, and how it is named in a table. profiler.tune.space combines them.

Training dimensions keep what a step computes: micro-batch x gradient accumulation pairs keep the
global batch (sequences per optimizer step) of the config; checkpointing, precision, optimizer
kernel, attention kernel, torch.compile and the parallel wrapper change how, not what. The
optimizer's algorithm, the learning rate and every technique not tuned stay as configured.
Inference dimensions: batch size and quantization (which change quality: the table shows it).
A value equal to the config's own leaves that part of the config untouched, so the baseline
candidate is the config exactly as given.
"""

from __future__ import annotations

from dataclasses import dataclass

from profiler.config import RunConfig

TRAIN_DIMENSIONS = ("batch", "checkpoint", "precision", "optimizer", "attention", "compile",
                    "parallel")
INFER_DIMENSIONS = ("batch", "quantize")
MAX_ACCUMULATION = 8
"""Default pairs go down to micro-batches of global / 8: smaller ones only add passes."""

QUANTIZE = {  # value -> (technique, params); "none" = no quantization technique
    "none": None,
    "int8_dynamic": ("quantize_int8_dynamic", {}),
    "bf16_cast": ("weight_cast", {"dtype": "bf16"}),
    "fp16_cast": ("weight_cast", {"dtype": "fp16"}),
    "int8_weight_only": ("quantize_weight_only", {"bits": 8}),
    "int4_weight_only": ("quantize_weight_only", {"bits": 4}),
}
QUANTIZE_TECHNIQUES = ("quantize_int8_dynamic", "weight_cast", "quantize_weight_only")
ATTENTION = {"sdpa": ("sdpa", "auto"), "math": ("math", "auto"), "flash": ("sdpa", "flash"),
             "efficient": ("sdpa", "efficient"), "cudnn": ("sdpa", "cudnn")}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
ALL_VALUES_HELP = {
    "batch": "micro-batch x accumulation pairs such as 8x2 (train) or batch sizes (infer)",
    "checkpoint": "off or k (checkpoint every k-th block)",
    "precision": "fp32, bf16, fp16",
    "optimizer": "auto, foreach, fused, for-loop",
    "attention": ", ".join(ATTENTION),
    "compile": "off, " + ", ".join(COMPILE_MODES),
    "parallel": "ddp, fsdp",
    "quantize": ", ".join(QUANTIZE),
}


class SpaceError(ValueError):
    """A --space that cannot be searched; the text names the dimension and the fix."""


@dataclass(frozen=True)
class Candidate:
    """One configuration: a value (its text form) for every dimension of the space."""

    values: tuple[tuple[str, str], ...]

    def value(self, dim: str) -> str:
        return dict(self.values)[dim]

    def as_dict(self) -> dict[str, str]:
        return dict(self.values)

    @property
    def key(self) -> str:
        """A stable, unique text for this candidate (a table key, a JSON field)."""
        return ", ".join(f"{d}={v}" for d, v in self.values)


def dimensions_of(config: RunConfig) -> tuple[str, ...]:
    return INFER_DIMENSIONS if config.workload == "infer" else TRAIN_DIMENSIONS


def world_size(config: RunConfig) -> int:
    return config.launch.nproc_per_node * config.launch.nnodes


def micro_batches(config: RunConfig) -> int:
    return int((config.techniques.get("grad_accumulation") or {}).get("micro_batches", 1))


def global_batch(config: RunConfig) -> int:
    """Sequences per optimizer step across the job: micro-batch x accumulation x processes."""
    return config.train.batch_size * micro_batches(config) * world_size(config)


# --- the config's own value of each dimension -------------------------------------------------
def base_value(config: RunConfig, dim: str) -> str:
    tech = config.techniques
    if dim == "batch":
        if config.workload == "infer":
            return str(config.infer.batch_size)
        return f"{config.train.batch_size}x{micro_batches(config)}"
    if dim == "checkpoint":
        every = (tech.get("activation_checkpointing") or None)
        return "off" if every is None else str(every.get("every", 1))
    if dim == "precision":
        return str((tech.get("precision") or {}).get("dtype", "bf16")) if "precision" in tech else "fp32"
    if dim == "optimizer":
        return str((tech.get("optimizer") or {}).get("implementation", "auto"))
    if dim == "attention":
        params = tech.get("attention")
        if params is None:
            return "sdpa"
        impl, backend = params.get("implementation", "sdpa"), params.get("backend", "auto")
        return impl if backend == "auto" else backend
    if dim == "compile":
        return str((tech.get("compile") or {}).get("mode", "default")) if "compile" in tech else "off"
    if dim == "parallel":
        return "fsdp" if "fsdp" in tech else "ddp" if "ddp" in tech else "none"
    if dim == "quantize":
        for value, spec in QUANTIZE.items():
            if spec and spec[0] in tech and all(tech[spec[0]].get(k, v) == v
                                                for k, v in spec[1].items()):
                return value
        return "none"
    raise KeyError(dim)


# --- applying a candidate -----------------------------------------------------------------------
def apply(base: RunConfig, candidate: Candidate) -> RunConfig:
    """The run config of `candidate`: the base config with each dimension set to its value (a
    value equal to the base's leaves the config as it is)."""
    config = RunConfig.from_dict(base.to_dict())
    tech = config.techniques
    for dim, value in candidate.values:
        if value == base_value(base, dim):
            continue
        if dim == "batch" and config.workload == "infer":
            config.infer.batch_size = int(value)
        elif dim == "batch":
            micro, accumulation = parse_pair(value)
            config.train.batch_size = micro
            if accumulation > 1:
                tech["grad_accumulation"] = {"micro_batches": accumulation}
            else:
                tech.pop("grad_accumulation", None)
        elif dim == "checkpoint":
            if value == "off":
                tech.pop("activation_checkpointing", None)
            else:
                tech["activation_checkpointing"] = {"every": int(value)}
        elif dim == "precision":
            if value == "fp32":
                tech.pop("precision", None)
            else:
                tech["precision"] = {"dtype": value}
        elif dim == "optimizer":
            tech["optimizer"] = {**(tech.get("optimizer") or {}), "implementation": value}
        elif dim == "attention":
            impl, backend = ATTENTION[value]
            tech["attention"] = {"implementation": impl, "backend": backend}
        elif dim == "compile":
            if value == "off":
                tech.pop("compile", None)
            else:
                tech["compile"] = {"mode": value}
        elif dim == "parallel":
            other = "ddp" if value == "fsdp" else "fsdp"
            tech.pop(other, None)
            tech[value] = {}
        elif dim == "quantize":
            for name in QUANTIZE_TECHNIQUES:
                tech.pop(name, None)
            spec = QUANTIZE[value]
            if spec:
                tech[spec[0]] = dict(spec[1])
    return config


def parse_pair(text: str) -> tuple[int, int]:
    """"8x2" -> (8, 2): micro-batch, accumulation."""
    micro, sep, accumulation = text.partition("x")
    if not sep or not micro.isdigit() or not accumulation.isdigit() or not int(micro) or not int(accumulation):
        raise SpaceError(f"--space batch: {text!r} is not a pair; give micro-batch x accumulation "
                         "such as 8x2")
    return int(micro), int(accumulation)


# --- labels ---------------------------------------------------------------------------------------
_PRECISION = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16 + loss scaling"}
_OPTIMIZER = {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD"}


def value_label(base: RunConfig, dim: str, value: str) -> str:
    if dim == "batch":
        if base.workload == "infer":
            return f"batch {value}"
        micro, accumulation = parse_pair(value)
        return (f"micro-batch {micro}" if accumulation == 1
                else f"micro-batch {micro} x {accumulation} accumulated")
    if dim == "checkpoint":
        return "no checkpointing" if value == "off" else (
            "checkpoint every block" if value == "1" else f"checkpoint every {value}")
    if dim == "precision":
        return _PRECISION.get(value, value)
    if dim == "optimizer":
        algorithm = (base.techniques.get("optimizer") or {}).get("algorithm", "adamw")
        return f"{value} {_OPTIMIZER.get(algorithm, algorithm)}"
    if dim == "attention":
        return {"sdpa": "SDPA", "math": "explicit attention"}.get(value, f"SDPA {value}")
    if dim == "compile":
        return "no compile" if value == "off" else f"torch.compile ({value})"
    if dim == "parallel":
        return value.upper()
    if dim == "quantize":
        return "no quantization" if value == "none" else value.replace("_", " ")
    return f"{dim} {value}"


def label(base: RunConfig, candidate: Candidate, baseline: Candidate) -> str:
    """What differs from the baseline, joined with "+"; "baseline" when nothing does."""
    changed = [value_label(base, d, v) for d, v in candidate.values if baseline.value(d) != v]
    return " + ".join(changed) if changed else "baseline"


# --- building the space -------------------------------------------------------------------------
def default_values(config: RunConfig, dim: str) -> list[str]:
    base = base_value(config, dim)
    if dim == "batch" and config.workload == "infer":
        values = [str(config.infer.batch_size * k) for k in (1, 2, 4, 8)]
    elif dim == "batch":
        per_process = config.train.batch_size * micro_batches(config)
        values = [f"{m}x{per_process // m}" for m in range(per_process, 0, -1)
                  if per_process % m == 0 and per_process // m <= MAX_ACCUMULATION]
    elif dim == "checkpoint":
        values = ["off", "1", "2"]
    elif dim == "precision":
        values = ["fp32", "bf16", "fp16"]
    elif dim == "optimizer":
        values = ["foreach", "fused"]
    elif dim == "attention":
        values = ["sdpa", "math", "flash", "efficient"]
    elif dim == "compile":
        values = ["off", "default"]
    elif dim == "parallel":
        values = ["ddp", "fsdp"]
    elif dim == "quantize":
        values = list(QUANTIZE)
    else:
        raise KeyError(dim)
    return [base] + [v for v in values if v != base]


def _technique_reason(name: str, params: dict, caps: dict) -> str | None:
    from techniques import registry

    info = registry.get(name)
    return registry.unavailable_reason(info, {**info.defaults(), **params}, caps)


def unavailable(config: RunConfig, dim: str, value: str, caps: dict) -> str | None:
    """Why this machine (caps) or this config cannot run `value` of `dim`; None when it can."""
    base_opt = config.techniques.get("optimizer") or {}
    if dim == "batch" and config.workload == "infer":
        if not value.isdigit() or int(value) < 1:
            raise SpaceError(f"--space batch: {value!r} is not a batch size; give whole numbers "
                             "such as 1,4,16")
        return None
    if dim == "batch":
        micro, accumulation = parse_pair(value)
        per_process = config.train.batch_size * micro_batches(config)
        if micro * accumulation != per_process:
            raise SpaceError(f"--space batch: {value} is {micro * accumulation} sequences per "
                             f"step, but the config's global batch is {per_process} per process "
                             f"(micro-batch x accumulation); give pairs whose product is "
                             f"{per_process}, such as {per_process}x1")
        return None
    if dim == "checkpoint":
        if value == "off":
            return None
        if not value.isdigit() or int(value) < 1:
            raise SpaceError(f"--space checkpoint: {value!r} is not off or a block count k >= 1")
        layers = _layers(config)
        if layers is not None and int(value) > layers:
            return f"the model has {layers} blocks: checkpointing every {value} touches none"
        return _technique_reason("activation_checkpointing", {"every": int(value)}, caps)
    if dim == "precision":
        if value not in _PRECISION:
            raise SpaceError(f"--space precision: {value!r} is not one of fp32, bf16, fp16")
        return None if value == "fp32" else _technique_reason("precision", {"dtype": value}, caps)
    if dim == "optimizer":
        if value not in ("auto", "foreach", "fused", "for-loop"):
            raise SpaceError(f"--space optimizer: {value!r} is not one of "
                             f"{ALL_VALUES_HELP['optimizer']}")
        return _technique_reason("optimizer", {**base_opt, "implementation": value}, caps)
    if dim == "attention":
        if value not in ATTENTION:
            raise SpaceError(f"--space attention: {value!r} is not one of {ALL_VALUES_HELP['attention']}")
        impl, backend = ATTENTION[value]
        return _technique_reason("attention", {"implementation": impl, "backend": backend}, caps)
    if dim == "compile":
        if value != "off" and value not in COMPILE_MODES:
            raise SpaceError(f"--space compile: {value!r} is not one of {ALL_VALUES_HELP['compile']}")
        return None if value == "off" else _technique_reason("compile", {"mode": value}, caps)
    if dim == "parallel":
        if value not in ("ddp", "fsdp"):
            raise SpaceError(f"--space parallel: {value!r} is not ddp or fsdp")
        if world_size(config) < 2:
            return "needs 2 or more processes (launch.nproc_per_node)"
        return _technique_reason(value, {}, caps)
    if dim == "quantize":
        if value not in QUANTIZE:
            raise SpaceError(f"--space quantize: {value!r} is not one of {ALL_VALUES_HELP['quantize']}")
        spec = QUANTIZE[value]
        return None if spec is None else _technique_reason(spec[0], spec[1], caps)
    raise KeyError(dim)


def _layers(config: RunConfig) -> int | None:
    from profiler.models import source as model_source

    try:
        return getattr(model_source.model_shape(config.model), "n_layer", None)
    except Exception:  # noqa: BLE001 - a shape we cannot read bounds nothing; validate says why
        return None
