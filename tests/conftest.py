"""Shared fixtures: a private data directory per test, and a check that no child process leaks."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# One intra-op thread for the tests and every worker they start (children inherit the
# environment; set before any test module imports torch). The models here are tiny: a second
# thread buys nothing, and on a shared 2-core machine two OpenMP pools that wait for each other
# turn millisecond steps into seconds. A developer may still choose otherwise in the environment.
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")


@pytest.fixture(autouse=True)
def effiscope_home(tmp_path, monkeypatch) -> Path:
    """Every test gets its own run store; nothing touches the user's real data."""
    home = tmp_path / "effiscope-home"
    monkeypatch.setenv("EFFISCOPE_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def no_leftover_processes():
    """Fail a test that leaves a worker (or any child process) running."""
    me = psutil.Process(os.getpid())
    before = {p.pid for p in me.children(recursive=True)}
    yield
    leftover = []
    for _ in range(50):  # give exiting children up to 5 s to be reaped
        leftover = [p for p in me.children(recursive=True)
                    if p.pid not in before and p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not leftover:
            break
        psutil.wait_procs(leftover, timeout=0.1)
    for proc in leftover:
        proc.kill()
    assert not leftover, f"test left processes running: {[p.pid for p in leftover]}"


@pytest.fixture
def one_torch_thread(monkeypatch):
    """Workers use one intra-op thread even where the developer's environment asks for more: on a
    busy machine two OpenMP threads that wait for each other turn a millisecond step of gpt-nano
    into seconds, and the fault suite's timings are tight. Modules ask for it with
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture
def one_thread(monkeypatch):
    """One intra-op thread in this process too (torch.set_num_threads), and in the workers a test
    starts: tiny models run as fast on one thread, and a shared machine does not oversubscribe."""
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def window(qtbot):
    """The app's main window at 1280 x 860, shown; closed and really freed at teardown."""
    from tests.gui_support import MainWindow, dispose

    win = MainWindow()
    win.resize(1280, 860)
    win.show()
    qtbot.waitExposed(win)
    yield win
    dispose(win)


@pytest.fixture
def fifo(tmp_path) -> Path:
    """A named pipe: a path that exists and is no regular file (reading it would block)."""
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path
