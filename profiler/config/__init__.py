"""Run configuration: the sections (dataclasses), loading (TOML in, types checked), validation
(values and combinations) and overrides (presets, --flags). Import from here."""

from __future__ import annotations

from profiler.config.loading import MAX_CONFIG_BYTES, MAX_TEXT_CHARS
from profiler.config.overrides import (
    PRESETS_DIR,
    apply_overrides,
    list_presets,
    load_target,
    resolve,
)
from profiler.config.sections import (
    CALIBRATING,
    DATA_SOURCES,
    MODEL_SOURCES,
    SECTIONS_READ,
    WORKLOADS,
    ArchConfig,
    CompressConfig,
    DataConfig,
    DistillConfig,
    InferConfig,
    LaunchConfig,
    LimitsConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)
from profiler.config.validation import MAX_LEARNING_RATE, path_problem, validate
from profiler.errors import ConfigError

__all__ = [
    "CALIBRATING", "DATA_SOURCES", "MAX_CONFIG_BYTES", "MAX_LEARNING_RATE", "MAX_TEXT_CHARS",
    "MODEL_SOURCES", "PRESETS_DIR", "SECTIONS_READ", "WORKLOADS", "ArchConfig", "CompressConfig",
    "ConfigError", "DataConfig", "DistillConfig", "InferConfig", "LaunchConfig", "LimitsConfig",
    "ModelConfig", "RunConfig", "TrainConfig", "apply_overrides", "list_presets", "load_target",
    "path_problem", "resolve", "validate",
]
