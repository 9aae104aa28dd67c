"""Original against compressed, as one table: sizes measured on both, the rows (baseline,
compressed, ratio, difference, unit, how), the figures derived from the rows, and the plain
sentence that says what compression cost. Used by the compress workload for causal LMs and for
encoders."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

from profiler import sizes
from profiler.stats import figure
from profiler.workloads.setup import Prepared
from techniques import registry
from techniques.runtime import TrainState


def compress_copy(prep: Prepared, tune: Callable[[TrainState], str] | None = None,
                  **started: Any) -> TrainState:
    """Apply the non-compression techniques to the original (so both models run with them),
    send `started`, then apply compression to a copy — with the optional fine-tune `tune`
    between pruning and folding the masks; returns the copy's state."""
    import copy

    compression = {n: p for n, p in prep.wanted.items()
                   if registry.get(n).category == "compression"}
    prep.apply({n: p for n, p in prep.wanted.items() if n not in compression})
    state = prep.state.fork(copy.deepcopy(prep.model))
    prep.started("compress", **started,
                 techniques=[{"name": n, "params": p} for n, p in prep.wanted.items()])
    finetune = (lambda: tune(state)) if tune is not None else None
    prep.announce(prep.apply(compression, state=state, finetune=finetune))
    state.model.eval()
    return state


def measure_sizes(models: dict[str, Any]) -> dict[str, dict]:
    """Parameters, non-zero parameters, sparsity, bytes in memory and on disk of each model."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="effiscope-size-") as folder:
        for name, model in models.items():
            params, nonzero = sizes.parameter_counts(model)
            try:
                disk: int | None = sizes.disk_bytes(model, folder)
            except Exception:  # noqa: BLE001 - a format safetensors cannot hold: n/a, not a failure
                disk = None
            out[name] = {"parameters": params, "nonzero_parameters": nonzero,
                         "sparsity": 1 - nonzero / params if params else None,
                         "model_bytes": sizes.model_bytes(model), "disk_bytes": disk}
    return out


class Rows:
    """The comparison table being built: one row per measure."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, key: str, label: str, unit: str, base, comp, how: str,
            better: str = "lower") -> None:
        ratio = comp / base if base not in (None, 0) and comp is not None else None
        delta = comp - base if base is not None and comp is not None else None
        self.rows.append({"key": key, "label": label, "unit": unit, "baseline": base,
                          "compressed": comp, "ratio": ratio, "delta": delta, "better": better,
                          "how": how})

    def add_sizes(self, size: dict) -> None:
        b, c = size["baseline"], size["compressed"]
        self.add("parameters", "Parameters", "", b["parameters"], c["parameters"],
                 "elements of every weight tensor (quantized weights counted as their int values)")
        self.add("nonzero_parameters", "Non-zero parameters", "", b["nonzero_parameters"],
                 c["nonzero_parameters"], "weights that are not exactly zero, counted")
        self.add("sparsity", "Sparsity", "", b["sparsity"], c["sparsity"],
                 "share of exact zeros over all weights (biases and norms included)", "higher")
        self.add("model_bytes", "Weights in memory", "bytes", b["model_bytes"], c["model_bytes"],
                 "bytes of the weight tensors as held (int8 values + scales for quantized layers)")
        self.add("disk_bytes", "Weights on disk", "bytes", b["disk_bytes"], c["disk_bytes"],
                 "size of a safetensors file of those tensors, written to a temporary folder")

    def add_speed(self, speed: dict, measures: tuple) -> None:
        for key, label, unit, better in measures:
            base = speed["baseline"].get(key, {})
            comp = speed["compressed"].get(key, {})
            self.add(key, label, unit, base.get("value"), comp.get("value"),
                     comp.get("how", "not measured"), better)

    def by_key(self) -> dict[str, dict]:
        return {row["key"]: row for row in self.rows}

    def figures(self, unpaired: tuple[str, ...] = ()) -> dict:
        """Each row as the compressed model's figure, the original's (baseline_KEY) and their
        ratio (KEY_ratio, for rows with a unit); `unpaired` rows have no baseline figure."""
        out = {}
        for row in self.rows:
            if row["key"] in unpaired:
                out[row["key"]] = figure(row["compressed"], row["unit"], row["how"])
                continue
            out[row["key"]] = figure(row["compressed"], row["unit"],
                                     f"compressed model: {row['how']}")
            out[f"baseline_{row['key']}"] = figure(row["baseline"], row["unit"],
                                                   f"original model: {row['how']}")
            if row["ratio"] is not None and row["unit"]:
                out[f"{row['key']}_ratio"] = figure(row["ratio"], "x", "compressed / original")
        return out


GENERATION_MEASURES = (
    ("prefill_latency_p50_s", "Prefill latency p50", "s", "lower"),
    ("ttft_p50_s", "Time to first token p50", "s", "lower"),
    ("decode_latency_p50_s", "Decode latency per token p50", "s", "lower"),
    ("decode_latency_p90_s", "Decode latency per token p90", "s", "lower"),
    ("decode_tokens_per_s", "Decode throughput", "tokens/s", "higher"),
)
ENCODER_MEASURES = (
    ("encode_latency_p50_s", "Forward pass p50", "s", "lower"),
    ("encode_latency_p90_s", "Forward pass p90", "s", "lower"),
    ("encode_tokens_per_s", "Encoding throughput", "tokens/s", "higher"),
)


def causal_rows(size: dict, speed: dict, quality: dict) -> Rows:
    rows = Rows()
    rows.add_sizes(size)
    rows.add_speed(speed, GENERATION_MEASURES)
    rows.add("perplexity", "Perplexity", "", quality["perplexity"][0], quality["perplexity"][1],
             f"exp(mean token cross-entropy) on {quality['tokens']:,} held-out tokens")
    rows.add("loss_val", "Validation loss", "nats/token", quality["loss"][0], quality["loss"][1],
             "mean token cross-entropy on the same text")
    rows.add("kl_to_baseline", "KL(baseline‖compressed)", "nats/token",
             0.0 if quality["tokens"] else None, quality["kl"][1],
             "mean over tokens of the KL divergence of the next-token distributions")
    return rows


def encoder_rows(size: dict, speed: dict, quality: dict, seq_len: int) -> Rows:
    rows = Rows()
    rows.add_sizes(size)
    rows.add_speed(speed, ENCODER_MEASURES)
    how = (f"over {quality['windows']} held-out windows of {seq_len} tokens, embeddings of the "
           "original vs the compressed model")
    have = bool(quality["windows"])
    rows.add("embedding_cosine_mean", "Embedding cosine similarity (mean)", "",
             1.0 if have else None, quality["cosine_mean"], how, "higher")
    rows.add("embedding_cosine_min", "Embedding cosine similarity (min)", "",
             1.0 if have else None, quality["cosine_min"], how, "higher")
    rows.add("embedding_max_abs_diff", "Largest embedding difference", "",
             0.0 if have else None, quality["max_abs_diff"], how)
    return rows


def _size_and_speed(size: dict, rows: dict, speed_key: str, verb: str) -> list[str]:
    mem_b, mem_c = size["baseline"]["model_bytes"], size["compressed"]["model_bytes"]
    parts = [f"the weights take {mem_c / mem_b:.0%} of the original bytes in memory"]
    speed = rows.get(speed_key)
    if speed and speed["ratio"] is not None:
        parts.append(f"{verb} runs at {speed['ratio']:.2f}x the original's tokens/s")
    return parts


def causal_sentence(size: dict, rows: dict, quality: dict, finetune_steps: int = 0) -> str:
    """The paper's 'performance loss after compression', in one plain sentence."""
    ppl_b, ppl_c = quality["perplexity"]
    parts = []
    if ppl_b is not None and ppl_c is not None:
        change = (ppl_c / ppl_b - 1) * 100
        verb = "rose" if change > 0 else "fell" if change < 0 else "stayed the same,"
        parts.append(f"Perplexity {verb} from {ppl_b:.4g} to {ppl_c:.4g} ({change:+.2f} %), "
                     f"KL(baseline‖compressed) = {quality['kl'][1]:.3g} nats/token")
    else:
        parts.append("Quality was not measured (infer.eval_tokens = 0)")
    parts += _size_and_speed(size, rows, "decode_tokens_per_s", "decoding")
    if finetune_steps:
        parts.append(f"the compressed model also had {finetune_steps} fine-tuning steps on the "
                     "text, so part of the quality change is training, not compression")
    return "; ".join(parts) + "."


def encoder_sentence(size: dict, rows: dict, quality: dict) -> str:
    """The quality loss of a compressed encoder, in one plain sentence."""
    parts = []
    if quality["cosine_mean"] is not None:
        parts.append(f"The compressed encoder's embeddings have a cosine similarity of "
                     f"{quality['cosine_mean']:.6f} on average (1 - cosine = "
                     f"{1 - quality['cosine_mean']:.2g}; lowest {quality['cosine_min']:.6f}) to "
                     f"the original's, largest absolute difference {quality['max_abs_diff']:.3g}")
    else:
        parts.append("Quality was not measured (infer.eval_tokens = 0)")
    parts += _size_and_speed(size, rows, "encode_tokens_per_s", "encoding")
    return "; ".join(parts) + "."
