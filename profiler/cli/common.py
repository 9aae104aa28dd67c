"""What every `effiscope` command shares: the exit codes and how a sentence for the user is
printed (text that came from a run has its control characters escaped: profiler.text.safe).

Exit codes: 0 success; 1 the run failed (an error from the worker, a loss that diverged, or the
store could not be written); 2 bad input (config, run id, arguments); 3 the worker crashed or
was killed; 130 interrupted with Ctrl-C, 143 ended by SIGTERM (either way the run is stopped
and kept); 141 the reader of stdout went away (`| head`), ended quietly as Unix tools do.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable

from profiler.text import safe

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CRASHED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_TERMINATED = 128 + signal.SIGTERM
EXIT_PIPE = 128 + 13  # SIGPIPE (a literal: Windows has no signal.SIGPIPE)


def err(text: str) -> None:
    """A sentence for the user on stderr, prefixed with the command's name."""
    print(f"effiscope: {safe(text)}", file=sys.stderr)


def stdout_open() -> bool:
    """Whether stdout can be written (`>&-` leaves sys.stdout None; a closed fd 1 fails fstat)."""
    if sys.stdout is None:
        return False
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # an in-memory stream (tests, an embedding)
        return not getattr(sys.stdout, "closed", False)
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def print_warnings(warnings: list[str], shown: int = 20) -> None:
    """What a report could not read (damaged lines, files refused), said beside it."""
    for warning in warnings[:shown]:
        print(f"warning: {safe(warning)}", file=sys.stderr)
    if len(warnings) > shown:
        print(f"warning: and {len(warnings) - shown} more (--format json lists them all)",
              file=sys.stderr)


class SignalStop:
    """Ctrl-C and SIGTERM alike: the first asks the work to stop after its step (`interrupt` is
    set, and `said(how)` is printed), the second raises KeyboardInterrupt (kill it). install()
    puts the handlers in, restore() gives back the ones before; exit_code is 130 after Ctrl-C,
    143 after SIGTERM."""

    def __init__(self, said: Callable[[str], str]):
        self.interrupt = threading.Event()
        self.first: int | None = None
        self._said = said
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.interrupt.is_set():
            raise KeyboardInterrupt
        self.first = signum
        self.interrupt.set()
        how = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        print(self._said(how), file=sys.stderr)

    def install(self) -> None:
        self._previous = {sig: signal.signal(sig, self._handle)
                          for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def exit_code(self) -> int:
        return EXIT_TERMINATED if self.first == signal.SIGTERM else EXIT_INTERRUPTED
