"""Machine contention measured, not guessed: CPU time of processes other than the worker's tree.

Each `sample()` reads the machine's busy CPU time (psutil.cpu_times(), everything but idle and
iowait) and the CPU time of the own tree (root process and all its children, e.g. the torchrun
agent and every rank). Between two samples, other processes used
(machine busy delta - own delta) / wall delta cores. `summary()` gives the time-weighted mean and
the p90 of that figure, the machine's CPU use and the cores available, plus a flag and a sentence
when contended. On a GPU the system sampler also hands over NVML's compute processes on the
device (`note_gpu`): those outside the own tree count as contention too.
The readers are injectable so the arithmetic is tested with fake readings.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable

import psutil

from profiler.figures.busy import contended

MIN_INTERVAL_S = 1.0
"""Walking the process tree costs ~1.5 ms: the meter reads at most once a second (the system
sampler calls it at its own period; the last read, when the sampler stops, always counts)."""

_IDLE_FIELDS = ("idle", "iowait")


def machine_busy_seconds() -> float:
    times = psutil.cpu_times()
    return sum(v for k, v in times._asdict().items() if k not in _IDLE_FIELDS and k != "guest"
               and k != "guest_nice")  # guest time is already inside user time on Linux


def _tree(root_pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(root_pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_cpu_seconds(root_pid: int) -> float:
    """CPU seconds of `root_pid` and all its live descendants, each with the time of the children
    it has reaped: a helper that exited inside the tree keeps counting as the tree's own."""
    total = 0.0
    for proc in _tree(root_pid):
        try:
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            continue
    return total


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of one process, its children left out; 0 once it is gone."""
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return t.user + t.system


def front_end_pid(root_pid: int) -> int | None:
    """The process that started the run's tree (the app, the CLI, a test; sshd's session for a
    remote worker); None when that is init."""
    try:
        parent = psutil.Process(root_pid).ppid()
    except psutil.Error:
        return None
    return parent if parent > 1 else None


def tree_pids(root_pid: int) -> set[int]:
    return {proc.pid for proc in _tree(root_pid)}


def own_root(distributed: bool) -> int:
    """The root of the run's own process tree: this process, or under torchrun its launcher
    (the elastic agent, the parent of every local rank), so that sibling ranks count as own."""
    if distributed or "TORCHELASTIC_RUN_ID" in os.environ:
        return os.getppid()
    return os.getpid()


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]


class ContentionMeter:
    """Samples machine busy time and own-tree CPU time; reports other processes' CPU in cores.

    front_pid: the front end that drives the run (the app drawing its charts, the CLI). It is
    EffiScope's own work, so it is reported on its own and left out of "other processes".
    """

    def __init__(self, root_pid: int | None = None, *,
                 busy: Callable[[], float] = machine_busy_seconds,
                 own: Callable[[int], float] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 cores: int | None = None,
                 pids: Callable[[int], set[int]] | None = None,
                 min_interval_s: float = MIN_INTERVAL_S,
                 front_pid: int | None = None,
                 front: Callable[[int], float] = process_cpu_seconds):
        self.root_pid = root_pid or os.getpid()
        self.front_pid = front_pid
        self._front = front
        self._busy = busy
        self._own = own or tree_cpu_seconds
        self._pids = pids or tree_pids
        self._clock = clock
        self.min_interval_s = min_interval_s
        self.cores = cores or psutil.cpu_count(logical=True) or 1
        self._lock = threading.Lock()
        self._last: tuple[float, float, float, float] | None = None
        self._last_at: float | None = None
        self.walls: list[float] = []
        self.other_cores: list[float] = []
        self.machine_cores: list[float] = []
        self.front_cores: list[float] = []
        self.gpu_samples = 0
        self._mine: set[int] | None = None
        self._mine_at = 0.0
        self.gpu_other_processes = 0
        self.gpu_other_memory_bytes: int | None = None

    def sample(self, force: bool = False) -> None:
        with self._lock:  # the sampler thread and the loop may both read: one at a time
            now_at = self._clock()
            if not force and self._last_at is not None \
                    and now_at - self._last_at < self.min_interval_s:
                return
            front = self._front(self.front_pid) if self.front_pid else 0.0
            now = (now_at, self._busy(), self._own(self.root_pid), front)
            last, self._last, self._last_at = self._last, now, now_at
            if last is None:
                return
            wall = now[0] - last[0]
            if wall <= 0:
                return
            busy = (now[1] - last[1]) / wall
            own = max(0.0, (now[2] - last[2]) / wall)  # a process gone takes its time away
            front = max(0.0, (now[3] - last[3]) / wall)
            self.walls.append(wall)
            self.machine_cores.append(max(0.0, min(float(self.cores), busy)))
            self.front_cores.append(front)
            self.other_cores.append(max(0.0, min(float(self.cores), busy - own - front)))

    def latest(self) -> float | None:
        """Other processes' CPU in cores over the newest window (at most a couple of seconds
        old), None before two readings: the live reading each sample carries."""
        with self._lock:
            return self.other_cores[-1] if self.other_cores else None

    def note_gpu(self, processes: Iterable[tuple[int, int | None]]) -> None:
        """NVML's compute processes on the run's GPU, (pid, used bytes or None). Counted only
        when the list holds a process of the own tree: NVML inside a container may report the
        host's pids, and then no pid can be told apart (and nothing is claimed)."""
        listed = list(processes)
        if not listed:
            return
        now = self._clock()
        if self._mine is None or now - self._mine_at >= self.min_interval_s:
            self._mine, self._mine_at = self._pids(self.root_pid), now
        mine = self._mine
        if not any(pid in mine for pid, _ in listed):
            return
        others = [(pid, used) for pid, used in listed if pid not in mine]
        used = sum(u for _, u in others if isinstance(u, int))
        with self._lock:
            self.gpu_samples += 1
            self.gpu_other_processes = max(self.gpu_other_processes, len(others))
            if others:
                self.gpu_other_memory_bytes = max(self.gpu_other_memory_bytes or 0, used)

    def summary(self) -> dict:
        with self._lock:
            walls, other, machine = list(self.walls), list(self.other_cores), list(self.machine_cores)
            front = list(self.front_cores)
            gpu_samples, gpu_others = self.gpu_samples, self.gpu_other_processes
            gpu_memory = self.gpu_other_memory_bytes
        out = {"contention_other_cpu_cores_mean": None, "contention_other_cpu_cores_p90": None,
               "contention_machine_cpu_percent": None, "contention_cores": self.cores,
               "contention_samples": len(other), "contention_front_end_cpu_cores_mean": None,
               "contention_gpu_other_processes": gpu_others if gpu_samples else None,
               "contention_gpu_other_memory_bytes": gpu_memory,
               "contended": False, "contention_sentence": ""}
        parts = []
        if other:
            total = sum(walls)
            mean = sum(o * w for o, w in zip(other, walls, strict=True)) / total  # time-weighted
            out["contention_other_cpu_cores_mean"] = mean
            out["contention_other_cpu_cores_p90"] = _p90(other)
            out["contention_machine_cpu_percent"] = (
                100.0 * sum(m * w for m, w in zip(machine, walls, strict=True)) / total / self.cores)
            if self.front_pid:
                out["contention_front_end_cpu_cores_mean"] = (
                    sum(f * w for f, w in zip(front, walls, strict=True)) / total)
            if contended(mean, self.cores):
                parts.append(f"other processes used {mean:.1f} of {self.cores} cores")
        if gpu_samples and gpu_others:
            parts.append(f"{gpu_others} other process{'es' if gpu_others > 1 else ''} ran on the "
                         "GPU")
        if parts:
            out["contended"] = True
            out["contention_sentence"] = (" and ".join(parts)
                                          + " during this run: its speed figures are unreliable")
        return out
