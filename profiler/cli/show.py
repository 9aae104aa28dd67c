"""`effiscope show RUN_ID`: one run's summary (its figures, segments, the machine's load), as
text or JSON; print_summary is also what `effiscope run` prints at the end."""

from __future__ import annotations

import argparse
import json
import sys

from profiler.cli.common import EXIT_OK, EXIT_USAGE, err
from profiler.figures.metrics import json_safe
from profiler.text import safe


def add_parser(sub) -> None:
    p = sub.add_parser("show", help="print one run's summary")
    p.add_argument("run_id", help="a run id from `effiscope runs` (a unique prefix is enough)")
    p.add_argument("--json", action="store_true", help="print config, meta and summary as JSON")
    p.set_defaults(func=cmd_show)


def print_summary(run_id: str, meta: dict, summary: dict) -> None:
    from profiler.figures import busy
    from profiler.figures.metrics import format_summary_figure
    from profiler.figures.segments import table as segment_table
    from profiler.text import aligned

    def text(value: object) -> str:
        return safe(value if value is not None else "")

    print(f"run      {text(run_id)}")
    print(f"name     {text(meta.get('name', ''))}")
    print(f"status   {text(summary.get('status', meta.get('status', '?')))} "
          f"({text(summary.get('end', meta.get('end', 'no summary')))})")
    if "device" in summary:
        print(f"device   {text(summary['device'])}")
    if "steps_completed" in summary:
        print(f"steps    {text(summary['steps_completed'])} "
              f"({text(summary.get('measured_steps', 0))} measured)")
    err = summary.get("error")
    if isinstance(err, dict):
        print(f"error    {text(err.get('kind'))}: {text(err.get('message'))}\n"
              f"         hint: {text(err.get('hint'))}")
    if summary.get("quality_loss"):
        print(f"quality  {text(summary['quality_loss'])}")
    if busy.load_text(summary):  # beside the speed figures: were they measured alone?
        print(f"load     {text(busy.load_text(summary))}")
    if busy.sentence(summary):
        print(f"warning  {text(busy.sentence(summary))}")
    figures = summary.get("figures")
    for key, fig in (figures.items() if isinstance(figures, dict) else ()):
        if not isinstance(fig, dict):
            continue
        print(f"  {text(key):<28} {text(format_summary_figure(str(key), fig)):>30}   "
              f"{text(fig.get('how', ''))}")
    found = segment_table(summary.get("segments"))
    if found:  # a run whose techniques changed mid-run: the headline is its last segment's
        print("segments (figures of each configuration the run went through)")
        print("\n".join(aligned([found[0], *found[1]], right=set(range(3, len(found[0]))))))


def cmd_show(args: argparse.Namespace) -> int:
    from profiler.store import RunStore, StoreError

    store = RunStore()
    try:
        run = store.open_run(args.run_id)
    except StoreError as exc:
        err(str(exc))
        return EXIT_USAGE
    summary = run.summary()
    meta = run.meta()
    for problem in run.problems:
        print(f"warning: run folder {safe(run.path)}: {safe(problem)}", file=sys.stderr)
    if summary is None:
        summary = {"status": meta.get("status", "unknown"), "end": "no summary.json (run in progress or interrupted)"}
    if args.json:
        config = None
        if (run.path / "config.toml").exists():
            try:
                config = run.config_dict()
            except StoreError as exc:
                print(f"warning: {safe(exc)}", file=sys.stderr)
        print(json.dumps(json_safe({"run_id": run.run_id, "meta": meta, "config": config,
                                    "summary": summary}), indent=2, default=str,
                         allow_nan=False))
    else:
        print_summary(run.run_id, meta, summary)
    return EXIT_OK
