"""The worker process: `python -m profiler.engine.worker` (or `effiscope worker`).

It speaks protocol v1 on its real stdout and reads commands from stdin. At start it keeps the real
stdout for the protocol alone and points file descriptor 1 and `sys.stdout` at stderr, so a stray
`print` (ours, a library's, or C code's) can never corrupt the stream. stderr is the human log.
When stdin closes (the front end died or is done), the current run ends and the worker exits.
"""

from __future__ import annotations

import json
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
from profiler.wire import protocol


class Channel:
    """The protocol's write side; thread-safe; a closed pipe makes `alive` false, never raises."""

    def __init__(self, fd: int):
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._lock = threading.Lock()
        self.alive = True
        self.last_sent = time.monotonic()

    def send(self, message: dict) -> None:
        data = protocol.encode(message, "worker").encode("utf-8")
        with self._lock:
            if not self.alive:
                return
            try:
                self._file.write(data)
                self.last_sent = time.monotonic()
            except (BrokenPipeError, OSError):
                self.alive = False


class SilentChannel:
    """The protocol side of a rank that does not speak (only global rank 0 does)."""

    alive = True

    def send(self, message: dict) -> None:
        protocol.encode(message, "worker")  # still validated: a bug shows on every rank


class Control:
    """What the run loop asks between steps: new commands, and whether it must stop."""

    def __init__(self, commands: queue.Queue, channel: Channel | SilentChannel, dist: Any = None):
        self._commands = commands
        self._channel = channel
        self.stop_event = threading.Event()
        self.stdin_closed = False
        self.dist = dist
        """The torchrun job (profiler.engine.distributed.DistContext), or None for a single process."""
        self.prepared: Any = None
        """The running workload's set-up (profiler.engine.workloads.setup.Prepared) once it is built: a
        run that fails after it still reports the contention measured over it."""

    def note_prepared(self, prepared: Any) -> None:
        self.prepared = prepared

    @property
    def should_stop(self) -> bool:
        return self.stop_event.is_set() or self.stdin_closed or not self._channel.alive

    def poll(self) -> list[dict]:
        """Commands that arrived since the last call (stop and end-of-input are handled here)."""
        out = []
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return out
            if command["type"] == "_eof":
                self.stdin_closed = True
            elif command["type"] == "stop":
                self.stop_event.set()
            elif command["type"] == "_bad_start":  # a run is going: this start is not for it
                self._channel.send(protocol.warning(
                    f"ignored a bad command: {command['reason']}"))
            else:
                out.append(command)

    def wait(self) -> dict:
        """The next command; `_eof` once stdin has closed or a SIGTERM asked the worker to go
        (a blocking get would not wake for the signal)."""
        while True:
            try:
                return self._commands.get(timeout=0.25)
            except queue.Empty:
                if self.stdin_closed:
                    return _eof()


# Notes the stdin reader queues beside the front end's commands; never on the wire (a leading
# underscore no protocol type has).
def _eof() -> dict:
    """stdin has ended (or a signal asked the worker to go)."""
    return {"type": "_eof"}


def _bad_start(reason: str) -> dict:
    """A start the protocol refused: answered with a failed run, never silence."""
    return {"type": "_bad_start", "reason": reason}


def _claim_stdout() -> int:
    proto_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto_fd


STDIN_GRACE_S = 10.0
"""After its stdin closes the worker ends its run at the next step and exits; one still here
this much later is busy where no step boundary comes (building a huge model): it exits anyway."""


def die_with_parent() -> None:
    """On Linux, ask the kernel to SIGKILL this process when the one that started it dies (a
    front end killed with SIGKILL cannot close anything): nothing the worker sends could be
    received any more, and a model being built would keep allocating. Elsewhere the stdin
    watch alone ends an orphaned worker."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        parent = os.getppid()
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):  # no libc to ask: the stdin watch still works
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _leave_if_still_running(grace_s: float) -> None:
    """Started when stdin closes: exit once grace_s has passed (the run did not end by then)."""
    def leave() -> None:
        time.sleep(grace_s)
        print(f"effiscope: stdin closed {grace_s:.0f} s ago and the worker is still busy "
              "(e.g. building a model); exiting", file=sys.stderr, flush=True)
        os._exit(1)

    threading.Thread(target=leave, daemon=True, name="effiscope-orphan-exit").start()


def _read_stdin(commands: queue.Queue, channel: Channel) -> None:
    """Queue each valid command; answer each bad line with a warning; `_eof` when stdin ends.

    Nothing a front end sends can end this thread early: whatever one line does, `_eof` still
    comes, so the worker always exits when its stdin closes.
    """
    stream = sys.stdin.buffer
    try:
        while True:
            try:
                line = stream.readline(protocol.MAX_LINE_BYTES + 1)
            except (OSError, ValueError):
                line = b""
            if not line:
                break
            if len(line) > protocol.MAX_LINE_BYTES:
                # Drop the rest of an oversize line, then say so; the stream goes on.
                while line and not line.endswith(b"\n"):
                    line = stream.readline(protocol.MAX_LINE_BYTES)
                channel.send(protocol.warning(
                    f"ignored a command over {protocol.MAX_LINE_BYTES} bytes"))
                continue
            if not line.strip():
                continue
            try:
                command = protocol.decode(line, "front")
                version = command.get("protocol", protocol.PROTOCOL_VERSION)
                if version != protocol.PROTOCOL_VERSION:
                    raise protocol.ProtocolError(
                        f"the command is protocol {repr(version)[:40]}, this worker speaks "
                        f"{protocol.PROTOCOL_VERSION}: install the same EffiScope version on "
                        "both sides")
                commands.put(command)
            except Exception as exc:  # noqa: BLE001 - one bad line must not end the reader
                reason = exc if isinstance(exc, protocol.ProtocolError) else f"{type(exc).__name__}: {exc}"
                if _command_type(line) == "start":  # answered, or its front end waits forever
                    commands.put(_bad_start(str(reason)[:500]))
                    continue
                channel.send(protocol.warning(f"ignored a bad command: {str(reason)[:500]}"))
    finally:
        commands.put(_eof())
        _leave_if_still_running(STDIN_GRACE_S)


def _command_type(line: bytes) -> str | None:
    """The `type` of a line that failed validation, read leniently (numbers kept as text), so
    a refused start can be answered; None when it is no JSON object."""
    try:
        message = json.loads(line, parse_int=str, parse_float=str, parse_constant=str)
    except Exception:  # noqa: BLE001 - anything unreadable simply has no type
        return None
    kind = message.get("type") if isinstance(message, dict) else None
    return kind if isinstance(kind, str) else None


def refuse_start(channel: Channel | SilentChannel, reason: str) -> None:
    """A start the protocol refused ends as a failed run with the reason (never silence)."""
    channel.send(protocol.error(
        "config", f"the start command was refused: {reason}",
        "fix the run config (every number within its range) and start again"))
    channel.send(protocol.done("failed", {}))


def _heartbeat(channel: Channel, stop: threading.Event) -> None:
    """While nothing else goes out, a heartbeat about once a second (see SilenceWatch)."""
    while not stop.wait(protocol.HEARTBEAT_PERIOD_S / 2):
        if time.monotonic() - channel.last_sent >= protocol.HEARTBEAT_PERIOD_S:
            channel.send(protocol.heartbeat(time.time()))


def start_heartbeat(channel: Channel) -> threading.Event:
    """Start the heartbeat thread; set the returned event to end it."""
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(channel, stop), daemon=True,
                     name="effiscope-heartbeat").start()
    return stop


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
        threading.Thread(target=_read_stdin, args=(commands, channel), daemon=True,
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
    proto_fd = _claim_stdout()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return main_distributed(proto_fd)
    channel = Channel(proto_fd)
    commands: queue.Queue = queue.Queue()
    control = Control(commands, channel)

    signalled: list[int] = []

    def _graceful(signum, frame):  # SIGTERM / SIGINT: finish the step, send done, exit
        if not signalled:  # ...within STDIN_GRACE_S, even in the middle of a model build
            _leave_if_still_running(STDIN_GRACE_S)
        signalled.append(signum)
        control.stop_event.set()
        control.stdin_closed = True

    signal.signal(signal.SIGTERM, _graceful)
    signal.signal(signal.SIGINT, _graceful)
    started = time.perf_counter()
    channel.send(hello_message())
    print(f"effiscope worker {__version__} ready in {time.perf_counter() - started:.2f} s "
          f"(pid {os.getpid()})", file=sys.stderr, flush=True)
    threading.Thread(target=_read_stdin, args=(commands, channel), daemon=True,
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
