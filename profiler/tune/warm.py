"""Trials in warm workers: a device's worker kept between the runs it measures, and a group of
candidates measured as segments of one warm run (profiler.tune.windows drives it).

Every run is still a run in the store (stream, summary, its own worker log), tagged with the
tune. A warm run holds several candidates: its trial rows name the same run, each with the
steps of its own windows. A candidate the running worker refuses to switch to (a combination
the engine will not change mid-run) is measured in a run of its own; a run that fails in one
candidate's window blames that candidate and measures the others again in a new run.

Memory: on CUDA a window's peak is the torch peak allocated since its switch (the engine
restarts the counter at every change); on CPU a process's RSS keeps what earlier windows or
runs allocated, so a warm run's or a reused worker's peak is n/a, never a wrong number.
Torch-free.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from profiler.config import RunConfig, apply_overrides
from profiler.figures import busy, metrics, stats
from profiler.tune import toggles, windows
from profiler.tune.devices import Device, DeviceLost
from profiler.tune.dimensions import Candidate, world_size
from profiler.tune.runner import PEAK_KEYS, RunEvaluator, TuneError, trial_config
from profiler.tune.search import Measurement
from profiler.tune.space import Space

CPU_PEAK_WHY = ("n/a: the worker's RSS keeps what an earlier window or run allocated, so its "
                "peak is not this candidate's own (CUDA peaks are per window)")


class Launcher:
    """One device's worker, kept between runs: the first run starts it (torch is imported once),
    each later run sends its `start` to the same process and writes its own log."""

    def __init__(self, device: Device, reuse: bool = True) -> None:
        self.device, self.reuse = device, reuse
        self.worker = None
        self.hello: bytes | None = None
        self.fresh = True
        """Whether the last run had a worker of its own (its memory figures are its own)."""
        self.lock = threading.Lock()
        self._spawner: ThreadPoolExecutor | None = None

    def configure(self, config: RunConfig) -> RunConfig:
        """The trial's config on this device (its device, its SSH host)."""
        return apply_overrides(config, dict(self.device.overrides)) if self.device.overrides \
            else config

    def __call__(self, config: RunConfig, recorder, on_message=None,
                 interrupt: threading.Event | None = None) -> str:
        from profiler.wire import protocol
        from profiler.wire.client import WorkerProcess, run_on
        from profiler.wire.launch import worker_command

        with self.lock:
            keep = self.reuse and world_size(config) == 1
            reused = keep and self.worker is not None and not self.worker.exited()
            if reused:
                self.worker.switch_log(recorder.run.log_path)
            else:
                self.close()
                self.worker = self.spawn(lambda: WorkerProcess(
                    log_path=recorder.run.log_path, command=worker_command(config),
                    env=self.device.env, switchable_log=True))
                self.hello = None
                if self.device.cores and hasattr(os, "sched_setaffinity"):
                    try:  # before it imports torch: its threads inherit the cores
                        os.sched_setaffinity(self.worker.pid, self.device.cores)
                    except OSError:
                        pass
            self.fresh = not reused
            status = run_on(self.worker, config.to_dict(), recorder, on_message, interrupt,
                            hello=self.hello if reused else None)
            if recorder.hello is not None and self.hello is None:
                self.hello = protocol.encode(recorder.hello, "worker").encode("utf-8")
            if not keep:
                self.close()
            if recorder.hello is None and not (interrupt is not None and interrupt.is_set()):
                # Not one word from it: the device (or the link to it) is what failed.
                summary = recorder.run.summary() or {}
                raise DeviceLost(str(summary.get("end") or "its worker did not start"))
            return status

    def spawn(self, make: Callable[[], Any]) -> Any:
        """make() on the launcher's own thread, which lives as long as the launcher: a worker
        asks the kernel to kill it when the thread that started it ends (Linux's
        PR_SET_PDEATHSIG follows the thread, not the process), and the device pool's threads
        end after every wave, so a worker started on one of them would die before its next run."""
        if self._spawner is None:
            self._spawner = ThreadPoolExecutor(1, thread_name_prefix="effiscope-launcher")
        return self._spawner.submit(make).result()

    def own_peak(self, key: str, value: float | None) -> tuple[str, float | None]:
        """A reused worker's peak: CUDA's is per run (kept), CPU RSS is not its own (n/a)."""
        return (key, value) if key in PEAK_KEYS[True] else (key, None)

    def close(self) -> None:
        """Shuts the kept worker down (the launcher can start another later)."""
        if self.worker is not None:
            self.worker.shutdown()
            self.worker = None

    def release(self) -> None:
        """close(), and the launcher's thread ends: the end of the tune."""
        self.close()
        if self._spawner is not None:
            self._spawner.shutdown(wait=True)
            self._spawner = None


class GroupEvaluator:
    """Measures a job, a list of candidates at a rung, on a device: as segments of one warm run
    when they can share one, else a run each (RunEvaluator)."""

    def __init__(self, space: Space, store, tag: str, objective: str, sample_key: str,
                 log: Callable[[str], Any] = print, interrupt: threading.Event | None = None,
                 settle: int = windows.SETTLE_STEPS, rounds: int = 2) -> None:
        self.space, self.store, self.tag = space, store, tag
        self.objective, self.sample_key = objective, sample_key
        self.log, self.interrupt = log, interrupt
        self.settle, self.rounds = settle, rounds
        self.single = RunEvaluator(space, store, tag, objective, sample_key, log, interrupt)
        self.count = 0

    def measure(self, launcher: Launcher, candidates: list[Candidate], steps: int,
                final: bool = False) -> dict[Candidate, Measurement]:
        """A Measurement per candidate (steps: timed steps of each, over its windows)."""
        out: dict[Candidate, Measurement] = {}
        # Only candidates with the same build share a run: the run is built for the first of
        # them and switched to the others, so a setting no switch changes must be the same.
        for shared in toggles.groups(self.space, candidates):
            if len(shared) >= 2:
                out.update(self._warm(launcher, shared, steps, final))
        for candidate in candidates:
            if candidate not in out:
                out[candidate] = self.single(candidate, steps, final, launcher=launcher)
        return {c: out[c] for c in candidates}

    # --- a warm run ------------------------------------------------------------------------------
    def _warm(self, launcher: Launcher, candidates: list[Candidate], steps: int,
              final: bool) -> dict[Candidate, Measurement]:
        from profiler.store.recorder import RunRecorder
        from profiler.wire.client import StartRefused

        started = time.monotonic()
        plan = windows.schedule(candidates, steps, self.rounds)
        dims = toggles.varying(candidates)
        try:
            config = launcher.configure(trial_config(self.space, candidates[0], steps, final))
        except TuneError as exc:
            return {c: Measurement(error=str(exc)) for c in candidates}
        warmup = config.limits.warmup_steps
        config.limits.steps = windows.run_steps(plan, warmup, self.settle)
        self.count += 1
        config.name = (f"tune {'final' if final else 'segments'} #{self.count}: "
                       f"{len(candidates)} candidates as segments of one run")[:200]
        run = self.store.create_run(config)
        self.store.set_tags(run.run_id, ["tune", self.tag])
        recorder = RunRecorder(self.store, run)
        driver = windows.WindowDriver(plan, self.sample_key, warmup,
                                      lambda c: toggles.set_commands(c, dims), self.settle)
        first: list[float] = []

        def on_message(message: dict) -> list:
            if message.get("type") == "sample" and message.get("phase") == "measure" \
                    and not first:
                first.append(time.monotonic())
            commands = driver.on_message(message)
            if driver.stopped:  # its own stop, sent once the last window is measured
                recorder.stopped_because = "ended by the tuner: every window was measured"
            return commands

        try:
            status = launcher(config, recorder, on_message, self.interrupt)
        except StartRefused as exc:
            status = recorder.finish(None, explanation=str(exc))
        cost = time.monotonic() - started
        fixed = (first[0] - started) if first else cost
        summary = run.summary() or {}
        results = driver.results()
        stopped = self.interrupt is not None and self.interrupt.is_set()
        error = None
        if status != "completed" and not stopped:
            error = ((summary.get("error") or {}).get("message") or summary.get("end")
                     or f"the run ended {status}")
        culprit = plan[driver.index].candidate if error and driver.index < len(plan) else None
        shared = busy.sentence(summary)
        cuda = str(summary.get("device", "")).startswith("cuda")
        peak_key = PEAK_KEYS[cuda][0]
        measured_steps = sum(len(w.values) for w in plan) or 1
        out: dict[Candidate, Measurement] = {}
        retry: list[Candidate] = []
        for candidate in candidates:
            found = results[candidate]
            mine = sum(len(w.values) for w in plan if w.candidate == candidate)
            share = mine / measured_steps
            common = {"cost_s": fixed / len(candidates) + (cost - fixed) * share,
                      "fixed_cost_s": fixed / len(candidates), "run_id": run.run_id}
            if found["error"] is None:
                dist = found["distribution"]
                label = self.space.label(candidate)
                out[candidate] = Measurement(
                    value=dist["median"], ci_low=dist.get("ci_low"), ci_high=dist.get("ci_high"),
                    peak_bytes=found["peak_bytes"] if cuda else None, samples=found["samples"],
                    extra={"distribution": dist, "peak_key": peak_key, "status": status,
                           "effective_batch": _global_batch(self.space, candidate),
                           "segment": {"windows": found["windows"], "steps": found["steps"]},
                           "peak_why": None if cuda else CPU_PEAK_WHY, "device":
                           launcher.device.name, "busy": f"warm run {run.run_id} ({label}): "
                           f"{shared}" if shared else ""}, **common)
                self.log(f"{'final' if final else 'segment'} ({steps} steps over "
                         f"{found['windows']} windows): {label}: "
                         + stats.describe(dist, metrics.metric(self.objective).unit))
            elif stopped:
                out[candidate] = Measurement(error="stopped on request", extra={"stopped": True},
                                             **common)
            elif candidate == culprit or found["error"].startswith("the switch to it"):
                if candidate == culprit:
                    out[candidate] = Measurement(error=error, **common)
                # refused mid-run: measure() gives it a run of its own
            else:
                retry.append(candidate)  # the run ended in another candidate's window
        if len(retry) >= 2 and len(retry) < len(candidates):
            out.update(self._warm(launcher, retry, steps, final))
        return out


def _global_batch(space: Space, candidate: Candidate) -> int | None:
    from profiler.tune.dimensions import global_batch

    try:
        return global_batch(space.config(candidate))
    except (ValueError, KeyError):
        return None


__all__ = ["CPU_PEAK_WHY", "GroupEvaluator", "Launcher"]
