"""Where a tune's trials run, several at once: one trial per device, through a queue.

A device is a local GPU (its worker sees that GPU alone, by UUID), a share of this machine's
cores (its worker pinned there, with as many torch threads), or another machine over the SSH
worker (`ssh HOST effiscope worker`). The pool hands each device the next job from a queue; a
device that fails (its worker does not start, dies without a word, the link drops) is left out
for the rest of the tune and its job goes back on the queue for another device. Torch-free.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

WORKERS_HELP = ("comma-separated: gpus (every local GPU), cuda:N, cpus:N (N local processes, "
                "the cores split between them), cpu:A-B (one process on cores A..B), or an SSH "
                "host (user@host)")


class DeviceLost(RuntimeError):
    """A device that cannot run trials any more; its job is retried on another."""


@dataclass
class Device:
    name: str
    """How the report names it: "cuda:1 (NVIDIA H100)", "cores 0-1", "ssh gpu-box"."""
    overrides: dict = field(default_factory=dict)
    """Config settings of a trial on it (device, launch.ssh)."""
    env: dict = field(default_factory=dict)
    """The worker's environment over this process's (CUDA_VISIBLE_DEVICES, OMP_NUM_THREADS)."""
    cores: set[int] | None = None
    """The cores its worker is pinned to (None: not pinned)."""
    lost: str | None = None
    """Why it was left out; None while it runs trials."""


def local() -> Device:
    """This machine as the config says: the one device of a tune without --workers."""
    return Device("this machine")


def parse_workers(text: str, gpus: Callable[[], list[dict]] | None = None,
                  cores: list[int] | None = None) -> list[Device]:
    """`--workers` -> devices; ValueError with the fix. gpus: NVML's GPUs (system.gpus);
    cores: the cores this process may use."""
    items = [part.strip() for part in (text or "").split(",") if part.strip()]
    if not items:
        raise ValueError(f"--workers: name one or more workers ({WORKERS_HELP})")
    cores = cores if cores is not None else sorted(os.sched_getaffinity(0)) \
        if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    out: list[Device] = []
    for item in items:
        if item == "gpus":
            found = (gpus or _nvml_gpus)()
            if not found:
                raise ValueError("--workers gpus: NVML sees no GPU on this machine; name cpus:N "
                                 "or SSH hosts instead")
            out += [_gpu(g) for g in found]
        elif item.startswith("cuda:"):
            index = item[5:]
            found = {str(g["index"]): g for g in (gpus or _nvml_gpus)()}
            if index not in found:
                raise ValueError(f"--workers {item}: no GPU {index} here (NVML sees "
                                 f"{', '.join(sorted(found)) or 'none'})")
            out.append(_gpu(found[index]))
        elif item.startswith("cpus:"):
            out += _core_shares(item, item[5:], cores)
        elif item.startswith("cpu:"):
            out.append(_cpu(item, _core_range(item, item[4:], cores)))
        elif item.replace("@", "").replace(".", "").replace("-", "").replace("_", "").isalnum():
            out.append(Device(f"ssh {item}", overrides={"launch.ssh": item}))
        else:
            raise ValueError(f"--workers: {item!r} is not a worker ({WORKERS_HELP})")
    names = [d.name for d in out]
    if len(set(names)) != len(names):
        raise ValueError("--workers: a worker is named twice; name each GPU, core range or "
                         "host once")
    return out


def _nvml_gpus() -> list[dict]:
    from profiler.measure.system import gpus

    return gpus()


def _gpu(info: dict) -> Device:
    uuid = str(info.get("uuid") or info["index"])
    # The worker sees this GPU alone (as its cuda:0): NVML's order is not CUDA's.
    return Device(f"cuda:{info['index']} ({info.get('name', 'GPU')})",
                  overrides={"device": "cuda"}, env={"CUDA_VISIBLE_DEVICES": uuid})


def _cpu(item: str, chosen: list[int]) -> Device:
    threads = str(len(chosen))
    return Device(f"cores {_span(chosen)}", overrides={"device": "cpu"},
                  env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads},
                  cores=set(chosen))


def _core_shares(item: str, count: str, cores: list[int]) -> list[Device]:
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"--workers {item}: give a whole number of processes, e.g. cpus:2")
    n = int(count)
    if n > len(cores):
        raise ValueError(f"--workers {item}: {n} processes need {n} cores, this process may "
                         f"use {len(cores)}; give cpus:{len(cores)} or fewer")
    share = len(cores) // n
    return [_cpu(item, cores[i * share:(i + 1) * share]) for i in range(n)]


def _core_range(item: str, text: str, cores: list[int]) -> list[int]:
    low, sep, high = text.partition("-")
    high = high if sep else low
    if not low.isdigit() or not high.isdigit() or int(high) < int(low):
        raise ValueError(f"--workers {item}: give cores as cpu:A-B, e.g. cpu:0-3")
    chosen = list(range(int(low), int(high) + 1))
    missing = [c for c in chosen if c not in cores]
    if missing:
        raise ValueError(f"--workers {item}: core {missing[0]} is not one this process may use "
                         f"({_span(cores)})")
    return chosen


def _span(cores: list[int]) -> str:
    return f"{cores[0]}-{cores[-1]}" if len(cores) > 1 else str(cores[0]) if cores else "none"


# --- the pool ---------------------------------------------------------------------------------
class DevicePool:
    """Runs jobs on devices, one job per device at a time (see the module doc)."""

    def __init__(self, devices: list[Device], log: Callable[[str], Any] = print) -> None:
        if not devices:
            raise ValueError("a pool needs one device or more")
        self.devices, self.log = devices, log

    @property
    def live(self) -> list[Device]:
        return [d for d in self.devices if d.lost is None]

    def run(self, jobs: list, work: Callable[[Device, Any], Any],
            should_stop: Callable[[], bool] | None = None) -> list:
        """work(device, job) for every job, at most one per device at a time; results in the
        jobs' order. A DeviceLost from work leaves its device out and puts the job back on the
        queue for another; when no device is left, the jobs not done get that DeviceLost as
        their result. After a stop request no further job starts (its result is None)."""
        results: list = [None] * len(jobs)
        todo: queue.Queue = queue.Queue()
        for index, job in enumerate(jobs):
            todo.put((index, job))
        left = [len(jobs)]
        lock = threading.Lock()

        def finish(index: int, result: Any) -> None:
            with lock:
                results[index] = result
                left[0] -= 1

        def serve(device: Device) -> None:
            while True:
                with lock:
                    if left[0] <= 0:
                        return
                try:
                    index, job = todo.get(timeout=0.05)
                except queue.Empty:
                    continue  # the last jobs are on other devices; one may come back
                if should_stop is not None and should_stop():
                    finish(index, None)
                    continue
                try:
                    result = work(device, job)
                except DeviceLost as exc:
                    with lock:
                        device.lost = str(exc) or "it stopped answering"
                    self.log(f"worker {device.name} left out: {device.lost}; its trial goes to "
                             "another worker")
                    todo.put((index, job))
                    return
                finish(index, result)

        threads = [threading.Thread(target=serve, args=(d,), daemon=True,
                                    name=f"effiscope-tune-{d.name}") for d in self.live]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        lost = DeviceLost("no worker is left: " + "; ".join(
            f"{d.name}: {d.lost}" for d in self.devices if d.lost))
        while True:  # every device was lost before the queue emptied
            try:
                index, _ = todo.get_nowait()
            except queue.Empty:
                break
            results[index] = lost
        return results


__all__ = ["WORKERS_HELP", "Device", "DeviceLost", "DevicePool", "local", "parse_workers"]
