"""`effiscope roofline`: this machine's measured matmul peaks and memory bandwidth.

Measured once and cached (profiler.measure.roofline); CPU runs then get MFU against the measured peak,
and on a GPU the datasheet peak is printed beside the measured one.
"""

from __future__ import annotations

import argparse
import json
import sys

from profiler.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE


def add_parser(sub) -> None:
    p = sub.add_parser("roofline", help="measure this machine's matmul peaks and memory "
                                        "bandwidth (cached), the peaks of MFU on a CPU")
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto",
                   help="cpu, cuda or cuda:N (default: cuda when present, else cpu)")
    p.add_argument("--remeasure", action="store_true",
                   help="measure again even when this machine's roofline is cached")
    p.add_argument("--json", action="store_true", help="print the roofline as JSON")


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def datasheet(result: dict) -> dict:
    """The datasheet peak beside each measured one on a GPU: {dtype: (FLOP/s or None, label)}."""
    from profiler.figures.peaks import lookup

    fp = result["fingerprint"]
    if fp["device"] != "cuda":
        return {}
    return {dtype: lookup(fp["name"], dtype) for dtype in result["matmul"]}


def run(args: argparse.Namespace) -> int:
    from profiler.figures.metrics import format_summary_figure, format_value
    from profiler.measure import roofline
    from profiler.store import StoreError
    from profiler.text import safe

    def say(text: str) -> None:
        print(f"effiscope: {safe(text)}", file=sys.stderr)

    try:
        device = _device(args.device)
        roofline.fingerprint(device)  # a device this machine lacks: said once, before anything
        cached, _ = (None, "") if args.remeasure else roofline.load(device)
        if cached is None:
            say(f"measuring the roofline of {device} (a few seconds)...")
        result = cached or roofline.get(device, remeasure=args.remeasure, say=say)
    except roofline.RooflineError as exc:
        say(str(exc))
        return EXIT_USAGE
    except StoreError as exc:
        say(f"measured, but the cache could not be written: {exc}")
        return EXIT_FAILED
    sheet = datasheet(result)
    if args.json:
        out = dict(result, cache=str(roofline.cache_path()), cached=cached is not None)
        if sheet:
            out["datasheet"] = {d: {"flops": f, "how": how} for d, (f, how) in sheet.items()}
        print(json.dumps(out, indent=2))
        return EXIT_OK
    fp = result["fingerprint"]
    state = "read from the cache" if cached is not None else "measured now"
    print(safe(f"roofline of {roofline.fingerprint_key(fp)}"))
    print(safe(f"  {state} (measured {result['measured_at']}; cache {roofline.cache_path()})"))
    for dtype, fig in result["matmul"].items():
        line = f"  {dtype + ' matmul':<14} {format_summary_figure('measured_peak_flops', fig):>30}"
        if dtype in sheet:
            flops, how = sheet[dtype]
            line += (f"   datasheet {format_value(flops, 'FLOP/s')} ({how})" if flops is not None
                     else f"   datasheet n/a ({how})")
        print(safe(line))
        print(safe(f"  {'':<14} {fig['how']}"))
    band = result["bandwidth"]
    print(safe(f"  {'bandwidth':<14} {format_summary_figure('measured_bandwidth', band):>30}"))
    print(safe(f"  {'':<14} {band['how']}"))
    print("MFU of runs on this machine is shown against these peaks as \"MFU (vs measured peak)\".")
    return EXIT_OK
