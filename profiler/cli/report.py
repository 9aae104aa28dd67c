"""`effiscope report RUN_ID...`: a report of one run, or several compared against a baseline,
as HTML, JSON, CSV, Markdown or the profiler trace (profiler.report), to a file or stdout."""

from __future__ import annotations

import argparse
import sys

from profiler.cli.common import EXIT_OK, EXIT_USAGE, err, print_warnings, stdout_open


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="write a report of one run, or compare several",
                       description="Write a profiling report from the run store: one run, or "
                                   "several compared against a baseline (deltas, overlaid charts, "
                                   "config diff).")
    p.add_argument("run_ids", nargs="+", metavar="RUN_ID",
                   help="run ids from `effiscope runs` (a unique prefix is enough)")
    p.add_argument("--format", choices=("html", "json", "csv", "md", "trace"),
                   help="html (default), json, csv, md, or trace (the torch.profiler trace, "
                        "gzipped); guessed from --out's suffix when not given")
    p.add_argument("--out", help="file to write, an existing folder, or - for stdout "
                                 "(default: RUN_ID.FORMAT in the current folder)")
    p.add_argument("--baseline", metavar="RUN_ID",
                   help="the run the others are compared against (default: the first)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from profiler.report import ReportError, export, write

    fmt = args.format or _format_from_suffix(args.out) or "html"
    warnings: list[str] = []
    try:
        if args.out == "-":
            if fmt == "trace":
                err("--format trace writes a gzip file; give --out PATH")
                return EXIT_USAGE
            if not stdout_open():
                err("stdout is closed, so --out - has nowhere to write; give --out PATH")
                return EXIT_USAGE
            write(sys.stdout, args.run_ids, fmt, baseline=args.baseline, warnings=warnings)
            print_warnings(warnings)
            return EXIT_OK
        path = export(args.run_ids, fmt, args.out or ".", baseline=args.baseline,
                      warnings=warnings)
    except ReportError as exc:
        err(str(exc))
        return EXIT_USAGE
    print_warnings(warnings)
    print(f"wrote {path}", file=sys.stderr)
    return EXIT_OK


def _format_from_suffix(out: str | None) -> str | None:
    if not out or out == "-":
        return None
    name = out.lower()
    if name.endswith((".json.gz", ".trace.gz")):
        return "trace"
    suffixes = {".html": "html", ".htm": "html", ".json": "json", ".csv": "csv", ".md": "md"}
    return next((fmt for suffix, fmt in suffixes.items() if name.endswith(suffix)), None)
