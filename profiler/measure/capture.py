"""On-demand torch.profiler capture of N training steps, for the `profile` command.

The train loop asks for a capture (`request`) when the front end sends a profile request
(protocol.profile_request(N)); the profiler then runs around the next N steps (`step_done` after each one), and one
`profile` message goes out with the top operators, each step's wall time, where the time went
(forward / backward / optimizer / other) and the path of the gzipped Chrome trace, which Perfetto
(ui.perfetto.dev) and chrome://tracing open. All times are measured under the profiler, which
slows small operators down: compare them with each other, not with the run's plain step times.

With `memory` asked for, the same steps also record the CUDA memory snapshot
(profiler.measure.memory_snapshot), saved beside the trace for pytorch.org/memory_viz; the
message says its path (`memory_snapshot_path`) or why there is none (`memory_snapshot_note`,
n/a on a CPU).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from profiler.measure.memory_snapshot import MemorySnapshot
from profiler.wire import protocol

MAX_STEPS = 50
"""A longer capture makes a trace too big to open; the request is clipped to this."""
TOP_OPERATORS = 40
FORWARD_LABEL = "effiscope::forward"
_NOT_OPERATORS = ("ProfilerStep#", FORWARD_LABEL)


class ProfileCapture:
    """One capture at a time; `active` while steps are being recorded."""

    def __init__(self, output_dir: str, model: torch.nn.Module, device: torch.device,
                 emit: Callable[[dict], None], compiled: bool = False, enabled: bool = True):
        self.output_dir = output_dir
        self.model = model
        self.device = device
        self.emit = emit
        self.compiled = compiled
        self.enabled = enabled
        """False on ranks other than 0: one trace per job, from the rank that speaks."""
        self._prof: Any = None
        self._hooks: list = []
        self._first_step = 0
        self._started = ""
        self._wanted = 0
        self._step_times: list[float] = []
        self._open_forward: list = []
        self.memory = MemorySnapshot(device)
        self.memory_note = ""
        """Why the current capture has no memory snapshot although one was asked for."""
        self._memory_asked = False

    @property
    def active(self) -> bool:
        return self._prof is not None

    def request(self, steps: int, step: int, memory: bool = False) -> str | None:
        """Start capturing from `step` on, with the CUDA memory snapshot when `memory`; returns
        why it cannot (another capture runs), or None (memory_note then says why a snapshot
        asked for will not be made, "" otherwise)."""
        if self.active:
            return f"a capture of {self._wanted} steps is already running since step {self._first_step}"
        if not self.enabled:
            return None
        self._wanted = max(1, min(int(steps), MAX_STEPS))
        self._first_step = step
        self._step_times = []
        self._memory_asked = bool(memory)
        self.memory_note = (self.memory.start() or "") if memory else ""
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.device.type == "cuda" and torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        if not self.compiled:  # hooks on a compiled model would force a recompile
            self._hooks = [self.model.register_forward_pre_hook(self._forward_begins),
                           self.model.register_forward_hook(self._forward_ends)]
        self._started = time.strftime("%H%M%S")
        self._prof = torch.profiler.profile(activities=activities)
        self._prof.start()
        return None

    def _forward_begins(self, *_: Any) -> None:
        span = torch.profiler.record_function(FORWARD_LABEL)
        span.__enter__()
        self._open_forward.append(span)

    def _forward_ends(self, *_: Any) -> None:
        if self._open_forward:
            self._open_forward.pop().__exit__(None, None, None)

    def step_done(self, step_time_s: float) -> None:
        """Call after every training step; ends the capture after the requested number."""
        if not self.active:
            return
        self._step_times.append(step_time_s)
        self._prof.step()
        if len(self._step_times) >= self._wanted:
            self.finish()

    def finish(self) -> None:
        """Stop the profiler (also for a run that ends mid-capture) and emit the result."""
        if not self.active:
            return
        prof, self._prof = self._prof, None
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        while self._open_forward:
            self._open_forward.pop().__exit__(None, None, None)
        prof.stop()
        if not self._step_times and not self.memory.recording:
            return
        folder, note = self._folder()
        snapshot, snapshot_note = self.memory.save(folder, self._stem)  # stops its recording
        if not self._step_times:
            return
        trace, trace_note = self._write_trace(prof, folder)
        note = trace_note or note
        message = protocol.profile(
            self._first_step, operator_table(prof, sum(self._step_times),
                                             cuda=self.device.type == "cuda"),
            steps=len(self._step_times), step_time_s=list(self._step_times), trace_path=trace,
            how="times measured under torch.profiler (it slows small operators); "
                "% of steps = the operator's self time / the captured steps' wall time")
        on_device = self.device.type == "cuda"
        breakdown = (step_breakdown(prof, self._step_times, device_time=on_device)
                     if not self.compiled else None)
        if breakdown is not None:
            message["breakdown"] = breakdown
            message["breakdown_how"] = BREAKDOWN_HOW[on_device]
        if note:
            message["note"] = note
        if self._memory_asked:
            if snapshot is not None:
                message["memory_snapshot_path"] = snapshot
            else:
                message["memory_snapshot_note"] = self.memory_note or snapshot_note
        self.emit(message)

    @property
    def _stem(self) -> str:
        """The capture's file names: its first step and the time it started."""
        return f"step{self._first_step}-{self._started}"

    def _folder(self) -> tuple[Path, str]:
        """Where the capture's files go: the run folder's traces/ (a temporary folder, said,
        for a run without one)."""
        if self.output_dir:
            return Path(self.output_dir) / "traces", ""
        folder = Path(tempfile.mkdtemp(prefix="effiscope-trace-"))
        return folder, f"the run has no output folder, so the trace was written to {folder}"

    def _write_trace(self, prof: Any, folder: Path) -> tuple[str | None, str]:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{self._stem}.pt.trace.json.gz"
            prof.export_chrome_trace(str(path))
        except (OSError, RuntimeError) as exc:
            return None, f"the trace could not be written ({exc})"
        return str(path), ""


def operator_table(prof: Any, steps_wall_s: float, cuda: bool) -> list[dict]:
    """The operators that took the most self time (device time on CUDA, else CPU), top first."""
    rows = []
    for event in prof.key_averages():
        if event.key.startswith(_NOT_OPERATORS):
            continue
        self_cuda = getattr(event, "self_device_time_total", 0) / 1e6 if cuda else None
        total_cuda = getattr(event, "device_time_total", 0) / 1e6 if cuda else None
        self_cpu = event.self_cpu_time_total / 1e6
        own = self_cuda if cuda and self_cuda else self_cpu
        rows.append({"name": event.key, "calls": int(event.count), "self_cpu_s": self_cpu,
                     "total_cpu_s": event.cpu_time_total / 1e6, "self_cuda_s": self_cuda,
                     "total_cuda_s": total_cuda,
                     "percent_of_steps": 100.0 * own / steps_wall_s if steps_wall_s > 0 else None})
    rows.sort(key=lambda r: -(r["self_cuda_s"] or r["self_cpu_s"]))
    return rows[:TOP_OPERATORS]


PHASES = ("forward", "backward", "optimizer")


def _phase(name: str) -> str | None:
    """Which part of a step a profiler span belongs to: forward is our own label around the
    model call; backward the autograd engine's top-level work; optimizer torch.optim's own
    `Optimizer.step` / `zero_grad` spans."""
    if name == FORWARD_LABEL:
        return "forward"
    if name.startswith("autograd::engine::evaluate_function"):
        return "backward"
    if name.startswith(("Optimizer.step#", "Optimizer.zero_grad#")):
        return "optimizer"
    return None


def _outermost(event: Any, part: str) -> bool:
    """No enclosing span of the same part (a backward inside a backward counts once)."""
    parent = getattr(event, "cpu_parent", None)
    while parent is not None:
        if _phase(parent.name) == part:
            return False
        parent = getattr(parent, "cpu_parent", None)
    return True


def step_breakdown(prof: Any, step_times_s: list[float], device_time: bool = False
                   ) -> dict | None:
    """Mean seconds per step in forward, backward, optimizer and the rest; None when the forward
    label never showed up (nothing honest to split).

    On a CPU the parts are spans of the host's timeline. On CUDA the host only launches: a span
    there is launch time, over before its kernels run. So with `device_time` each part is the
    GPU time of the kernels launched inside its spans (the profiler links each kernel to the op
    that launched it), and "other" is the step's wall time the three leave over (idle GPU,
    synchronisation, kernels launched elsewhere)."""
    spans: dict[str, list] = {part: [] for part in PHASES}
    for event in prof.events():
        part = _phase(event.name)
        if part is not None:
            spans[part].append(event)
    if not spans["forward"] or not step_times_s:
        return None
    steps = len(step_times_s)
    if device_time:
        out = {f"{part}_s": sum(e.device_time_total for e in events if _outermost(e, part))
               / 1e6 / steps for part, events in spans.items()}
    else:
        out = {f"{part}_s": _union_us([(e.time_range.start, e.time_range.end) for e in events])
               / 1e6 / steps for part, events in spans.items()}
    mean_step = sum(step_times_s) / steps
    out["other_s"] = max(0.0, mean_step - sum(out.values()))
    return out


BREAKDOWN_HOW = {
    False: "host (CPU) time of each part's spans, mean per step, under the profiler",
    True: "GPU time of the kernels each part launched (the host only queues them on CUDA), mean "
          "per step, under the profiler; other = the step's wall time left over",
}


def _union_us(ranges: list[tuple[float, float]]) -> float:
    """Length of the union of time ranges: nested spans (a backward inside a backward) once."""
    total = 0.0
    end = float("-inf")
    for start, stop in sorted(ranges):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total
