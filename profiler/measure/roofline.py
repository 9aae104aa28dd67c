"""A measured roofline: this machine's achievable matmul FLOP/s per dtype and its memory bandwidth.

A datasheet peak exists for GPUs (profiler.figures.peaks) but not for CPUs, so MFU on a CPU had no
meaning. Here the peak is measured instead: square matmuls of a few sizes large enough to
saturate the device (the best size's median FLOP/s over several timed repeats after warmup), and a
large tensor copy for bandwidth (bytes read + written / time). Each result says how it was
measured and carries its spread (stats.timed_figure). It is measured once per machine and
cached in the data dir (store.data_home() / roofline.json), keyed by a fingerprint of what the
figures depend on: the device (CPU model or GPU name), torch's version and the thread count. A
cache entry for another fingerprint, or a damaged file, is measured again, with a sentence.

torch is imported only inside the functions that measure.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from typing import Any

from profiler.figures.stats import timed_figure
from profiler.measure.system import bf16_native

SCHEMA = 1
CACHE_NAME = "roofline.json"
DTYPES = {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "tf32", "bf16", "fp16")}
SIZES = {"cpu": (1024, 2048), "cuda": (4096, 8192)}
"""Square matmul sides per device: large enough that the matmul kernel, not the call, is timed."""
COPY_BYTES = {"cpu": 256 * 2**20, "cuda": 2 * 2**30}
"""Bytes of the tensor copied for bandwidth: well beyond the last-level cache."""
REPEATS, WARMUP = 7, 2
"""7 timed repeats: the fewest whose median has a 95 % order-statistics interval (stats)."""
INNER = {"cpu": 1, "cuda": 10}
"""Matmuls per timed repeat: one GPU matmul is too short for a host clock around two syncs."""
NA_HINT = "run `effiscope roofline` to measure this machine's peak"
DATASHEET_MARGIN = 1.1
"""A measured peak above the datasheet's by more than this factor is a timing error (the clock
read before the GPU finished), never a faster GPU: it is refused, not cached."""


class RooflineError(ValueError):
    """A request that cannot be measured (an unknown device, CUDA absent): says what to do."""


# --- fingerprint ------------------------------------------------------------------------------
def device_kind(device: str) -> str:
    kind = str(device).split(":")[0].strip().lower()
    if kind not in DTYPES:
        raise RooflineError(f"the roofline is measured on cpu or cuda, not {device!r}")
    return kind


def fingerprint(device: str = "cpu") -> dict:
    """What the measured figures depend on: device kind and name, torch version, threads."""
    import torch

    kind = device_kind(device)
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise RooflineError("CUDA is not available on this machine: measure with --device cpu")
        index = torch.device(device).index or 0
        name = torch.cuda.get_device_name(index)
    else:
        from profiler.measure.system import cpu_name

        name = cpu_name()
    return {"device": kind, "name": name, "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def fingerprint_key(fp: dict) -> str:
    return f"{fp['device']} | {fp['name']} | torch {fp['torch']} | {fp['threads']} threads"


# --- measuring --------------------------------------------------------------------------------
_TORCH_DTYPES = {"fp32": "float32", "tf32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _sync(device: str) -> None:
    """Wait for the measured device's queue: torch.cuda.synchronize() without an argument waits
    for the *current* device, so timing cuda:1 from a process on cuda:0 would stop the clock
    while the matmuls still run and report a FLOP/s far above the hardware's."""
    if device_kind(device) == "cuda":
        import torch

        torch.cuda.synchronize(torch.device(device))


def _capability(torch: Any, device: str) -> float:
    major, minor = torch.cuda.get_device_capability(torch.device(device))
    return major + minor / 10


def _time_repeats(device: str, work: Callable[[], None], repeats: int, warmup: int
                  ) -> list[float]:
    """Seconds of each timed call of `work`, after `warmup` untimed ones; the measured device
    synchronised around each (CUDA)."""
    for _ in range(warmup):
        work()
    _sync(device)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        work()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def above_datasheet(device_name: str, dtype: str, flops: float) -> str | None:
    """Why a measured matmul peak cannot be true (above DATASHEET_MARGIN x the vendor's dense
    figure for this GPU and dtype), or None when it is plausible or no datasheet is known."""
    from profiler.figures.peaks import lookup

    sheet, label = lookup(device_name, dtype)
    if sheet is None or flops <= DATASHEET_MARGIN * sheet:
        return None
    return (f"the measured {dtype} matmul rate {flops / 1e12:.0f} TFLOP/s is "
            f"{flops / sheet:.1f}x the datasheet's {sheet / 1e12:.0f} TFLOP/s ({label}): the "
            "timer did not wait for the GPU, so nothing was cached; measure again, and report it "
            "if it repeats")


def _matmul_rates(kind: str, device: str, dtype: str, n: int, repeats: int, warmup: int
                  ) -> list[float]:
    """FLOP/s of each timed repeat of an n x n @ n x n matmul (2 n^3 FLOPs each)."""
    import torch

    inner = INNER[kind]
    torch_dtype = getattr(torch, _TORCH_DTYPES[dtype])
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=torch_dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=torch_dtype)
    out = torch.empty(n, n, device=device, dtype=torch_dtype)
    tf32_before = torch.backends.cuda.matmul.allow_tf32 if kind == "cuda" else None
    if kind == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"

    def work() -> None:
        for _ in range(inner):
            torch.mm(a, b, out=out)

    try:
        with (torch.cuda.device(torch.device(device)) if kind == "cuda"
              else contextlib.nullcontext()):
            times = _time_repeats(device, work, repeats, warmup)
    finally:
        if kind == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = tf32_before
    return [2.0 * n**3 * inner / t for t in times if t > 0]


def _copy_rates(kind: str, device: str, nbytes: int, repeats: int, warmup: int) -> list[float]:
    """Bytes/s of each timed copy of an nbytes fp32 tensor (nbytes read + nbytes written)."""
    import torch

    src = torch.ones(max(1, nbytes // 4), dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    moved = 2.0 * src.numel() * src.element_size()
    times = _time_repeats(device, lambda: dst.copy_(src), repeats, warmup)
    return [moved / t for t in times if t > 0]


def _count(count: int, one: str, many: str) -> str:
    """"1 warmup", "2 warmups": a count with its noun in the right number."""
    return f"{count} {one if count == 1 else many}"


def measure(device: str = "cpu", sizes: tuple[int, ...] | None = None, repeats: int = REPEATS,
            warmup: int = WARMUP, copy_bytes: int | None = None,
            dtypes: tuple[str, ...] | None = None) -> dict:
    """Measure the roofline now; the result is plain data (see validate) with its method.

    Small sizes and copy_bytes are for tests: the defaults saturate the device."""
    import torch

    kind = device_kind(device)
    fp = fingerprint(device)
    sizes = tuple(sizes or SIZES[kind])
    copy_bytes = int(copy_bytes or COPY_BYTES[kind])
    if repeats < 1 or warmup < 0 or not sizes or min(sizes) < 1:
        raise RooflineError(f"repeats must be 1 or more, warmup 0 or more and sizes positive; "
                            f"got repeats={repeats}, warmup={warmup}, sizes={sizes}")
    threads = f"{fp['threads']} thread{'s' if fp['threads'] != 1 else ''}"
    where = fp["name"] if kind == "cuda" else threads
    matmul = {}
    for dtype in dtypes or DTYPES[kind]:
        if kind == "cuda" and dtype == "bf16" and not bf16_native(
                "cuda", _capability(torch, device)):
            continue  # emulated bf16 (before Ampere) has no peak of its own
        best_n, best = None, None
        for n in sizes:
            rates = _matmul_rates(kind, device, dtype, n, repeats, warmup)
            fig = timed_figure(rates, "FLOP/s", "")
            if fig["value"] is not None and (best is None or fig["value"] > best["value"]):
                best_n, best = n, fig
        if best is None:
            continue
        per = f" ({INNER[kind]} per repeat)" if INNER[kind] > 1 else ""
        tf32 = {"tf32": ", TF32 allowed", "fp32": ", TF32 off"}.get(dtype, "") \
            if kind == "cuda" else ""
        best["how"] = (f"median of {repeats} timed {best_n}x{best_n} {dtype} "
                       f"{'matmul' if repeats == 1 else 'matmuls'}{per} after "
                       f"{_count(warmup, 'warmup', 'warmups')}{tf32}, {where}"
                       + (f"; best of sizes {', '.join(map(str, sizes))}" if len(sizes) > 1 else "")
                       + ("; synchronised around each repeat" if kind == "cuda" else ""))
        best["size"] = best_n
        if kind == "cuda":
            impossible = above_datasheet(fp["name"], dtype, best["value"])
            if impossible:
                raise RooflineError(impossible)
        matmul[dtype] = best
    rates = _copy_rates(kind, device, copy_bytes, repeats, warmup)
    bandwidth = timed_figure(rates, "B/s", f"median of {repeats} timed "
                             f"{'copy' if repeats == 1 else 'copies'} of a "
                             f"{copy_bytes / 2**20:g} MiB fp32 tensor after "
                             f"{_count(warmup, 'warmup', 'warmups')} "
                             f"(bytes read + written / time), {where}")
    return {"schema": SCHEMA, "fingerprint": fp,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "matmul": matmul, "bandwidth": bandwidth}


# --- the cache --------------------------------------------------------------------------------
def cache_path():
    from profiler.store import data_home

    return data_home() / CACHE_NAME


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _valid_figure(fig: Any, unit: str) -> bool:
    if not isinstance(fig, dict) or fig.get("unit") != unit or not isinstance(fig.get("how"), str):
        return False
    dist = fig.get("distribution")
    return (_number(fig.get("value")) and fig["value"] > 0 and isinstance(dist, dict)
            and isinstance(dist.get("n"), int) and dist["n"] >= 1
            and all(dist.get(k) is None or _number(dist.get(k))
                    for k in ("median", "p10", "p90", "ci_low", "ci_high")))


def validate(result: Any) -> str | None:
    """None when result is a roofline as measure() writes it; otherwise what is wrong."""
    if not isinstance(result, dict):
        return "an entry is not a JSON object"
    if result.get("schema") != SCHEMA:
        return f"an entry has schema {result.get('schema')!r}, this version writes {SCHEMA}"
    fp = result.get("fingerprint")
    if not isinstance(fp, dict) or not all(isinstance(fp.get(k), str)
                                           for k in ("device", "name", "torch")) \
            or not isinstance(fp.get("threads"), int) or fp["device"] not in DTYPES:
        return "an entry's fingerprint is missing or malformed"
    matmul = result.get("matmul")
    if not isinstance(matmul, dict) or not matmul:
        return "an entry has no matmul peaks"
    for dtype, fig in matmul.items():
        if dtype not in DTYPES[fp["device"]] or not _valid_figure(fig, "FLOP/s"):
            return f"the {dtype!r} matmul peak is malformed"
        if fp["device"] == "cuda" and above_datasheet(fp["name"], dtype, fig["value"]):
            return f"the {dtype!r} matmul peak is above the GPU's datasheet (a timing error)"
    if not _valid_figure(result.get("bandwidth"), "B/s"):
        return "the bandwidth figure is malformed"
    if not isinstance(result.get("measured_at"), str):
        return "an entry has no measurement time"
    return None


def _read_entries() -> tuple[dict, str | None]:
    """The cache's entries by fingerprint key, and a sentence when the file was damaged."""
    from profiler.store import DamagedFile, read_object

    path = cache_path()
    try:
        data = read_object(path)
    except DamagedFile as exc:
        return {}, f"the roofline cache {path} is damaged ({exc}): measuring again"
    if data is None:
        return {}, None
    entries = data.get("machines")
    if data.get("schema") != SCHEMA or not isinstance(entries, dict):
        return {}, f"the roofline cache {path} is not in this version's format: measuring again"
    good, bad = {}, []
    for key, entry in entries.items():
        problem = validate(entry)
        if problem is None and fingerprint_key(entry["fingerprint"]) == key:
            good[key] = entry
        else:
            bad.append(problem or "an entry is filed under another machine's key")
    note = (f"the roofline cache {path} is damaged ({bad[0]}): measuring again" if bad else None)
    return good, note


def load(device: str = "cpu") -> tuple[dict | None, str]:
    """The cached roofline of this machine (never measures), or None and why not."""
    try:
        key = fingerprint_key(fingerprint(device))
    except RooflineError as exc:
        return None, str(exc)
    entries, note = _read_entries()
    if key in entries:
        return entries[key], "read from the cache"
    if note:
        return None, note
    if entries:
        return None, (f"no measured roofline for this machine ({key}) in the cache: the ones "
                      f"there were measured with another device, torch or thread count")
    return None, "no measured roofline for this machine yet"


def save(result: dict) -> None:
    """Add result to the cache (keeping other machines' valid entries); StoreError on failure."""
    from profiler import files
    from profiler.store import StoreError, atomic_write

    problem = validate(result)
    if problem:
        raise RooflineError(f"refusing to cache a malformed roofline: {problem}")
    entries, _ = _read_entries()
    entries[fingerprint_key(result["fingerprint"])] = result
    path = cache_path()
    try:
        files.output_folder(path.parent, "set EFFISCOPE_HOME to a writable folder")
    except files.FileRefused as exc:
        raise StoreError(str(exc)) from None
    atomic_write(path, json.dumps({"schema": SCHEMA, "machines": entries}, indent=2))


def get(device: str = "cpu", remeasure: bool = False, say: Callable[[str], None] | None = None,
        **measure_args: Any) -> dict:
    """This machine's roofline: from the cache, or measured now and cached (a stale or damaged
    cache is measured again, and `say` gets one sentence saying so)."""
    if not remeasure:
        cached, why = load(device)
        if cached is not None:
            return cached
        if say is not None and why != "no measured roofline for this machine yet":
            say(why)
    result = measure(device, **measure_args)
    save(result)
    return result


# --- MFU against the measured peak ------------------------------------------------------------
def measured_peak(result: dict | None, dtype: str) -> dict | None:
    """The cached timed figure of dtype's matmul peak (FLOP/s), or None."""
    if result is None:
        return None
    return (result.get("matmul") or {}).get(dtype)


def mfu_vs_measured(tokens_per_s: float | None, flops_per_token: float | None, device: str,
                    dtype: str) -> tuple[float | None, str, dict | None]:
    """MFU against this machine's measured peak: (value or None, how or why n/a, the peak's
    figure). Reads the cache only: never measures (a run's time is its own)."""
    result, why = load(device)
    if result is None:
        return None, f"n/a — {why}: {NA_HINT}", None
    peak = measured_peak(result, dtype)
    if peak is None:
        measured = ", ".join(result["matmul"])
        return None, f"n/a — no measured {dtype} peak on this machine (measured: {measured})", None
    from profiler.figures.theory import mfu_against

    if not tokens_per_s or not flops_per_token:
        return None, "n/a: no measured throughput", peak
    value, how = mfu_against(tokens_per_s, flops_per_token, peak["value"],
                             f"measured {dtype} peak of this machine: {peak['how']}, "
                             f"measured {result['measured_at']}")
    return value, how, peak
