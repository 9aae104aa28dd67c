"""Original against compressed, as one table: sizes measured on both, the rows (baseline,
compressed, ratio, difference, unit, how), the figures derived from the rows, and the plain
sentence that says what compression cost. Used by the compress workload for causal LMs and for
encoders."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

from profiler.engine.workloads.generation import perplexity_how, scoring_how
from profiler.engine.workloads.setup import Prepared
from profiler.figures.significance import paired_verdict
from profiler.figures.stats import figure, ratio_interval, ratio_text
from profiler.measure import sizes
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
                 techniques=[{"name": n, "params": p.as_dict()} for n, p in prep.wanted.items()])
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

    def __init__(self, busy: str = "") -> None:
        self.rows: list[dict] = []
        self.busy = busy
        """Why the run's timings shared the machine ("" when they did not): no speed verdict."""

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

    def add_speed(self, speed: dict, measures: tuple, samples: dict | None = None) -> None:
        """The speed rows; where `samples` holds one value per timed run of each model
        ({"baseline": {key: [...]}, "compressed": {...}}), the ratio comes with its bootstrap
        interval and verdict (stats.ratio_interval judged by significance.paired_verdict); a
        percentile row other than the median
        keeps a bare ratio (no interval is claimed for it)."""
        for key, label, unit, better in measures:
            base = speed["baseline"].get(key, {})
            comp = speed["compressed"].get(key, {})
            self.add(key, label, unit, base.get("value"), comp.get("value"),
                     comp.get("how", "not measured"), better)
            row = self.rows[-1]
            for name, fig in (("baseline", base), ("compressed", comp)):
                if fig.get("distribution"):
                    row[f"{name}_distribution"] = fig["distribution"]
            a = (samples or {}).get("compressed", {}).get(key)
            b = (samples or {}).get("baseline", {}).get(key)
            if a is not None and b is not None:  # judged by the one rule (significance)
                row["vs_baseline"] = paired_verdict(ratio_interval(a, b), better, self.busy)
                row["ratio"] = row["vs_baseline"]["ratio"]

    def by_key(self) -> dict[str, dict]:
        return {row["key"]: row for row in self.rows}

    def figures(self, unpaired: tuple[str, ...] = ()) -> dict:
        """Each row as the compressed model's figure, the original's (baseline_KEY) and their
        ratio (KEY_ratio, for rows with a unit, with its interval and verdict as `vs_baseline`
        where the row has one); `unpaired` rows have no baseline figure. Timed rows keep each
        model's distribution."""
        out = {}
        for row in self.rows:
            if row["key"] in unpaired:
                out[row["key"]] = figure(row["compressed"], row["unit"], row["how"])
                continue
            out[row["key"]] = _with_distribution(
                figure(row["compressed"], row["unit"], f"compressed model: {row['how']}"),
                row.get("compressed_distribution"))
            out[f"baseline_{row['key']}"] = _with_distribution(
                figure(row["baseline"], row["unit"], f"original model: {row['how']}"),
                row.get("baseline_distribution"))
            if row["ratio"] is not None and row["unit"]:
                out[f"{row['key']}_ratio"] = ratio_figure(row, "compressed / original")
        return out


def _with_distribution(fig: dict, dist: dict | None) -> dict:
    return {**fig, "distribution": dist} if dist else fig


def ratio_figure(row: dict, how: str) -> dict:
    """A row's compressed / original ratio as a figure; with `vs_baseline` (ratio, ci_low,
    ci_high, verdict) where the row was measured often enough for an interval."""
    fig = figure(row["ratio"], "x", how)
    interval = row.get("vs_baseline")
    if interval:
        fig["how"] = (f"{how}: ratio of the medians over interleaved timed runs, 95 % bootstrap "
                      "interval")
        fig["vs_baseline"] = interval
    return fig


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


def batch_note(quality: dict, techniques: list[str] | tuple[str, ...] = ()) -> str | None:
    """The sentence a batch-dependent technique needs beside its quality figures, else None
    (metrics.scoring_note, the one wording; scored at the latency batch size)."""
    from profiler.figures.metrics import scoring_note

    if not quality.get("tokens"):
        return None
    note = scoring_note(quality["batch_size"], techniques)
    return (f"{note} (scored at the latency batch size, infer.batch_size = "
            f"{quality['batch_size']})") if note else None


def causal_rows(size: dict, speed: dict, quality: dict, samples: dict | None = None,
                techniques: list[str] | tuple[str, ...] = (), busy: str = "") -> Rows:
    rows = Rows(busy)
    rows.add_sizes(size)
    rows.add_speed(speed, GENERATION_MEASURES, samples)
    have = bool(quality["tokens"])
    how = scoring_how(quality, techniques) if have else "not measured (infer.eval_tokens = 0)"
    rows.add("perplexity", "Perplexity", "", quality["perplexity"][0], quality["perplexity"][1],
             perplexity_how(max(quality["loss"], key=lambda v: v or 0.0), how))
    rows.add("loss_val", "Validation loss", "nats/token", quality["loss"][0], quality["loss"][1],
             f"mean token cross-entropy on {how}")
    rows.add("kl_to_baseline", "KL(baseline‖compressed), mean", "nats/token",
             0.0 if have else None, quality["kl"][1],
             f"mean over predicted tokens of the KL divergence of the next-token distributions, "
             f"{how}")
    rows.add("kl_p99", "KL(baseline‖compressed), p99", "nats/token", 0.0 if have else None,
             quality["kl_p99"][1],
             f"99th percentile over predicted tokens of the same KL divergence, {how}")
    rows.add("top1_agreement", "Top-1 agreement", "fraction", 1.0 if have else None,
             quality["top1_agreement"][1],
             f"share of predicted positions where both models' most likely next token is the "
             f"same, {how}", "higher")
    return rows


def encoder_rows(size: dict, speed: dict, quality: dict, seq_len: int,
                 samples: dict | None = None, busy: str = "") -> Rows:
    rows = Rows(busy)
    rows.add_sizes(size)
    rows.add_speed(speed, ENCODER_MEASURES, samples)
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


def _size_and_speed(size: dict, rows: dict, speed_key: str, verb: str,
                    latency_key: str | None = None) -> list[str]:
    mem_b, mem_c = size["baseline"]["model_bytes"], size["compressed"]["model_bytes"]
    parts = [f"the weights take {mem_c / mem_b:.0%} of the original bytes in memory"]
    speed = ratio_text(rows.get(speed_key))
    if speed is not None:
        if not rows[speed_key]["vs_baseline"].get("significant"):
            parts.append(f"{verb} tokens/s: {speed} against the original's")
        else:
            parts.append(f"{verb} runs at {speed} the original's tokens/s")
    latency = ratio_text(rows.get(latency_key)) if latency_key else None
    if latency is not None:
        if not rows[latency_key]["vs_baseline"].get("significant"):
            parts.append(f"prefill latency: {latency} against the original's")
        else:
            parts.append(f"prefill takes {latency} the original's time")
    return parts


def causal_sentence(size: dict, rows: dict, quality: dict, finetune_steps: int = 0,
                    techniques: list[str] | tuple[str, ...] = ()) -> str:
    """The paper's 'performance loss after compression', in one plain sentence: quality at the
    batch size it was scored in, then size, then speed ratios with their intervals ("no
    significant difference" where the interval contains 1)."""
    ppl_b, ppl_c = quality["perplexity"]
    parts = []
    if ppl_b is not None and ppl_c is not None:
        change = (ppl_c / ppl_b - 1) * 100
        verb = "rose" if change > 0 else "fell" if change < 0 else "stayed the same,"
        parts.append(f"Perplexity {verb} from {ppl_b:.4g} to {ppl_c:.4g} ({change:+.2f} %), "
                     f"KL(baseline‖compressed) = {quality['kl'][1]:.3g} nats/token mean, "
                     f"{quality['kl_p99'][1]:.3g} p99 over tokens, top-1 agreement "
                     f"{quality['top1_agreement'][1]:.1%} (scored {quality['batch_size']} "
                     "window(s) per forward pass)")
    elif quality["tokens"]:
        losses = " and ".join(f"{v:.4g}" for v in quality["loss"] if v is not None)
        parts.append(f"Perplexity is n/a: infinite at a loss of {losses} nats/token "
                     "(original and compressed; exp of it is beyond any float)")
    else:
        parts.append("Quality was not measured (infer.eval_tokens = 0)")
    note = batch_note(quality, techniques)
    if note:
        parts.append(note)
    parts += _size_and_speed(size, rows, "decode_tokens_per_s", "decoding",
                             "prefill_latency_p50_s")
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
