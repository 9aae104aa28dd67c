"""The one measuring loop of every bench: candidates interleaved round by round, warmup rounds
dropped, each metric reported as a distribution and as a ratio against the baseline.

Interleaving (each round runs every candidate once, in an order rotated or shuffled per round)
makes drift of the machine (thermal, other load, caches) hit all candidates alike; a measurement
is then one sample, so a spread over rounds is the honest noise of the comparison.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from profiler.figures.stats import (
    describe,
    describe_ratio,
    distribution,
    independent_enough,
    lag1_autocorrelation,
    ratio_interval,
    round_order,
    signed_rank_interval,
)

Measurement = dict
"""What a candidate's `measure()` returns: metric name -> value (None where it has no reading),
plus any extra keys the bench wants kept; {"error": text} when the measurement failed."""


@dataclass
class Candidate:
    """One configuration under comparison; `measure` runs it once and returns a Measurement."""

    name: str
    measure: Callable[[], Measurement]


MAX_REPEATS = 1000
"""A bench of more rounds than this would run for days: a typo, refused by the parser."""
MAX_STEPS = 100_000
"""Steps per measurement, likewise."""


def whole(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from `low` (to `high`); anything else is refused by the
    parser, before any process starts, with a sentence naming the flag and the bound (exit 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"{low} or more"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    parse.__name__ = "whole number"
    return parse


def number(low: float) -> Callable[[str], float]:
    """An argparse type: a finite number of `low` or more (see `whole`)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value) or value < low:
            raise argparse.ArgumentTypeError(f"must be a number of {low:g} or more, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def usage_error(text: str) -> int:
    """A bench's refusal of its arguments: the sentence, exit code 2, nothing started."""
    print(f"effiscope: {text}", file=sys.stderr)
    return 2


def with_flag(exc: Exception, flags: dict[str, str]) -> str:
    """A config sentence with the bench flag that set its field in front (`--gen-len 900:
    infer.gen_len: ...`), so the user knows which argument to change."""
    flag = flags.get(getattr(exc, "field", ""))
    return f"{flag}: {exc}" if flag else str(exc)


def warmup_problem(steps: int, warmup: int, steps_flag: str = "--steps") -> str | None:
    """--warmup must leave measured steps: the sentence when it does not."""
    if warmup >= steps:
        return (f"--warmup {warmup} leaves no measured step of {steps_flag} {steps}; give "
                f"--warmup below {steps_flag} (e.g. --warmup {max(0, steps // 5)})")
    return None


def only_problem(only: str, labels: Sequence[str], what: str) -> str | None:
    """--only that matches nothing would measure the baseline alone: the sentence."""
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    if only and not wanted:
        return f"--only {only!r} names nothing; give comma-separated parts of {what} labels"
    if wanted and not any(w in label for w in wanted for label in labels):
        return (f"--only {only!r} matches no {what}; the {what}s are: {', '.join(labels)}")
    return None


def add_order_arguments(parser) -> None:
    """--order and --seed, the same for every bench."""
    parser.add_argument("--order", choices=("rotate", "random"), default="rotate",
                        help="order of the candidates within a round: rotated by one per round "
                        "(default) or shuffled")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the shuffled order and of the bootstrap (default 0)")


def compare(candidates: Sequence[Candidate], metrics: Sequence[str], repeats: int,
            warmup: int = 0, order: str = "rotate", seed: int = 0,
            log: Callable[[str], None] | None = None) -> dict:
    """Measure every candidate `warmup + repeats` times, interleaved; the first is the baseline.

    Returns {"baseline", "order", "repeats", "warmup_rounds", "rounds" (the order each round ran),
    "candidates": {name: {"measurements", "errors", "metrics": {metric: {"samples",
    "distribution", "vs_baseline"}}}}}. A ratio is candidate / baseline of the medians, with a
    seeded bootstrap interval; "no significant difference" when that interval contains 1.
    """
    if not candidates:
        raise ValueError("compare() needs at least one candidate")
    if repeats < 1 or warmup < 0:
        raise ValueError("repeats must be 1 or more and warmup 0 or more")
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    by_name = {c.name: c for c in candidates}
    if len(by_name) != len(candidates):
        raise ValueError("candidate names must be unique")
    kept: dict[str, list[Measurement]] = {c.name: [] for c in candidates}
    errors: dict[str, list[str]] = {c.name: [] for c in candidates}
    rounds = []
    total = warmup + repeats
    for index in range(total):
        names = round_order(list(by_name), index, order, seed)
        rounds.append(names)
        for name in names:
            tag = "warmup" if index < warmup else "repeat"
            log(f"{tag} {index + 1}/{total}: {name}")
            result = by_name[name].measure()
            if "error" in result:
                errors[name].append(str(result["error"]))
            elif index >= warmup:
                kept[name].append({**result, "round": index - warmup})
    return summarise([c.name for c in candidates], kept, errors, metrics,
                     {"order": order, "repeats": repeats, "warmup_rounds": warmup, "seed": seed,
                      "rounds": rounds})


def summarise(names: Sequence[str], kept: dict[str, list[Measurement]],
              errors: dict[str, list[str]], metrics: Sequence[str], how: dict) -> dict:
    """compare()'s result from the kept measurements (each with its "round"), the first name the
    baseline; `how` says how they were taken ("order", "repeats", "warmup_rounds", "seed",
    "rounds", and anything a bench adds)."""
    baseline = names[0]
    out = {}
    for name in names:
        per_metric = {}
        for key in metrics:
            samples = [m.get(key) for m in kept[name]]
            samples = [float(v) for v in samples if v is not None]
            base = [float(m[key]) for m in kept[baseline] if m.get(key) is not None]
            per_metric[key] = {
                "samples": samples,
                "distribution": distribution(samples),
                "vs_baseline": ratio_interval(samples, base, seed=how.get("seed", 0)),
            }
        out[name] = {"measurements": kept[name], "errors": errors[name], "metrics": per_metric}
    return {"baseline": baseline, **how, "candidates": out}


def paired_ratio(result: dict, name: str, key: str) -> dict:
    """candidate / baseline of `key` within each round (both measured minutes apart at most),
    then the median of those per-round ratios with its 95 % interval (order statistics). Drift
    slower than a round cancels in each ratio, so this resolves a smaller difference than the
    ratio of the two medians; `significant` only when the interval excludes 1."""
    by_round = {}
    for m in result["candidates"][result["baseline"]]["measurements"]:
        if m.get(key) is not None:
            by_round[m["round"]] = float(m[key])
    ratios = [float(m[key]) / by_round[m["round"]]
              for m in result["candidates"][name]["measurements"]
              if m.get(key) is not None and by_round.get(m["round"])]
    dist = distribution(ratios)
    low, high = dist["ci_low"], dist["ci_high"]
    if dist["median"] is None:
        verdict, significant = "n/a: no round measured both", False
    elif low is None or high is None:
        verdict = f"n/a: an interval needs 6 or more paired rounds (have {len(ratios)})"
        significant = False
    else:
        significant = not low <= 1.0 <= high
        verdict = ("no significant difference" if not significant else
                   "significantly higher" if dist["median"] > 1 else "significantly lower")
    r1 = lag1_autocorrelation(ratios)
    return {"ratio": dist["median"], "ci_low": low, "ci_high": high, "n": len(ratios),
            "ratios": ratios, "significant": significant, "verdict": verdict,
            "how": f"median over rounds of {name} / {result['baseline']} within the round, "
                   "95 % interval of that median (order statistics)",
            "centre": _log_centre(ratios), "lag1_autocorrelation": r1,
            "rounds_independent": independent_enough(r1, len(ratios))}


def _log_centre(ratios: list[float]) -> dict:
    """The centre of the per-round ratios on a log scale (a ratio of like measurements spreads
    symmetrically there), the Hodges-Lehmann estimate with its signed-rank interval
    (profiler.figures.stats.signed_rank_interval), back as ratios."""
    logs = [math.log(r) for r in ratios if r > 0]
    estimate, low, high = signed_rank_interval(logs)

    def back(value: float | None) -> float | None:
        return None if value is None else math.exp(value)

    return {"ratio": back(estimate), "ci_low": back(low), "ci_high": back(high),
            "how": "Hodges-Lehmann centre of the per-round log-ratios, 95 % interval from the "
                   "signed-rank test (assumes rounds independent, log-ratios symmetric)"}


def metric(result: dict, name: str, key: str) -> dict:
    """One candidate's figures for one metric: {"samples", "distribution", "vs_baseline"}."""
    return result["candidates"][name]["metrics"][key]


def markdown_table(result: dict, columns: Sequence[tuple[str, str, str, float]],
                   first: str = "candidate") -> list[str]:
    """Rows of `| candidate | metric (unit) | vs baseline | ... |`; columns are
    (metric, header, unit, scale) and every cell is a distribution with its interval."""
    head = f"| {first} |" + "".join(f" {h} | vs {result['baseline'].split(' (')[0]} |"
                                    for _, h, _, _ in columns)
    lines = [head, "|---|" + "---:|---|" * len(columns)]
    for name, item in result["candidates"].items():
        cells = []
        for key, _, unit, scale in columns:
            figures = item["metrics"][key]
            cells.append(describe(figures["distribution"], unit, scale))
            cells.append("baseline" if name == result["baseline"]
                         else describe_ratio(figures["vs_baseline"]))
        error = f" error: {item['errors'][0]}" if item["errors"] else ""
        lines.append(f"| {name} | " + " | ".join(cells) + f" |{error}")
    return lines


def header(result: dict) -> str:
    """The sentence under every bench's title: how the measurements were taken."""
    if result["order"] == "concurrent":
        blocks = result.get("blocks", 1)
        fresh = (f" in {blocks} blocks of {result['restart_every']} by fresh processes"
                 if blocks > 1 else "")
        return (f"{result['repeats']} rounds with both running at once (profiler.bench.pairs)"
                f"{fresh}, {result['warmup_rounds']} warmup rounds dropped"
                f"{' per block' if blocks > 1 else ''}, "
                f"{result.get('not_overlapping', 0)} rounds not overlapping dropped; median with "
                "its 95 % interval (order statistics); ratios against the baseline with a 95 % "
                "bootstrap interval")
    return (f"{result['repeats']} interleaved rounds ({result['order']} order"
            f"{', seed ' + str(result['seed']) if result['order'] == 'random' else ''}), "
            f"{result['warmup_rounds']} warmup rounds dropped; median with its 95 % interval "
            "(order statistics); ratios against the baseline with a 95 % bootstrap interval")


BENCH_FLAGS = {"limits.steps": "--steps", "limits.warmup_steps": "--warmup", "device": "--device",
               "train.batch_size": "--batch-size", "train.seq_len": "--seq-len"}
"""The run settings bench flags override: a refusal of one names the flag."""


def config_or_none(target: str, overrides: dict | None = None):
    """The bench's run config (a preset or a TOML path) with its overrides (dotted setting ->
    value, None = not given), validated as a whole; or None after saying why not."""
    from profiler.config import ConfigError, resolve

    try:
        return resolve(target, overrides)
    except ConfigError as exc:
        given = {k: v for k, v in BENCH_FLAGS.items() if (overrides or {}).get(k) is not None}
        print(f"effiscope: {with_flag(exc, given)}", file=sys.stderr)
        return None


def print_report(report: dict, as_json: bool, format_table: Callable[[dict], str]) -> int:
    """The report as JSON or as the bench's table; the bench's exit code (0)."""
    import json

    print(json.dumps(report, indent=2) if as_json else format_table(report))
    return 0
