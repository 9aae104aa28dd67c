"""The `effiscope` command: one module per subcommand (doctor/ a package of its checks), the
parser and main() in parser.py, exit codes in common.py, the progress line in progress.py."""

from __future__ import annotations

from profiler.cli.common import (
    EXIT_CRASHED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PIPE,
    EXIT_TERMINATED,
    EXIT_USAGE,
)
from profiler.cli.parser import build_parser, main
from profiler.text import safe  # the one escaping rule; cli.safe stays importable

__all__ = ["EXIT_CRASHED", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_PIPE",
           "EXIT_TERMINATED", "EXIT_USAGE", "build_parser", "main", "safe"]
