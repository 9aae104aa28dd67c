"""`effiscope tune CONFIG`: the command's parser entry; its arguments and what it runs are
profiler.tune.cli's (torch-free until it runs; the app reads its size and duration parsers)."""

from __future__ import annotations


def add_parser(sub) -> None:
    from profiler.tune import cli as tune_cli

    p = sub.add_parser("tune", help="find the fastest configuration that fits in memory "
                       "(trials are runs in the store)", description=tune_cli.__doc__)
    tune_cli.add_arguments(p)
    p.set_defaults(func=tune_cli.run)
