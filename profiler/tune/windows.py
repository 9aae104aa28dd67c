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

SETTLE_STEPS = 1
"""Timed steps left out after a switch: the step it applies at pays for it once (a new autocast
cache, re-allocated buffers), as figures.segments' RETIMED_STEPS leaves it out of a segment."""


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
    """A step limit the windows fit in, with room for switches that arrive late or are sent
    twice; the driver stops the run when its last window is done."""
    return warmup_steps + sum(w.measure for w in windows) + len(windows) * (settle + 2) + 5


class WindowDriver:
    """Walks a warm run through its windows (see the module doc).

    Each switch is sent as soon as the window before it has a known first step, with the step
    it must apply at (its predecessor's last step + 1): the worker holds it until then, so no
    step is lost to the pipe's delay. The steps each switch really applied at come back in the
    worker's toggle events and decide where a window starts; a refused set is sent once more
    (it may only have come in the wrong order), and a candidate refused twice fails in this
    run, the next window switching every dimension again."""

    def __init__(self, windows: list[Window], sample_key: str, warmup_steps: int,
                 commands_of: Callable[[Candidate], list[dict]], settle: int = SETTLE_STEPS,
                 peak_key: str = "torch_peak_allocated_bytes") -> None:
        if not windows:
            raise ValueError("a warm run needs one window or more")
        self.windows, self.sample_key = windows, sample_key
        self.commands_of, self.settle, self.peak_key = commands_of, settle, peak_key
        self.failed: dict[Candidate, str] = {}
        self.index = 0
        """The window being measured (or waiting for its switch)."""
        self.switching: int | None = None
        """The window whose switch is in flight (its acknowledgements awaited)."""
        self.pending: list[dict] = []
        self.acked: list[int] = []
        self.refusals: list[tuple[dict, str]] = []
        self.retried = False
        self.mixed = False
        """A switch that did not hold left the worker between candidates."""
        self.stopped = False
        windows[0].first_step = warmup_steps + 1  # the run's own warmup settled the first
        self.out: list[dict] = self._plan(0)

    # --- planning ---------------------------------------------------------------------------------
    def _plan(self, index: int) -> list[dict]:
        """Window `index` has its first step: plan the switch to the window after it."""
        nxt = index + 1
        while nxt < len(self.windows) and self.windows[nxt].candidate in self.failed:
            self.windows[nxt].error = self.failed[self.windows[nxt].candidate]
            nxt += 1
        if nxt >= len(self.windows):
            return []
        here, there = self.windows[index], self.windows[nxt]
        at = here.first_step + here.measure
        if there.candidate == here.candidate and not self.mixed:
            there.first_step = at  # the same candidate goes on: nothing to switch
            return self._plan(nxt)
        commands = self.commands_of(there.candidate)
        if not commands:
            there.first_step = at + self.settle
            return self._plan(nxt)
        self.switching, self.pending = nxt, [dict(c, step=at) for c in commands]
        self.acked, self.refusals, self.retried = [], [], False
        return [dict(c) for c in self.pending]

    # --- the messages ---------------------------------------------------------------------------
    def on_message(self, message: dict) -> list[dict]:
        kind = message.get("type")
        out, self.out = self.out, []
        if kind == "sample":
            return out + self._sample(message)
        if kind == "event" and message.get("kind") in ("toggle", "refused"):
            return out + self._ack(message)
        if kind == "done":
            self._ended(f"the run ended ({message.get('status')}) before this window's steps")
        return out

    def _sample(self, message: dict) -> list[dict]:
        step = message.get("step")
        value = (message.get("metrics") or {}).get(self.sample_key)
        if message.get("phase") != "measure" or not isinstance(step, int) \
                or not isinstance(value, (int, float)) or isinstance(value, bool) \
                or self.index >= len(self.windows):
            return []
        window = self.windows[self.index]
        if window.first_step is None or step < window.first_step or window.complete:
            return []
        window.values.append(float(value))
        window.steps.append(step)
        peak = (message.get("metrics") or {}).get(self.peak_key)
        if isinstance(peak, (int, float)) and not isinstance(peak, bool):
            window.peaks.append(float(peak))
        if window.complete:
            return self._next()
        return []

    def _next(self) -> list[dict]:
        """The window being measured is complete: the next one (already planned) takes over."""
        self.index += 1
        return self._skip_failed()

    def _skip_failed(self) -> list[dict]:
        """Past the windows of failed candidates; `stop` when no window is left."""
        while self.index < len(self.windows) and self.windows[self.index].error is not None:
            self.index += 1
        if self.index >= len(self.windows) and not self.stopped:
            self.stopped = True
            return [protocol.stop()]
        return []

    def _ack(self, message: dict) -> list[dict]:
        technique, step = message.get("technique"), message.get("step")
        match = next((c for c in self.pending if c["technique"] == technique), None)
        if match is None or not isinstance(step, int):
            return []
        self.pending.remove(match)
        self.acked.append(step)
        if message.get("kind") == "refused":
            self.refusals.append((match, str(message.get("message", "refused"))))
        if self.pending:
            return []
        target = self.windows[self.switching]
        before = self.windows[self.switching - 1]
        switched_at = max(self.acked)
        # A switch that arrived late: what the window before measured from then on is not its.
        if before.steps and before.steps[-1] >= switched_at:
            while before.steps and before.steps[-1] >= switched_at:
                before.steps.pop()
                before.values.pop()
                if before.peaks:
                    before.peaks.pop()
            before.measure = len(before.values)  # a shorter window, its n says so
            if not before.values:
                before.error = "its switch arrived late: no step of its own was measured"
        if self.refusals and not self.retried:
            self.retried = True  # refused perhaps only for the order (flash before fp32)
            self.pending = [{k: v for k, v in c.items() if k != "step"} for c, _ in self.refusals]
            self.refusals = []
            return [dict(c) for c in self.pending]
        if self.refusals:
            why = "; ".join(f"{c['technique']}: {text}" for c, text in self.refusals)
            self.failed[target.candidate] = f"the switch to it was refused mid-run ({why})"
            target.error = self.failed[target.candidate]
            self.mixed = True
            target.first_step = switched_at  # the next switch goes from here
            target.measure = 0
            return self._plan(self.switching) + self._skip_failed()
        self.mixed = False
        target.first_step = switched_at + self.settle
        return self._plan(self.switching)

    def _ended(self, why: str) -> None:
        for window in self.windows:
            if not window.complete and window.error is None:
                window.error = why

    # --- what it measured -----------------------------------------------------------------------
    def results(self) -> dict[Candidate, dict]:
        """Per candidate: {"samples", "distribution", "peak_bytes", "windows", "error",
        "steps"} (samples pooled over its windows); a candidate with a window that did not
        complete has its error and no figure."""
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
