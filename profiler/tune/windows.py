"""One warm run, many candidates: the schedule of its windows and the driver that walks it.

A window is one candidate's stretch of a warm train run: the `set` commands that switch the
worker to it, `settle` steps left out (the step after a switch pays for it once, and a new
micro-batch or checkpointing re-allocates), then `measure` timed steps. Rounds interleave the
candidates forward and back (A B C, C B A, A B C ...) so that a drift of the machine over the run
falls on all of them alike; each candidate's samples are pooled over its windows, and its figure
is their median with the 95 % interval (figures.stats), as a trial's is.

The driver is run_to_completion's `on_message`: it answers the worker's messages with commands
(the next window's sets, then `stop`), and reads each window's steps from the step numbers the
worker's own toggle events name, never from when a command was sent. Torch-free, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from profiler.figures import stats
from profiler.tune.dimensions import Candidate
from profiler.wire import protocol

SETTLE_STEPS = 2
"""Timed steps left out after a switch: the first pays for the switch (figures.segments'
RETIMED_STEPS), the second for what it re-allocated (a new micro-batch's buffers)."""
LAG_STEPS = 2
"""Steps a switch may take to arrive: the worker polls for commands between steps."""


@dataclass
class Window:
    candidate: Candidate
    measure: int
    round: int
    first_step: int | None = None
    """The first timed step (after the switch and its settle steps); None until known."""
    values: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    peaks: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def complete(self) -> bool:
        return self.error is None and len(self.values) >= self.measure


def schedule(candidates: list[Candidate], steps: int, rounds: int = 2) -> list[Window]:
    """Each candidate measured for `steps` timed steps in all, split over `rounds` windows,
    rounds alternately forward and back."""
    rounds = max(1, min(rounds, steps))
    out = []
    for index in range(rounds):
        measure = steps // rounds + (1 if index < steps % rounds else 0)
        order = candidates if index % 2 == 0 else list(reversed(candidates))
        out += [Window(c, measure, index) for c in order]
    return out


def run_steps(windows: list[Window], warmup_steps: int, settle: int = SETTLE_STEPS) -> int:
    """A step limit the windows fit in, with room for each switch to arrive and settle; the
    driver stops the run when its last window is done."""
    switches = len(windows)
    return warmup_steps + sum(w.measure for w in windows) + switches * (settle + LAG_STEPS) + 5


class WindowDriver:
    """Walks a warm run through its windows (see the module doc)."""

    def __init__(self, windows: list[Window], sample_key: str, warmup_steps: int,
                 commands_of: Callable[[Candidate], list[dict]], settle: int = SETTLE_STEPS,
                 peak_key: str = "torch_peak_allocated_bytes") -> None:
        if not windows:
            raise ValueError("a warm run needs one window or more")
        self.windows, self.sample_key, self.warmup = windows, sample_key, warmup_steps
        self.commands_of, self.settle, self.peak_key = commands_of, settle, peak_key
        self.index = 0
        self.state = "warmup"
        self.current: Candidate | None = windows[0].candidate
        """The candidate the worker is wholly in; None after a switch that did not hold."""
        self.pending: list[dict] = []
        self.acked: list[int] = []
        self.refusals: list[tuple[dict, str]] = []
        self.retried = False
        self.failed: dict[Candidate, str] = {}
        self.last_step = 0
        self.stopped = False

    # --- the messages -------------------------------------------------------------------------
    def on_message(self, message: dict) -> list[dict]:
        kind = message.get("type")
        if kind == "sample":
            return self._sample(message)
        if kind == "event" and message.get("kind") in ("toggle", "refused") \
                and self.state == "switching":
            return self._ack(message)
        if kind == "done":
            self._ended(f"the run ended ({message.get('status')}) before this window's steps")
        return []

    def _sample(self, message: dict) -> list[dict]:
        step = message.get("step")
        value = (message.get("metrics") or {}).get(self.sample_key)
        if message.get("phase") != "measure" or not isinstance(step, int) \
                or not isinstance(value, (int, float)) or isinstance(value, bool):
            return []
        self.last_step = max(self.last_step, step)
        if self.state == "warmup":
            self.state = "measuring"
            self.windows[0].first_step = step  # the run's own warmup settled it
        if self.state != "measuring":
            return []
        window = self.windows[self.index]
        if window.first_step is None or step < window.first_step:
            return []
        window.values.append(float(value))
        window.steps.append(step)
        peak = (message.get("metrics") or {}).get(self.peak_key)
        if isinstance(peak, (int, float)) and not isinstance(peak, bool):
            window.peaks.append(float(peak))
        if len(window.values) >= window.measure:
            return self._advance(step)
        return []

    def _ack(self, message: dict) -> list[dict]:
        technique = message.get("technique")
        match = next((c for c in self.pending if c["technique"] == technique), None)
        if match is None or not isinstance(message.get("step"), int):
            return []
        self.pending.remove(match)
        self.acked.append(message["step"])
        if message.get("kind") == "refused":
            self.refusals.append((match, str(message.get("message", "refused"))))
        if self.pending:
            return []
        if self.refusals and not self.retried:
            # A set may be refused only because of the order (flash attention before fp32):
            # once the others held, it is sent again.
            self.retried = True
            self.pending = [c for c, _ in self.refusals]
            self.refusals = []
            return [dict(c) for c in self.pending]
        window = self.windows[self.index]
        if self.refusals:
            why = "; ".join(f"{c['technique']}: {text}" for c, text in self.refusals)
            self.failed[window.candidate] = f"the switch to it was refused mid-run ({why})"
            self.current = None
            return self._advance(max(self.acked), failed=True)
        self.current = window.candidate
        window.first_step = max(self.acked) + self.settle
        self.state = "measuring"
        return []

    # --- moving on ------------------------------------------------------------------------------
    def _advance(self, step: int, failed: bool = False) -> list[dict]:
        if failed:
            self.windows[self.index].error = self.failed[self.windows[self.index].candidate]
        self.index += 1
        while self.index < len(self.windows) and \
                self.windows[self.index].candidate in self.failed:
            self.windows[self.index].error = self.failed[self.windows[self.index].candidate]
            self.index += 1
        if self.index >= len(self.windows):
            self.state = "stopping"
            self.stopped = True
            return [protocol.stop()]
        window = self.windows[self.index]
        if window.candidate == self.current and not failed:
            window.first_step = step + 1  # the same candidate goes on: nothing to switch
            self.state = "measuring"
            return []
        self.state = "switching"
        self.pending = self.commands_of(window.candidate)
        self.acked, self.refusals, self.retried = [], [], False
        if not self.pending:  # nothing differs in the switched dimensions
            self.current = window.candidate
            window.first_step = step + 1 + self.settle
            self.state = "measuring"
            return []
        return [dict(c) for c in self.pending]

    def _ended(self, why: str) -> None:
        for window in self.windows[self.index:]:
            if not window.complete and window.error is None:
                window.error = why
        self.state = "ended"

    # --- what it measured -----------------------------------------------------------------------
    def results(self) -> dict[Candidate, dict]:
        """Per candidate: {"samples", "distribution", "peak_bytes", "windows", "error",
        "steps"} (samples pooled over its complete windows); a candidate with a window that
        did not complete has its error and no figure."""
        out: dict[Candidate, dict] = {}
        for window in self.windows:
            item = out.setdefault(window.candidate, {"samples": [], "peaks": [], "windows": 0,
                                                     "error": None, "steps": []})
            if window.error is not None or not window.complete:
                item["error"] = item["error"] or window.error or \
                    "the run ended before this candidate's windows were measured"
                continue
            item["samples"] += window.values
            item["steps"] += window.steps
            item["peaks"] += window.peaks
            item["windows"] += 1
        for item in out.values():
            item["distribution"] = stats.distribution(item["samples"]) if item["samples"] \
                and item["error"] is None else {"n": 0}
            item["peak_bytes"] = max(item.pop("peaks")) if item["peaks"] else None
        return out


__all__ = ["SETTLE_STEPS", "Window", "WindowDriver", "run_steps", "schedule"]
