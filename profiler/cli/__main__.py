"""`python -m profiler.cli ...`: the `effiscope` command."""

from __future__ import annotations

import sys

from profiler.cli.parser import main

if __name__ == "__main__":
    sys.exit(main())
