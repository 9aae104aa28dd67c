"""Will it fit, in figures (no torch): what profiler/engine/memory_trace.py traced, judged against
a device's memory with a stated margin band, the largest micro-batch that fits, and the words
the CLI, the app, the tuner and the report show.

A trace counts the tensors a step holds (what torch.cuda.max_memory_allocated counts on a GPU).
What it cannot see is a band beside it, never a fudge factor inside it:
- the CUDA context (kernels, cuBLAS / cuDNN handles): outside the allocator, about 0.3 to 1 GiB;
- the caching allocator: each block rounded up (512 B, large ones to 2 MiB) and cached blocks
  that fragment, so what it reserves runs 0 to 10 % above what it allocates;
- NCCL's buffers in a job of several processes: about 0.2 to 1 GiB per process;
- on a CPU: the process itself (Python, torch and its libraries), about 0.3 to 0.8 GiB.
"""

from __future__ import annotations

SCHEMA = 1
"""The version of a trace result's shape (the cache refuses another)."""

PARTS = (("weights", "Weights"), ("gathered_weights", "Gathered weights (FSDP)"),
         ("buffers", "Buffers"), ("gradients", "Gradients"),
         ("optimizer_states", "Optimizer states"), ("activations", "Activations"),
         ("kv_cache", "KV cache"), ("temporaries", "Temporaries"), ("inputs", "Inputs"))
"""Every part a trace reports, in the order it is shown, with its label."""
PART_KEYS = tuple(key for key, _ in PARTS)
PHASES = ("forward", "backward", "optimizer step", "prefill", "decode")

def valid(result: object) -> bool:
    """An answer as profiler.engine.memory_estimate writes it (the cache, `effiscope estimate
    --json` read by the app): anything else is refused."""
    if not isinstance(result, dict) or result.get("schema") != SCHEMA:
        return False
    numbers = [result.get("peak")] + list((result.get("parts") or {}).values())
    return (all(isinstance(n, int) and n >= 0 for n in numbers)
            and isinstance(result.get("parts"), dict)
            and set(result["parts"]) <= set(PART_KEYS)
            and isinstance(result.get("peak_by_batch"), dict)
            and all(isinstance(v, dict) and set(v) <= set(PHASES)
                    and all(isinstance(n, int) for n in v.values())
                    for v in result["peak_by_batch"].values())
            and result.get("peak_phase") in PHASES
            and result.get("target") in ("cuda", "cpu")
            and isinstance(result.get("world_size"), int)
            and isinstance(result.get("notes"), list)
            and all(isinstance(n, str) for n in result["notes"]))


GIB = 2**30
MARGIN = {
    "cuda": (("CUDA context (kernels, cuBLAS / cuDNN handles), outside the allocator", 0.3, 1.0),
             ("caching allocator: block rounding and fragmentation (of the traced peak)", 0.0,
              0.10)),
    "cpu": (("the process itself (Python, torch and its libraries)", 0.3, 0.8),),
    "nccl": (("NCCL's buffers (a job of several processes)", 0.2, 1.0),),
}
"""The margin band (see the module doc): (what, low, high), GiB, or a fraction of the peak
where the text says "of the traced peak"."""


def margin_band(peak: int, target: str, world_size: int = 1) -> dict:
    """What the process needs beyond the traced tensors, as a band: {"low", "high" (bytes),
    "parts": [(what, low, high)]}; never added into the peak itself."""
    parts = list(MARGIN["cuda" if target == "cuda" else "cpu"])
    if world_size > 1 and target == "cuda":
        parts += list(MARGIN["nccl"])
    low = high = 0
    shown = []
    for what, lo, hi in parts:
        scale = peak if "of the traced peak" in what else GIB
        low, high = low + int(lo * scale), high + int(hi * scale)
        shown.append((what, int(lo * scale), int(hi * scale)))
    return {"low": low, "high": high, "parts": shown}


def verdict(peak: int, capacity: int, band: dict) -> str:
    """"fits" when the peak and the top of the band fit, "does not fit" when the peak and the
    bottom of the band do not, else "may fit" (within the band: measure a short run)."""
    if peak + band["high"] <= capacity:
        return "fits"
    if peak + band["low"] > capacity:
        return "does not fit"
    return "may fit"


def largest_micro_batch(peaks_at: dict[int, dict[str, int]], capacity: int, target: str,
                        world_size: int = 1, limit: int = 1 << 16) -> int | None:
    """The largest micro-batch whose peak, with the top of the margin band, fits `capacity`,
    from each phase's peak traced at two batch sizes ({batch: {phase: peak}}): a phase's peak
    is a fixed part (weights, states, gradients) plus a part per sequence (activations), so the
    line through its two points holds; the step's peak at a batch is the highest phase's (which
    phase that is may change with the batch: a small batch peaks where the gradients are, a
    large one where the activations are). 0 when not even batch 1 fits; None without two
    points."""
    if len(peaks_at) < 2:
        return None
    (b1, p1), (b2, p2) = sorted(peaks_at.items())[:2]
    lines = [(p1[phase] - (p2[phase] - p1[phase]) / (b2 - b1) * b1,
              max((p2[phase] - p1[phase]) / (b2 - b1), 0.0)) for phase in p1 if phase in p2]

    def fits(batch: int) -> bool:
        peak = int(max(fixed + slope * batch for fixed, slope in lines))
        return peak + margin_band(peak, target, world_size)["high"] <= capacity

    if not lines or not fits(1):
        return 0
    low, high = 1, limit
    if fits(high):
        return limit
    while high - low > 1:  # the peak grows with the batch: the last batch that fits
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def catalogue(device_names: list[str] | None = None) -> list[tuple[str, int]]:
    """(label, bytes) of every GPU memory size in the peak catalogue, or of the names given."""
    from profiler.figures import peaks

    if device_names:
        found = []
        for name in device_names:
            peak = peaks.match_device(name) or _by_label(name)
            size = peaks.memory_gib(peak, name) if peak is not None else None
            if size is None:
                raise ValueError(f"no memory size known for GPU {name!r}; use one of "
                                 f"{', '.join(p.label for p in peaks.PEAKS if p.memory)}")
            found.append((f"{peak.label} {size[0]}", int(size[1] * GIB)))
        return found
    return [(f"{p.label} {label}", int(gib * GIB)) for p in peaks.PEAKS
            for label, gib in p.memory]


def _by_label(name: str):
    """A short name ("4090", "h200 nvl") matched against the catalogue's labels: the first
    whose words hold every word of the name but its size ("40gb")."""
    import re

    from profiler.figures import peaks

    wanted = {w for w in re.split(r"[^0-9a-z]+", name.lower()) if w and not w.endswith("gb")}
    for peak in peaks.PEAKS:
        if wanted and wanted <= set(re.split(r"[^0-9a-z]+", peak.label.lower())):
            return peak
    return None


def fit_rows(result: dict, gpus: list[tuple[str, int]]) -> list[dict]:
    """Per GPU: its memory, the verdict, the room left at the band's top, the largest
    micro-batch (when the result carries the peaks at two batch sizes)."""
    world = result.get("world_size", 1)
    band = margin_band(result["peak"], "cuda", world)
    points = {int(k): v for k, v in (result.get("peak_by_batch") or {}).items()}
    rows = []
    for label, capacity in gpus:
        rows.append({"gpu": label, "memory": capacity,
                     "verdict": verdict(result["peak"], capacity, band),
                     "free": capacity - result["peak"] - band["high"],
                     "largest_micro_batch": largest_micro_batch(points, capacity, "cuda",
                                                                world)})
    return rows


def gib(value: int | float | None) -> str:
    """Bytes as people read them (KiB / MiB / GiB, three digits), "n/a" when missing."""
    from profiler.figures.metrics import format_value

    return format_value(value, "bytes")


def summary_lines(result: dict) -> list[str]:
    """The answer as text: parts at the peak, the phase, the band, what was left out."""
    sharded = (f", {result['sharding'].upper()} over {result['world_size']} processes (per "
               "process)" if result.get("sharding") not in (None, "none") else
               f", {result['world_size']} processes, each with the whole model (no ddp or fsdp "
               "in the config)" if result.get("world_size", 1) > 1 else "")
    lines = [f"{result['model']}: {result['workload']}, micro-batch {result['batch_size']} x "
             f"{result['seq_len']}{sharded}, {', '.join(result['techniques']) or 'no techniques'}",
             f"peak {gib(result['peak'])} during the {result['peak_phase']}"]
    labels = dict(PARTS)
    for key in PART_KEYS:
        value = result["parts"].get(key)
        if value:
            lines.append(f"  {labels[key]:<24} {gib(value):>12}")
    band = margin_band(result["peak"], result["target"], result.get("world_size", 1))
    lines.append(f"margin band, not included above: {gib(band['low'])} to {gib(band['high'])}")
    for what, low, high in band["parts"]:
        lines.append(f"  {what}: {gib(low)} to {gib(high)}")
    lines += [f"note: {note}" for note in result.get("notes", [])]
    return lines
