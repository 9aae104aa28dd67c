"""Model FLOPs utilisation: achieved FLOP/s over a peak (the device's datasheet peak from
profiler.figures.peaks, a user's override, or a peak measured by `effiscope roofline`), with one line
saying how, and None where a number would mislead."""

from __future__ import annotations

from profiler.figures.peaks import NO_MFU_DTYPES, lookup, normalize_dtype, peak_flops


def mfu(tokens_per_s: float, flops_per_token: float, device_name: str, dtype: object,
        override_tflops: float | None = None) -> tuple[float | None, str]:
    """Model FLOPs utilisation (nanoGPT / PaLM style) and one line saying how, or why n/a.

    None where a number would mislead: CPU, an unknown device, a dtype the device lacks, and
    int8 / fp8, whose scaled matmuls are not what 6N+12LHQT counts.
    """
    key = normalize_dtype(dtype)
    if key in NO_MFU_DTYPES:
        return None, f"n/a: MFU is not defined for {key} (FLOPs per token count dense matmuls)"
    if override_tflops is not None:
        peak, label = peak_flops(device_name, dtype, override_tflops), "user override"
    else:
        peak, label = lookup(device_name, dtype)
    if peak is None:
        return None, f"n/a: {label}"
    return mfu_against(tokens_per_s, flops_per_token, peak, label)


def mfu_against(tokens_per_s: float, flops_per_token: float, peak: float, label: str
                ) -> tuple[float | None, str]:
    """tokens/s × FLOPs per token ÷ a peak FLOP/s (the datasheet's or a measured one, named by
    label), and one line saying how."""
    if not tokens_per_s > 0 or not flops_per_token > 0:
        return None, "n/a: no throughput measured yet"
    value = tokens_per_s * flops_per_token / peak
    how = (f"{flops_per_token:.4g} FLOP/token × {tokens_per_s:.4g} tokens/s ÷ "
           f"{peak / 1e12:.4g} TFLOP/s ({label})")
    if value > 1:
        how += " — above 1: the peak or the FLOP count is wrong for this run"
    return value, how
