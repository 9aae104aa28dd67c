"""A metric key to its catalogue entry: a catalogued key, a key built from one (a parallel
run's `rank1_step_time_s`, a compress run's `baseline_ttft_p50_s` and `model_bytes_ratio`, a
percentile `decode_latency_p90_s`), or an unknown key (a newer worker's), which gets a neutral
entry from its name: never an exception.
"""

from __future__ import annotations

import re
from dataclasses import replace

from profiler.figures.metrics.catalogue import CATALOGUE, Metric

VARIANT_PREFIXES = {"baseline_": "original", "compressed_": "compressed"}
"""A compress run reports both models: `baseline_KEY` and `compressed_KEY` share KEY's unit."""
_RANK = re.compile(r"^rank(\d+)_(.+)$")
_PERCENTILE = re.compile(r"^(.+)_p(\d\d)_s$")
PATTERNS = ("rank{N}_KEY", "baseline_KEY", "compressed_KEY", "KEY_ratio", "STEM_pNN_s")
"""The key forms resolved from a catalogued KEY (STEM_s for a percentile)."""


def _resolve(key: str) -> Metric | None:
    """The entry for a catalogued key or one built from it; None for an unknown key."""
    found = CATALOGUE.get(key)
    if found is not None:
        return found
    rank = _RANK.match(key)
    if rank:
        base = _resolve(rank[2])
        if base is not None:
            return replace(base, key=key, label=f"Rank {rank[1]} {_lower_first(base.label)}",
                           description=f"{base.description} Rank {rank[1]} of the job.")
    for prefix, model in VARIANT_PREFIXES.items():
        base = _resolve(key[len(prefix):]) if key.startswith(prefix) else None
        if base is not None:
            return replace(base, key=key, label=f"{base.label} ({model})",
                           description=f"{base.description} The {model} model.")
    if key.endswith("_ratio"):
        base = _resolve(key[:-len("_ratio")])
        if base is not None:
            return replace(base, key=key, label=f"{base.label}, compressed / original", unit="x",
                           chart=None, sparse=False, description="Compressed / original.")
    percentile = _PERCENTILE.match(key)
    if percentile:
        base = _resolve(f"{percentile[1]}_s")
        if base is not None and base.unit == "s":
            q = percentile[2]
            return replace(base, key=key, label=f"{base.label} p{q}", chart=None,
                           description=f"{q}th percentile over the measured steps. "
                                       f"{base.description}")
    return None


def _lower_first(text: str) -> str:
    """"Step time" -> "step time", but "GPU power" stays."""
    return text if text[1:2].isupper() else text[:1].lower() + text[1:]


_ACRONYMS = {"ttft": "TTFT", "kv": "KV", "mfu": "MFU", "gpu": "GPU", "cpu": "CPU", "rss": "RSS",
             "flops": "FLOPs"}
_SUFFIX_UNITS = (("tokens_per_s", "tokens/s"), ("_bytes", "bytes"), ("_percent", "%"),
                 ("_s", "s"), ("_w", "W"), ("_j", "J"), ("_c", "°C"))


def _unknown(key: str) -> Metric:
    """A key a newer worker sends that this catalogue lacks: words from the key, the unit its
    name carries, drawn nowhere."""
    unit, stem = "", key
    for suffix, suffix_unit in _SUFFIX_UNITS:
        if key.endswith(suffix):
            unit = suffix_unit
            stem = key if suffix == "tokens_per_s" else key[:-len(suffix)]
            break
    words = [_ACRONYMS.get(w, w) for w in stem.replace("_per_", "/").split("_")]
    text = " ".join(words)
    return Metric(key, text[:1].upper() + text[1:], unit, "other", None, "")


def known(key: str) -> bool:
    """Whether the catalogue describes key (itself, or as one of PATTERNS)."""
    return _resolve(key) is not None


def metric(key: str) -> Metric:
    """The catalogue entry for key; an unknown key gets a neutral entry, never an exception."""
    return _resolve(key) or _unknown(key)
