"""`effiscope runs`: the run history, newest first (from the index, or the folders when the
index cannot be used), with what could not be read said as warnings."""

from __future__ import annotations

import argparse
import json
import sys

from profiler.cli.common import EXIT_OK, EXIT_USAGE, err
from profiler.figures.metrics import json_safe
from profiler.text import safe


def add_parser(sub) -> None:
    p = sub.add_parser("runs", help="list past runs")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.add_argument("--rebuild", action="store_true", help="rebuild index.sqlite from the run folders first")
    p.set_defaults(func=cmd_runs)


def cmd_runs(args: argparse.Namespace) -> int:
    from profiler.figures.metrics import format_value
    from profiler.store import RunStore, StoreError

    store = RunStore()
    try:
        if args.rebuild:
            count = store.rebuild_index()
            print(f"rebuilt {store.index_path} from {count} run folders", file=sys.stderr)
        rows = store.list_runs()
    except StoreError as exc:
        err(str(exc))
        return EXIT_USAGE
    for warning in store.warnings:  # damaged folders, a locked index: said, never hidden
        print(f"warning: {safe(warning)}", file=sys.stderr)
    if args.json:
        print(json.dumps(json_safe(rows), indent=2, allow_nan=False))
        return EXIT_OK
    if not rows:
        print(f"no runs yet in {safe(store.home)}; start one with `effiscope run nano`")
        return EXIT_OK
    header = f"{'RUN ID':<36} {'NAME':<16} {'STATUS':<10} {'MODEL':<12} {'STEPS':>6} {'TOKENS/S':>12} {'VAL LOSS':>9}"
    print(header)
    for row in rows:
        tps = format_value(row["tokens_per_s"], "tokens/s", with_unit=False)
        val = format_value(row["loss_val_final"], "nats/token", with_unit=False)
        steps = row["steps"] if row["steps"] is not None else "n/a"
        print(f"{safe(row['id']):<36} {safe(str(row['name'])[:16]):<16} {safe(row['status']):<10} "
              f"{safe(row['model']):<12} {steps:>6} {tps:>12} {val:>9}")
    return EXIT_OK
