"""The metric catalogue: every key a real run emits is in it with a unit, and figures read as
three significant digits, never rounded to zero."""

from __future__ import annotations

import pytest

from profiler.config import RunConfig, validate
from profiler.figures import metrics
from profiler.figures.metrics import (
    CATALOGUE,
    CHARTS_BY_NAME,
    format_change,
    format_value,
    known,
    metric,
)
from tests.helpers import NullControl, run_config


def _run(config: RunConfig) -> tuple[dict, list[dict]]:
    import importlib

    validate(config)
    workload = importlib.import_module(f"profiler.engine.workloads.{config.workload}")
    messages: list[dict] = []
    summary = workload.run(config, messages.append, NullControl())
    return summary, messages


def _tiny(workload: str, **techniques) -> RunConfig:
    config = run_config(steps=3, eval_interval=2, batch_size=2, seq_len=16)
    config.workload = workload
    config.data.max_train_bytes = 40_000
    config.techniques = dict(techniques)
    infer = config.infer
    infer.batch_size, infer.prompt_len, infer.gen_len = 1, 8, 3
    infer.repeats, infer.warmup_runs, infer.eval_tokens, infer.eval_seq_len = 2, 1, 64, 16
    if workload == "distill":
        config.distill.teacher.preset = "gpt-nano"
        config.distill.teacher_train_steps = 2
    return config


@pytest.fixture(scope="module")
def emitted() -> dict[str, dict[str, str]]:
    """workload -> {key: the unit it came with ("" for a sample key)}, from tiny real runs."""
    out = {}
    for workload, techniques in (("train", {}), ("infer", {}),
                                 ("compress", {"prune_magnitude": {"amount": 0.5}}),
                                 ("distill", {})):
        summary, messages = _run(_tiny(workload, **techniques))
        keys = {k: "" for m in messages if m["type"] == "sample" for k in m["metrics"]}
        keys.update({k: f.get("unit", "") for k, f in summary["figures"].items()})
        out[workload] = keys
    return out


@pytest.mark.slow
def test_every_key_a_real_run_emits_is_catalogued_with_its_unit(emitted):
    for workload, keys in emitted.items():
        unknown = sorted(k for k in keys if not known(k))
        assert not unknown, f"{workload} emits keys the catalogue lacks: {unknown}"
        # A figure's own unit agrees with the catalogue's ("" is a figure that says none).
        wrong = {k: (u, metric(k).unit) for k, u in keys.items() if u and u != metric(k).unit}
        assert not wrong, f"{workload}: figure unit vs catalogue unit: {wrong}"
    assert {"rss_bytes", "loss_val", "tokens_per_s"} <= set(emitted["train"])
    assert "baseline_decode_tokens_per_s" in emitted["compress"]
    assert "model_bytes_ratio" in emitted["compress"]
    assert "kl_to_teacher_val_final" in emitted["distill"]


def test_every_catalogue_entry_has_a_label_a_unit_a_group_and_a_valid_chart():
    for key, entry in CATALOGUE.items():
        assert entry.key == key and entry.label and entry.group and entry.description, key
        assert entry.unit, f"{key} has no unit (a pure number is {metrics.DIMENSIONLESS!r})"
        assert entry.better in ("higher", "lower", None), key
        assert entry.chart is None or entry.chart in CHARTS_BY_NAME, key
        if entry.chart is not None:  # a chart draws one unit
            assert CHARTS_BY_NAME[entry.chart].unit == entry.unit, key


@pytest.mark.parametrize(("key", "label", "unit", "chart"), [
    ("rank3_step_time_s", "Rank 3 step time", "s", "step_time"),
    ("rank0_rss_bytes", "Rank 0 process RSS", "bytes", "memory"),
    ("rank1_torch_peak_allocated_bytes", "Rank 1 torch peak allocated", "bytes", None),
    ("baseline_ttft_s", "Time to first token (original)", "s", "latency"),
    ("compressed_decode_tokens_per_s", "Decode throughput (compressed)", "tokens/s", "speed"),
    ("baseline_ttft_p50_s", "Time to first token p50 (original)", "s", None),
    ("model_bytes_ratio", "Weights in memory, compressed / original", "x", None),
    ("encode_latency_p90_s", "Forward pass latency p90", "s", None),
    ("baseline_encode_tokens_per_s", "Encoding throughput (original)", "tokens/s", "speed"),
])
def test_built_keys_resolve_from_their_base_entry(key, label, unit, chart):
    found = metric(key)
    assert known(key)
    assert (found.label, found.unit, found.chart) == (label, unit, chart)
    assert found.better == metric(key.split("_", 1)[1] if key.startswith("rank") else
                                  key.removeprefix("baseline_").removeprefix("compressed_")
                                  .removesuffix("_ratio")).better or "_p" in key


def test_an_unknown_key_gets_words_and_the_unit_of_its_name_not_an_exception():
    found = metric("warp_speed_bytes")
    assert not known("warp_speed_bytes")
    assert (found.label, found.unit, found.chart) == ("Warp speed", "bytes", None)


@pytest.mark.parametrize(("value", "unit", "text"), [
    (1.8123, "tokens/s", "1.81 tokens/s"),
    (0.5671, "x", "0.567×"),
    (12_345.6, "tokens/s", "12,300 tokens/s"),
    (0.00421, "s", "4.21 ms"),
    (4.56e-6, "s", "4.56 µs"),
    (2.5, "s", "2.50 s"),
    (123_456_789, "bytes", "118 MiB"),
    (512, "bytes", "512 B"),
    (0.4213, "fraction", "42.1 %"),
    (1.2e12, "FLOP", "1.20 TFLOP"),
    (124_439_808, "parameters", "124,439,808 parameters"),
    (4.12345, "nats/token", "4.12 nats/token"),
    (0.9996, "1", "1.00"),
    (0.0004, "nats/token", "0.000400 nats/token"),
    (None, "s", "n/a"),
    (float("nan"), "bytes", "n/a"),
])
def test_figures_print_three_significant_digits_never_rounded_to_zero(value, unit, text):
    assert format_value(value, unit) == text


def test_changes_and_bare_values():
    assert format_change(0.004) == "+0.00400 %"
    assert format_change(-12.34) == "−12.3 %"
    assert format_change(None) == "n/a"
    assert format_value(1.81, "tokens/s", with_unit=False) == "1.81"
    assert metrics.format_figure("sparsity", 0.5, "") == "50.0 %"  # the catalogue's unit wins
    assert metrics.format_figure("new_thing_s", 0.002, "s") == "2.00 ms"
