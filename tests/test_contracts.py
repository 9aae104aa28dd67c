"""Explicit contracts (issue 36, item 3): one worker command line, technique hooks checked at
registration, typed technique parameters, one rule mechanism, a constructor per message."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _definitions(name: str) -> list[str]:
    """Modules of profiler/ and techniques/ that define a top-level function `name`."""
    found = []
    for package in ("profiler", "techniques"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            if any(isinstance(node, ast.FunctionDef) and node.name == name for node in tree.body):
                found.append(path.relative_to(ROOT).as_posix())
    return found


# --- one worker command --------------------------------------------------------------------------
def test_the_worker_command_has_one_home_that_every_launcher_uses(monkeypatch):
    """profiler.launch.worker_command is the only one; a WorkerProcess given no command starts
    what it names (before, profiler.client had a second copy that ignored launch settings)."""
    from profiler import client, launch

    assert _definitions("worker_command") == ["profiler/launch.py"]
    assert launch.worker_command() == [sys.executable, "-m", "profiler.worker"]
    monkeypatch.setattr(launch, "worker_command", lambda config=None: [
        sys.executable, "-c", "print('from the one worker command', flush=True)"])
    worker = client.WorkerProcess()
    try:
        assert worker.lines.get(timeout=30) == b"from the one worker command\n"
    finally:
        worker.shutdown(1)
