"""Machine contention measured, not guessed: CPU time of processes other than the worker's tree.

Each `sample()` reads the machine's busy CPU time (psutil.cpu_times(), everything but idle and
iowait) and the CPU time of the own tree (root process and all its children, e.g. the torchrun
agent and every rank). Between two samples, other processes used
(machine busy delta - own delta) / wall delta cores. `summary()` gives the mean and p90 of that
figure, the machine's CPU use and the cores available, plus a flag and a sentence when contended.
The readers are injectable so the arithmetic is tested with fake readings.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import psutil

CONTENDED_CORES = 0.25  # other processes above this many cores ...
CONTENDED_FRACTION = 0.10  # ... or above this share of the machine: speed figures unreliable

_IDLE_FIELDS = ("idle", "iowait")


def machine_busy_seconds() -> float:
    times = psutil.cpu_times()
    return sum(v for k, v in times._asdict().items() if k not in _IDLE_FIELDS and k != "guest"
               and k != "guest_nice")  # guest time is already inside user time on Linux


def tree_cpu_seconds(root_pid: int) -> float:
    """CPU seconds (user + system) of `root_pid` and all its live descendants."""
    total = 0.0
    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]


class ContentionMeter:
    """Samples machine busy time and own-tree CPU time; reports other processes' CPU in cores."""

    def __init__(self, root_pid: int | None = None, *,
                 busy: Callable[[], float] = machine_busy_seconds,
                 own: Callable[[int], float] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 cores: int | None = None):
        self.root_pid = root_pid or os.getpid()
        self._busy = busy
        self._own = own or tree_cpu_seconds
        self._clock = clock
        self.cores = cores or psutil.cpu_count(logical=True) or 1
        self._lock = threading.Lock()
        self._last: tuple[float, float, float] | None = None
        self.other_cores: list[float] = []
        self.machine_cores: list[float] = []

    def sample(self) -> None:
        now = (self._clock(), self._busy(), self._own(self.root_pid))
        with self._lock:
            last, self._last = self._last, now
            if last is None:
                return
            wall = now[0] - last[0]
            if wall <= 0:
                return
            busy = (now[1] - last[1]) / wall
            own = (now[2] - last[2]) / wall  # a child that exited takes its time away: clamp at 0
            self.machine_cores.append(max(0.0, min(float(self.cores), busy)))
            self.other_cores.append(max(0.0, min(float(self.cores), busy - max(0.0, own))))

    def summary(self) -> dict:
        with self._lock:
            other, machine = list(self.other_cores), list(self.machine_cores)
        if not other:
            return {"contention_other_cpu_cores_mean": None, "contention_other_cpu_cores_p90": None,
                    "contention_machine_cpu_percent": None, "contention_cores": self.cores,
                    "contention_samples": 0, "contended": False, "contention_sentence": ""}
        mean = sum(other) / len(other)
        contended = mean > CONTENDED_CORES or mean > CONTENDED_FRACTION * self.cores
        sentence = (f"other processes used {mean:.1f} of {self.cores} cores during this run: "
                    "its speed figures are unreliable") if contended else ""
        return {
            "contention_other_cpu_cores_mean": mean,
            "contention_other_cpu_cores_p90": _p90(other),
            "contention_machine_cpu_percent": 100.0 * (sum(machine) / len(machine)) / self.cores,
            "contention_cores": self.cores,
            "contention_samples": len(other),
            "contended": contended,
            "contention_sentence": sentence,
        }
