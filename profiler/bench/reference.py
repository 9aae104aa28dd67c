"""The reference process of `effiscope bench overhead`: a process of its own that does the
worker's training work and nothing else (reference_run), serving one JSON request per stdin line
with one result line; ReferenceProcess is its front-end side. What crosses the pipe each way is
checked on the receiving side with profiler.wire.protocol's checker (REQUEST, RESULT, ERROR).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable

from profiler.config import RunConfig
from profiler.wire import protocol
from profiler.wire.protocol import Field, ProtocolError, check

RESULT_PREFIX = "effiscope-reference "
"""The reference process's result lines start with this; anything else on its stdout is a log."""
READY, GO = "effiscope-reference-ready", "go"
"""A held request (run both at once): the reference says READY once set up and its step-0
validation done, and starts its steps when the front end sends GO."""

# What crosses the pipe to and from the reference process, checked on the receiving side (the
# same checker as the worker protocol's): a request, and a result or an error.
_NUM, _NUMBERS = (int, float), Field((list,), each=Field((int, float)))
REQUEST = Field((dict,), fields={
    "config": Field((dict,)), "window_steps": Field((int,)),
    "sampler_period_s": Field((int, float, type(None)), required=False),
    "capture_profile": Field((bool,), required=False),
    "measured_steps": Field((int,), required=False), "hold": Field((bool,), required=False)})
RESULT = Field((dict,), fields={
    "tokens_per_s": Field(_NUM), "capture_window_s": Field(_NUM),
    "clock": Field((dict,), fields={k: Field(_NUM) for k in ("first", "start", "end", "last")}),
    "step_s": _NUMBERS, "losses": _NUMBERS,
    "val_losses": Field((list,), each=Field((list,), each=Field(_NUM))),
    "torch_threads": Field((int,))})
ERROR = Field((dict,), fields={"error": Field((str,))})


# --- the reference loop (runs in its own process) -----------------------------------------------
def reference_run(config: RunConfig, window_steps: int, sampler_period_s: float | None = None,
                  capture_profile: bool = False, measured_steps: int = 0,
                  hold: Callable[[], None] | None = None) -> dict:
    """The worker's training work without the worker's measuring: the same set-up (prepare) and
    the same loop (profiler.engine.workloads.loop.Loop) with null sinks, nothing streamed and nothing
    sampled (unless asked). Timed up to step `measured_steps` (default the last); `hold` is
    called before the first step."""

    import torch

    from profiler.engine.workloads import steps
    from profiler.engine.workloads.loop import Loop, StepResult
    from profiler.engine.workloads.setup import prepare, start_sampler
    from profiler.measure.capture import ProfileCapture

    class Control:
        """The front end of a reference run: no commands, but `hold` before the first step
        and, with capture_profile, a profile request when warmup is over."""

        should_stop = False

        def __init__(self) -> None:
            self.polls = 0

        def poll(self) -> list:
            self.polls += 1
            if self.polls == 1 and hold is not None:
                hold()
            if capture_profile and self.polls == config.limits.warmup_steps + 1:
                return [protocol.profile_request(window_steps)]
            return []

    def quiet(message: dict) -> None:
        return None

    control = Control()
    # The worker's own set-up (profiler/engine/workloads/setup.py), without its sampler thread.
    prep = prepare(config, quiet, control, keep_masks=True, system_sampler=False)
    state, train = prep.state, config.train
    batches = prep.batches(train.batch_size, train.seq_len, sharded=True)
    held_out = prep.batches(train.batch_size, train.seq_len, 1, val=True)
    validation = [held_out.next() for _ in range(train.eval_batches)]
    folder = tempfile.TemporaryDirectory(prefix="effiscope-overhead-")
    capture = ProfileCapture(folder.name, prep.model, prep.device, quiet,
                             compiled=state.compiled)
    # The worker's untimed memory probes, on the worker's schedule: a probe's forward/backward
    # leaves the allocator and caches as the worker's does before the timed steps.
    probes = steps.MemoryProbes(state, prep.batches(train.batch_size, train.seq_len, 2,
                                                    sharded=True), steps.lm_loss_of(state))
    sampler = (start_sampler(prep.dist, prep.caps.get("gpu_uuid"), sampler_period_s)
               if sampler_period_s else None)  # the worker's, meter included

    def step(number: int) -> StepResult:
        loss, grad_norm, tokens = steps.train_step(state, batches, number)
        return StepResult(loss, {"loss_train": loss, "grad_norm": grad_norm}, tokens)

    loop = Loop(prep, control, quiet, step,
                lambda: {"loss_val": steps.evaluate(state, validation)}, probes, "loss_train",
                capture, sampler=sampler)
    try:
        record = loop.run()
    finally:
        if sampler is not None:
            sampler.stop()
        folder.cleanup()
    return {**timed_figures(config, record.step_ends, window_steps, measured_steps),
            "losses": record.losses("loss_train"),
            "val_losses": [[step, found["loss_val"]] for step, found in record.evaluations],
            "torch_threads": torch.get_num_threads()}


def timed_figures(config: RunConfig, ends: dict[int, float], window_steps: int,
                  measured_steps: int = 0) -> dict:
    """tokens/s from the end of the last warmup step to the end of step `measured_steps`
    (default the last), the seconds of the first `window_steps` measured steps (a profile
    capture's window), the step clock (profiler.bench.pairs.Clock) and the seconds of each
    measured step (whether a slow round was slow throughout or in a burst)."""
    warm, steps = config.limits.warmup_steps, config.limits.steps
    last = min(measured_steps or steps, steps)
    tokens = (last - warm) * config.train.batch_size * config.train.seq_len
    window_end = min(last, warm + max(1, window_steps))
    return {"tokens_per_s": tokens / (ends[last] - ends[warm]),
            "capture_window_s": ends[window_end] - ends[warm],
            "clock": {"first": ends[1], "start": ends[warm], "end": ends[last],
                      "last": ends[steps]},
            "step_s": [ends[i] - ends[i - 1] for i in range(warm + 1, last + 1)]}


def serve() -> int:
    """The reference process: one JSON request per stdin line, one result line per request; a
    malformed request gets an error result, and the process waits for the next."""
    while line := sys.stdin.readline():
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            check(request, REQUEST, "the reference request")
            result = reference_run(RunConfig.from_dict(request["config"]),
                                   request["window_steps"], request.get("sampler_period_s"),
                                   request.get("capture_profile", False),
                                   request.get("measured_steps", 0),
                                   _wait_for_go if request.get("hold") else None)
        except Exception as exc:  # noqa: BLE001 - the front end reports it and goes on
            result = {"error": f"the reference loop failed: {type(exc).__name__}: {exc}"}
        sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
        sys.stdout.flush()
    return 0


def received(line: str) -> dict:
    """One result line of the reference process, checked before the bench reads a field of it:
    a result as reference_run writes it or {"error": sentence}; anything else is an error."""
    try:
        result = json.loads(line[len(RESULT_PREFIX):])
        check(result, ERROR if isinstance(result, dict) and "error" in result else RESULT,
              "the reference result")
        if "error" not in result and not result["tokens_per_s"] > 0:
            raise ProtocolError(f"the reference result's tokens_per_s is {result['tokens_per_s']}")
    except ValueError as exc:  # a JSON decode error or a ProtocolError
        return {"error": f"the reference process sent a malformed result: {exc}"}
    return result


def _wait_for_go() -> None:
    sys.stdout.write(READY + "\n")
    sys.stdout.flush()
    while (line := sys.stdin.readline()).strip() != GO:
        if not line:
            raise EOFError("the front end closed the pipe before its go")


class ReferenceProcess:
    """The reference loop's process, started once and kept for every round (as the worker is)."""

    def __init__(self, env: dict[str, str] | None = None):
        from profiler.wire.client import worker_env

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "profiler.bench.reference", "--serve"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=worker_env(env), text=True)

    def run(self, config: RunConfig, **options) -> dict:
        self.request(config, **options)
        return self.result()

    def request(self, config: RunConfig, **options) -> None:
        """Start one run (hold=True: it waits for go() after its set-up, see ready())."""
        self._write(json.dumps({"config": config.to_dict(), **options}))

    def ready(self) -> dict | None:
        """Wait until a held run is set up: None when ready, else its error result."""
        assert self.proc.stdout
        while line := self.proc.stdout.readline():
            if line.strip() == READY:
                return None
            if line.startswith(RESULT_PREFIX):
                return received(line)
        return {"error": "the reference process exited"}

    def go(self) -> None:
        self._write(GO)

    def result(self) -> dict:
        assert self.proc.stdout
        while line := self.proc.stdout.readline():
            if line.startswith(RESULT_PREFIX):
                return received(line)
        return {"error": "the reference process exited"}

    def _write(self, line: str) -> None:
        assert self.proc.stdin
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", action="store_true", required=True,
                        help="be the reference process (JSON requests on stdin)")
    parser.parse_args()
    sys.exit(serve())
