"""The `effiscope` parser: one subcommand per module of profiler.cli, and main(), which runs the
one asked for (the app when none is) and turns a pipe closed by its reader or a refused path into
the exit codes of profiler.cli.common."""

from __future__ import annotations

import argparse
import os
import sys

from profiler.cli import (
    bench,
    compare,
    estimate,
    export,
    gui,
    models,
    report,
    roofline,
    run,
    runs,
    show,
    techniques,
    tune,
    worker,
)
from profiler.cli.common import EXIT_PIPE, EXIT_USAGE, err
from profiler.cli.doctor import command as doctor

COMMANDS = (gui, run, runs, show, techniques, models, report, compare, bench, tune, doctor,
            roofline, estimate, export, worker)
"""The command modules in the order `effiscope --help` lists them; each has add_parser(sub)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="effiscope",
        description="Measure what LLM efficiency techniques buy you, on your model and hardware. "
                    "With no command, opens the desktop app.",
        epilog="Runs are stored in $EFFISCOPE_HOME (default: the platform's user data folder).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from profiler.files import FileRefused

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        return gui.cmd_gui(args)
    try:
        code = args.func(args)
        if sys.stdout is not None:
            sys.stdout.flush()  # a reader that went away is found here, not at exit
        return code
    except BrokenPipeError:
        return _reader_gone()
    except FileRefused as exc:  # a path to write that is a FIFO, a device, a link, a folder
        err(str(exc))
        return EXIT_USAGE


def _reader_gone() -> int:
    """stdout's reader closed the pipe (`effiscope runs --json | head -1`): end quietly, as
    Unix tools do, with the shell's status for SIGPIPE; nothing more is written to the pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's flush at exit would raise again
        os.close(devnull)
    except (OSError, AttributeError, ValueError):
        pass
    return EXIT_PIPE
