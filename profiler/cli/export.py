"""`effiscope export RUN_ID... --to tensorboard|mlflow|csv-long`: runs into the trackers people
already use (profiler.report.trackers), read from the store."""

from __future__ import annotations

import argparse
import sys

from profiler.cli.common import EXIT_OK, EXIT_USAGE, err, print_warnings


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="export runs to TensorBoard, MLflow or a long CSV",
        description="Write runs from the store where you keep your training runs: TensorBoard "
                    "event files (one directory per run), MLflow runs (the optional extra: "
                    "pip install 'effiscope[mlflow]'), or a long CSV (step, timestamp, metric, "
                    "value, unit). Every reading at its own step and wall time, none left out.")
    p.add_argument("run_ids", nargs="+", metavar="RUN_ID",
                   help="run ids from `effiscope runs` (a unique prefix is enough)")
    p.add_argument("--to", required=True, choices=("tensorboard", "mlflow", "csv-long"),
                   help="where the runs go")
    p.add_argument("--dir", metavar="DIR",
                   help="the folder to write into: tensorboard (default ./tensorboard): DIR/"
                        "RUN_ID/ per run, for `tensorboard --logdir DIR`; mlflow (default "
                        "./mlruns): DIR/mlflow.db and DIR/artifacts; csv-long (default .): "
                        "DIR/RUN_ID.csv")
    p.add_argument("--tracking-uri", metavar="URI",
                   help="mlflow only: a tracking server or database instead of --dir")
    p.add_argument("--experiment", default="effiscope",
                   help="mlflow only: the experiment the runs go in (default: effiscope)")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from profiler.report.trackers import TrackerError, export

    if args.to != "mlflow" and args.tracking_uri:
        err("--tracking-uri is for --to mlflow; give --dir for the other targets")
        return EXIT_USAGE
    warnings: list[str] = []
    try:
        lines = export(args.run_ids, args.to, args.dir, warnings=warnings,
                       tracking_uri=args.tracking_uri, experiment=args.experiment)
    except TrackerError as exc:
        err(str(exc))
        return EXIT_USAGE
    print_warnings(warnings)
    for line in lines:
        print(f"wrote {line}" if args.to != "mlflow" else line, file=sys.stderr)
    return EXIT_OK
