"""What `effiscope bench overhead` reports and how: the loss-curve check, the overhead figure
with its interval (does it resolve 1 %?), and the text table."""

from __future__ import annotations

from profiler.bench import loop
from profiler.figures.stats import describe_ratio


def loss_check(results: list[dict]) -> dict:
    """Whether every measurement's loss curves, in every comparison, equal the first reference
    run's, step by step."""
    reference = results[0]["candidates"][results[0]["baseline"]]["measurements"]
    if not reference:
        return {"equal": None, "compared": 0, "steps": 0,
                "how": "n/a: no reference run completed"}
    first = reference[0]
    compared, unequal = 0, []
    for result in results:
        for name, item in result["candidates"].items():
            for index, m in enumerate(item["measurements"]):
                compared += 1
                if m["losses"] != first["losses"] or m["val_losses"] != first["val_losses"]:
                    unequal.append(f"{name} #{index + 1}")
    return {"equal": not unequal, "compared": compared, "steps": len(first["losses"]),
            "validations": len(first["val_losses"]), "unequal": unequal,
            "how": "train loss of every step and every validation loss, compared exactly"}


RESOLUTION = 0.01
"""The bench must resolve a 1 % overhead: the paired interval of worker / reference narrower."""


def overhead_figure(paired: dict) -> dict:
    """The worker's overhead in percent of the reference loop's tokens/s, with its interval, and
    whether the interval is narrow enough (RESOLUTION) to tell a 1 % cost from none.

    The figure is the centre of the per-round ratios (Hodges-Lehmann on their logs, with the
    signed-rank interval: nearly as efficient as a mean on normal noise, robust to a stray
    round like the median), the median's interval beside it. Both intervals assume rounds
    independent of each other; rounds whose ratios carry over from one to the next (a lag-1
    autocorrelation beyond what chance gives) do not resolve anything, however narrow the
    interval."""
    centre = paired["centre"]
    ratio, low, high = centre["ratio"], centre["ci_low"], centre["ci_high"]
    independent = paired["rounds_independent"]
    common = {"verdict": paired["verdict"], "lag1_autocorrelation":
              paired["lag1_autocorrelation"], "rounds_independent": independent,
              "median_percent": None if paired["ratio"] is None else (1 - paired["ratio"]) * 100,
              "median_ci": None if paired["ci_low"] is None else
              [(1 - paired["ci_high"]) * 100, (1 - paired["ci_low"]) * 100]}
    percent = None if ratio is None else (1 - ratio) * 100
    if low is None or high is None:
        return {"percent": percent, "ci_low": None, "ci_high": None, "width_percent": None,
                "resolves_1_percent": False, **common}
    width = (high - low) * 100
    return {"percent": percent, "ci_low": (1 - high) * 100, "ci_high": (1 - low) * 100,
            "width_percent": width,
            "resolves_1_percent": width < RESOLUTION * 100 and independent is not False,
            **common}


def _overhead_text(report: dict) -> str:
    over = report["overhead"]
    if over["percent"] is None:
        return "n/a"
    if over["ci_low"] is None:
        return f"{over['percent']:+.2f} % (no interval: {over['verdict']})"
    r1 = over["lag1_autocorrelation"]
    if over["resolves_1_percent"]:
        resolved = "resolves 1 %"
    elif over["rounds_independent"] is False:
        resolved = ("does NOT resolve 1 %: the rounds are not independent (a drift carries from "
                    "one to the next), so no interval of them can; raise --restart-every's "
                    "frequency or run on an idle machine")
    else:
        resolved = ("does NOT resolve 1 %: raise --repeats, or run on an idle machine")
    median = over["median_ci"]
    beside = ("" if median is None else
              f"; the median round {over['median_percent']:+.2f} % ({median[0]:+.2f} to "
              f"{median[1]:+.2f} %)")
    lag = "" if r1 is None else f"; lag-1 autocorrelation of the rounds {r1:+.2f}"
    return (f"{over['percent']:+.2f} % of the reference's tokens/s (centre of the rounds, 95 % "
            f"interval {over['ci_low']:+.2f} to {over['ci_high']:+.2f} %, width "
            f"{over['width_percent']:.2f} %: {resolved}{beside}{lag})")


def _same(curves: dict) -> str:
    return {True: "equal", False: f"NOT equal ({', '.join(curves.get('unequal', []))})",
            None: "n/a"}[curves["equal"]]


def format_table(report: dict) -> str:
    paired = report["paired"]
    curves = report["loss_curves"]
    cost_curves = report["cost_loss_curves"]
    same = _same(curves)
    columns = [("tokens_per_s", "tokens/s", "tokens/s", 1.0),
               ("capture_window_s", f"first {report['profile_steps']} measured steps", "s", 1.0)]
    lines = [
        f"bench overhead: preset {report['preset']}, {report['steps']} steps per measurement "
        f"({report['warmup_steps']} warmup steps excluded, validation as configured), "
        f"{report['cpu']}, torch threads: worker {report['threads']['worker']}, reference "
        f"{report['threads']['reference']}; {report['placement']}"
        + (f" ({report['pad_steps']} unmeasured steps after each window); the costs one after "
           f"the other: {report['cost_placement']}" if report["pairing"] == "concurrent" else ""),
        f"loss curves of all {curves['compared']} measurements: {same} "
        f"({curves['steps']} train steps, {curves.get('validations', 0)} validations); of the "
        f"costs' {cost_curves['compared']}: {_same(cost_curves)} ({cost_curves['steps']} steps)",
        "",
        f"the worker against the reference: {loop.header(report['comparison'])}",
        "",
        *loop.markdown_table(report["comparison"], columns, first="loop"),
        "",
        f"the costs of the sampler and of a profile capture, {report['cost_steps']} steps per "
        f"measurement: {loop.header(report['costs'])}",
        "",
        *loop.markdown_table(report["costs"], columns, first="loop"),
        "",
        f"worker / reference (tokens/s), paired within rounds: "
        f"{describe_ratio(paired['worker_vs_reference'])}; overhead {_overhead_text(report)}; "
        "aim: overhead under 2 %, interval narrower than 1 %",
        f"system sampler at its default, paired: "
        f"{describe_ratio(paired['sampler_default_vs_reference'])}",
        f"system sampler at 10 Hz, paired: {describe_ratio(paired['sampler_10hz_vs_reference'])}",
        f"profile capture, time of its {report['profile_steps']} steps and writing the trace "
        "(× the same steps uncaptured), paired: "
        f"{describe_ratio(paired['profile_capture_window_vs_reference'])}",
        "unpaired (ratio of the medians, bootstrap): worker "
        f"{describe_ratio(report['worker_vs_reference'])}; sampler default "
        f"{describe_ratio(report['sampler_default_vs_reference'])}; sampler 10 Hz "
        f"{describe_ratio(report['sampler_10hz_vs_reference'])}; profile capture "
        f"{describe_ratio(report['profile_capture_window_vs_reference'])}",
    ]
    return "\n".join(lines)
