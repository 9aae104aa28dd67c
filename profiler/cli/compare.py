"""`effiscope compare RUN... --baseline RUN`: the delta table of the app's Compare, in a terminal.

Per figure: the baseline's value, each run's value, the difference, the % change and the verdict
of profiler.figures.significance with its reason ("significant: better" / "significant: worse" only
outside the noise of both runs and beyond the noise floor; else "within noise", "machine busy:
no verdict" or "not comparable: <reason>"). The machine each run was measured on is said beside
its figures. The rows, values and verdicts are profiler.report.compare.deltas, the same the
reports and the app show.
"""

from __future__ import annotations

import argparse
import json
import sys

from profiler.cli.common import EXIT_OK, EXIT_USAGE
from profiler.figures.metrics import (
    format_change,
    format_delta,
    format_value,
    json_safe,
    spread_text,
)
from profiler.figures.significance import NOISE_FLOOR_PCT
from profiler.text import aligned, safe


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="runs against a baseline: value, delta, change and "
                                       "whether it is significant or within noise",
                       description=__doc__.splitlines()[0])
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_ids", nargs="+", metavar="RUN",
                        help="run ids from `effiscope runs` (a unique prefix is enough)")
    parser.add_argument("--baseline", metavar="RUN",
                        help="the run the others are compared against (default: the first)")
    parser.add_argument("--json", action="store_true",
                        help="print the delta rows (values, deltas, verdicts) as JSON")


def verdict_text(cell: dict) -> str:
    """"significant: worse (p<0.001)", "within noise (p=0.41)", "not comparable: ..."."""
    return cell.get("text") or "n/a"


def shown(value, unit: str, fig) -> str:
    """A value with its spread where the summary figure carries one: "1,000 tokens/s (±2 %, n=40)"."""
    text = format_value(value, unit)
    spread = spread_text(fig)
    return f"{text} ({spread})" if spread and text != "n/a" else text


def table_lines(rows: list[dict], baseline, run, figures: dict) -> list[str]:
    """One run against the baseline: a row per figure either of them has."""
    index = next(i for i, c in enumerate(rows[0]["cells"]) if c["run"] == run.run_id)
    lines = [("Figure", "baseline", "this run", "Δ", "%", "verdict")]
    for row in rows:
        cell = row["cells"][index]
        if row["baseline"] is None and cell["value"] is None:
            continue
        label = f"{row['label']} ({row['better']} is better)"
        base_fig = figures[baseline.run_id].get(row["key"]) if cell["base_value"] == \
            row["baseline"] else None  # a segment of the baseline: its value, not the headline's
        lines.append((label,
                      shown(cell["base_value"], row["unit"], base_fig),
                      shown(cell["value"], row["unit"], figures[run.run_id].get(row["key"])
                            if not cell["scope"] else None),
                      format_delta(cell["delta"], row["unit"]), format_change(cell["change_pct"]),
                      verdict_text(cell)))
    return aligned(lines, right={1, 2, 3, 4})


def run(args: argparse.Namespace) -> int:
    from profiler.report import ReportError, load_runs
    from profiler.report.compare import comparison
    from profiler.store import RunStore, StoreError

    store = RunStore()
    try:  # the ids first: `compare X X` is refused before any stream is read
        named = {store.open_run(r).run_id for r in [*args.run_ids, *filter(None, [args.baseline])]}
    except StoreError as exc:
        print(f"effiscope: {safe(exc)}", file=sys.stderr)
        return EXIT_USAGE
    if len(named) < 2:
        print("effiscope: compare needs two or more different runs: give the runs to compare "
              "and, with --baseline, the one they are compared against", file=sys.stderr)
        return EXIT_USAGE
    warnings: list[str] = []
    try:
        runs, baseline = load_runs(args.run_ids, store, args.baseline, warnings)
    except ReportError as exc:
        print(f"effiscope: {safe(exc)}", file=sys.stderr)
        return EXIT_USAGE
    for warning in warnings:  # damaged lines, files not read: said, as the reports say them
        print(f"warning: {safe(warning)}", file=sys.stderr)
    others = [r for r in runs if r is not baseline]
    found = comparison([baseline, *others], baseline)
    rows = found["deltas"]
    if args.json:
        print(json.dumps(json_safe(found), indent=2, allow_nan=False))
        return EXIT_OK
    figures = {r.run_id: r.figures for r in runs}
    machines = found["machine"]
    print(f"baseline: {safe(baseline.name)} ({safe(baseline.run_id)})")
    print(f"  machine: {safe(machines[baseline.run_id]['text'])}")
    print(f"verdicts: \"significant\" only outside the noise of both runs (Mann-Whitney U on the "
          "per-step samples and the bootstrap interval of the ratio of medians, or the figures' "
          f"95 % intervals apart) and beyond the {NOISE_FLOOR_PCT:g} % noise floor; else \"within "
          "noise\", \"machine busy: no verdict\" for a speed measured beside other work, or "
          "\"not comparable\" with the reason (\"no spread\" where a figure has neither per-step "
          "samples nor an interval to judge by)")
    scopes = {c["run"]: c["scope"] for row in rows for c in row["cells"] if c["scope"]}
    for other in others:
        print()
        print(f"{safe(other.name)} ({safe(other.run_id)}) against the baseline:")
        print(f"  machine: {safe(machines[other.run_id]['text'])}")
        if scopes.get(other.run_id):
            print(f"  compared like with like: {safe(scopes[other.run_id])}")
        for line in table_lines(rows, baseline, other, figures):
            print(line)  # made safe by text.aligned
    for item in found["config_diff"]["segments"]:
        name = next(r.name for r in runs if r.run_id == item["run"])
        print()
        print(f"segments of {safe(name)} (techniques changed mid-run):")
        for line in item["segments"]:
            print(f"  {safe(line)}")
    return EXIT_OK
