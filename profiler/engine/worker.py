"""The worker process: `python -m profiler.engine.worker` (or `effiscope worker`).

It speaks protocol v1 on its real stdout and reads commands from stdin. At start it keeps the real
stdout for the protocol alone and points file descriptor 1 and `sys.stdout` at stderr, so a stray
`print` (ours, a library's, or C code's) can never corrupt the stream. stderr is the human log.
When stdin closes (the front end died or is done), the current run ends and the worker exits.
"""

from __future__ import annotations

import os
import platform
import queue
import signal
import sys
import threading
import time
import traceback
from typing import Any

from profiler import __version__, errors
from profiler.engine.channel import (
    STDIN_GRACE_S,
    Channel,
    Control,
    SilentChannel,
    claim_stdout,
    die_with_parent,
    leave_if_still_running,
    read_stdin,
    refuse_start,
    start_heartbeat,
)
from profiler.wire import protocol


class MeasuredSoFar:
    """What the worker has sent during a run, for a summary when the workload fails mid-way
    (out of memory at step 40 still says how far it got and what it measured)."""

    def __init__(self, send):
        self._send = send
        self.started: dict | None = None
        self.samples: list[dict] = []

    def send(self, message: dict) -> None:
        if message.get("type") == "sample" and message.get("phase") != "eval":
            self.samples.append({"step": message.get("step"), "phase": message.get("phase"),
                                 "metrics": message.get("metrics") or {}})
            del self.samples[:-10_000]  # a bounded memory of a long run
        elif message.get("type") == "started":
            self.started = message
        self._send(message)

    def summary(self, reason: str) -> dict:
        if self.started is None:
            return {}
        steps = [s["step"] for s in self.samples if isinstance(s["step"], int) and s["step"] > 0]
        measured = [s for s in self.samples if s["phase"] == "measure"]
        out: dict[str, Any] = {"partial": True, "stopped_early": True, "stop_reason": reason,
                               "steps_completed": max(steps) if steps else 0,
                               "measured_steps": len(measured)}
        run = self.started.get("run") or {}
        if isinstance(run.get("device"), str):
            out["device"] = run["device"]
        rates = sorted(s["metrics"]["tokens_per_s"] for s in measured
                       if isinstance(s["metrics"].get("tokens_per_s"), (int, float)))
        figures = {}
        if rates:
            figures["tokens_per_s"] = {"value": rates[len(rates) // 2], "unit": "tokens/s",
                                       "how": f"median of {len(rates)} measured steps before "
                                              "the run failed"}
        losses = [s["metrics"].get("loss_train") for s in self.samples]
        losses = [v for v in losses if isinstance(v, (int, float))]
        if losses:
            figures["loss_train_final"] = {"value": losses[-1], "unit": "nats/token",
                                           "how": "last training loss before the run failed"}
        out["figures"] = figures
        return out


def failure_summary(measured: MeasuredSoFar, control: Control, reason: str) -> dict:
    """The one summary of a failed run: what it measured before the failure (out of memory at
    step 40 still says how far it got, its speed and its last loss) with the contention over
    it; {} when it failed before its `started`, or when what it measured does not fit the
    summary schema (the end still goes out)."""
    summary = measured.summary(reason)
    if not summary:
        return {}
    summary = {**contention_so_far(control), **summary}
    try:
        protocol.encode(protocol.done("failed", summary), "worker")
    except protocol.ProtocolError as exc:
        print(f"effiscope: the failed run's summary is dropped: {exc}", file=sys.stderr)
        return {}
    return summary


def contention_so_far(control: Control) -> dict:
    """The contention keys of a run that failed after its set-up (its sampler stopped here, if
    the workload did not): its speed figures so far carry the same warning as a whole run's."""
    prepared = getattr(control, "prepared", None)
    if prepared is None:
        return {}
    try:
        prepared.stop_sampler()
        return prepared.contention()
    except Exception as exc:  # noqa: BLE001 - the failure being reported matters more
        print(f"effiscope: no contention figures for the failed run: {exc}", file=sys.stderr)
        return {}


def device_info() -> dict:
    import torch

    info: dict[str, Any] = {"cuda": torch.cuda.is_available(), "cuda_devices": []}
    if info["cuda"]:
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            info["cuda_devices"].append({
                "index": index, "name": props.name, "memory_total_bytes": props.total_memory,
                "capability": f"{props.major}.{props.minor}",
            })
        from profiler.measure.system import bf16_native

        props = torch.cuda.get_device_properties(0)
        info["bf16"] = bf16_native("cuda", props.major + props.minor / 10)
        info["default"] = "cuda"
        info["name"] = info["cuda_devices"][0]["name"]
    else:
        info["default"] = "cpu"
        from profiler.measure.system import cpu_name

        info["name"] = cpu_name()
        info["bf16"] = True  # runs on every CPU; cpu_bf16_native says whether it is fast
        info["cpu_bf16_native"] = _cpu_has_native_bf16()
    info["torch_threads"] = torch.get_num_threads()
    return info


def _cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def hello_message() -> dict:
    import torch

    from profiler.measure.system import describe_host

    return protocol.hello(
        versions={"effiscope": __version__, "python": platform.python_version(),
                  "torch": torch.__version__, "cuda": torch.version.cuda},
        device=device_info(), environment=describe_host(), pid=os.getpid())


def run_one(command: dict, channel: Channel | SilentChannel, control: Control) -> str:
    """Validate a start command's config and run its workload; every failure becomes a message.

    Returns the done status. In a torchrun job a failing rank returns "failed" so that its
    process exits non-zero and torchrun ends the other ranks instead of leaving them waiting.
    """
    from profiler.config import ConfigError, RunConfig, validate

    summary: dict[str, Any] = {}
    try:
        config = validate(RunConfig.from_dict(command["config"]))
    except (ConfigError, ValueError) as exc:
        channel.send(protocol.error("config", str(exc),
                                    "fix this setting in the run config and start again"))
        channel.send(protocol.done("failed", summary))
        return "failed"
    import importlib

    measured = MeasuredSoFar(channel.send)
    control.prepared = None
    try:
        # One module per workload (profiler/engine/workloads/<workload>.py), each with run(config, emit, control).
        workload = importlib.import_module(f"profiler.engine.workloads.{config.workload}")
        summary = workload.run(config, measured.send, control)
        status = ("diverged" if summary.get("diverged") else
                  "stopped" if summary.get("stopped_early") else "completed")
        channel.send(protocol.done(status, summary))
        return status
    except Exception as exc:  # noqa: BLE001 - every failure must reach the front end as data
        kind, hint = errors.classify(exc)
        log = traceback.format_exc()
        print(log, file=sys.stderr, flush=True)
        text = errors.user_facing(exc, kind)  # the user's choices read as sentences
        channel.send(protocol.error(kind, text, hint, traceback=log[-8000:]))
        reason = f"{kind}: {text.splitlines()[0][:200] if text else kind}"
        channel.send(protocol.done("failed", failure_summary(measured, control, reason)))
        return "failed"


def main_distributed(proto_fd: int) -> int:
    """One rank of a torchrun job. Rank 0 reads the start command and speaks for the job; the
    config and every later command reach the other ranks through the process group."""
    from profiler.engine.distributed import from_environment

    # torchrun ends a job with SIGTERM when a rank fails: go at once, even inside a collective.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    dist = from_environment()
    commands: queue.Queue = queue.Queue()
    if dist.local_rank == 0:
        # Each node's first rank streams to its own front end (every rank holds the job's
        # gathered figures); only global rank 0's commands steer the job.
        channel: Channel | SilentChannel = Channel(proto_fd)
        hello = hello_message()
        hello["job"] = {"world_size": dist.world_size, "backend": dist.backend, "rank": dist.rank,
                        "node_rank": dist.node_rank, "local_world_size": dist.local_world_size}
        channel.send(hello)
        start_heartbeat(channel)
    else:
        os.close(proto_fd)
        channel = SilentChannel()
    if dist.is_speaker:
        threading.Thread(target=read_stdin, args=(commands, channel), daemon=True,
                         name="effiscope-stdin").start()
    control = Control(commands, channel, dist)
    config = None
    if dist.is_speaker:
        while config is None:
            command = control.wait()
            if command["type"] == "_eof":
                break
            if command["type"] == "start":
                config = command["config"]
            elif command["type"] == "_bad_start":
                refuse_start(channel, command["reason"])
            else:
                channel.send(protocol.refused(
                    f"no run in progress: {command['type']!r} ignored"))
    config = dist.broadcast_json(config)
    if config is not None:
        print(f"rank {dist.rank}/{dist.world_size} starts the run", file=sys.stderr, flush=True)
        status = run_one(protocol.start(config), channel, control)
        if status == "failed":
            os._exit(1)  # torchrun then ends the other ranks, which may wait in a collective
    dist.shutdown()
    # The job is over while stdin may still be open: leave without joining the reader thread
    # (a normal interpreter shutdown aborts on its held stdin lock). Everything is flushed.
    sys.stderr.flush()
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    die_with_parent()
    proto_fd = claim_stdout()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return main_distributed(proto_fd)
    channel = Channel(proto_fd)
    commands: queue.Queue = queue.Queue()
    control = Control(commands, channel)

    signalled: list[int] = []

    def _graceful(signum, frame):  # SIGTERM / SIGINT: finish the step, send done, exit
        if not signalled:  # ...within STDIN_GRACE_S, even in the middle of a model build
            leave_if_still_running(STDIN_GRACE_S)
        signalled.append(signum)
        control.stop_event.set()
        control.stdin_closed = True

    signal.signal(signal.SIGTERM, _graceful)
    signal.signal(signal.SIGINT, _graceful)
    started = time.perf_counter()
    channel.send(hello_message())
    print(f"effiscope worker {__version__} ready in {time.perf_counter() - started:.2f} s "
          f"(pid {os.getpid()})", file=sys.stderr, flush=True)
    threading.Thread(target=read_stdin, args=(commands, channel), daemon=True,
                     name="effiscope-stdin").start()
    start_heartbeat(channel)
    while channel.alive and not control.stdin_closed:
        command = control.wait()
        kind = command["type"]
        if kind == "_eof":
            break
        if kind == "start":
            control.stop_event.clear()
            run_one(command, channel, control)
        elif kind == "_bad_start":
            refuse_start(channel, command["reason"])
        elif kind == "stop":
            continue  # nothing is running
        else:
            channel.send(protocol.refused(f"no run in progress: {kind!r} ignored"))
    # Everything is sent and flushed: leave now. A normal interpreter exit spends seconds
    # tearing torch down, and a front end that died must see its worker (and GPU) gone at once.
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
