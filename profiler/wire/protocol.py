"""The worker protocol, version 1: JSON lines, one message per line, both directions.

Both ends (the worker, the app, the CLI, the tests) encode and validate through this module.
Nothing on the wire is ever unpickled or evaluated: a message is a JSON object whose fields are
checked against the table below before anyone acts on it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PROTOCOL_VERSION = 1
# A sample line is ~1 kB and a profile table a few hundred kB; anything beyond this is not ours.
MAX_LINE_BYTES = 4 * 1024 * 1024


class ProtocolError(ValueError):
    """A line that is not a valid protocol message; the text says what was wrong with it."""


_NUM = (int, float)
_NONE = type(None)
# Integers on the wire are counts, steps and byte sizes: 19 digits hold every int64. Python
# refuses to convert integer literals of more than 4,300 digits with a ValueError of its own.
MAX_INT_DIGITS = 19


@dataclass(frozen=True)
class Field:
    """What one field of a message must hold; nested tables are checked the same way.

    types: the accepted Python types (bool is never taken for int); required: whether it must be
    there; fields: the known fields of a table (others are allowed: a newer peer may add some);
    each: the schema of every value of a table, or of every item of a list; choices: the only
    values accepted.
    """

    types: tuple[type, ...]
    required: bool = True
    fields: dict[str, Field] | None = None
    each: Field | None = None
    choices: tuple = ()


def _req(*types: type, **extra: Any) -> Field:
    return Field(types, True, **extra)


def _opt(*types: type, **extra: Any) -> Field:
    return Field(types, False, **extra)


ERROR_KINDS = ("config", "oom", "crash", "unsupported")
DONE_STATUSES = ("completed", "stopped", "failed", "diverged")
"""diverged: the loss stopped being a number and the run stopped there (figures up to it)."""
EVENT_KINDS = ("toggle", "phase", "warning", "info", "refused")

# What a front end reads from a run summary (CLI, store index, reports); every other key is kept
# as it came. A figure is {value, unit, how}: the value a number or null.
# A timed figure carries its distribution (profiler.figures.stats.timed_figure) in the figure's unit.
DISTRIBUTION = _opt(dict, fields={"n": _req(int), **{k: _opt(*_NUM, _NONE) for k in (
    "median", "p10", "p90", "ci_low", "ci_high")}})
FIGURE = _req(dict, fields={"value": _opt(*_NUM, _NONE), "unit": _opt(str), "how": _opt(str),
                            "distribution": DISTRIBUTION})
SUMMARY = {
    "figures": _opt(dict, each=FIGURE),
    "error": _opt(dict, fields={"kind": _opt(str, _NONE), "message": _opt(str, _NONE),
                                "hint": _opt(str, _NONE)}),
    "steps_completed": _opt(int, _NONE), "measured_steps": _opt(int, _NONE),
    "last_step": _opt(int, _NONE), "samples_received": _opt(int, _NONE),
    "device": _opt(str, _NONE), "workload": _opt(str, _NONE), "status": _opt(str, _NONE),
    "end": _opt(str, _NONE), "stop_reason": _opt(str, _NONE), "stopped_early": _opt(bool),
    "diverged": _opt(bool),
    "techniques": _opt(list), "environment": _opt(dict), "quality_loss": _opt(str, _NONE),
    # The machine's load over the run (profiler.measure.contention), a sentence when it was contended.
    "contention_other_cpu_cores_mean": _opt(*_NUM, _NONE),
    "contention_other_cpu_cores_p90": _opt(*_NUM, _NONE),
    "contention_machine_cpu_percent": _opt(*_NUM, _NONE),
    "contention_cores": _opt(int, _NONE), "contention_samples": _opt(int, _NONE),
    "contention_front_end_cpu_cores_mean": _opt(*_NUM, _NONE),
    "contention_gpu_other_processes": _opt(int, _NONE),
    "contention_gpu_other_memory_bytes": _opt(int, _NONE),
    "contended": _opt(bool), "contention_sentence": _opt(str, _NONE),
}
MODEL = {"preset": _opt(str), "parameters": _opt(int, _NONE)}
RUN = {"model": _opt(dict, fields=MODEL), "teacher": _opt(dict, fields=MODEL),
       "device": _opt(str), "data": _opt(str), "workload": _opt(str), "steps": _opt(int),
       "techniques": _opt(list), "warmup_steps": _opt(int)}

# type -> {field: Field}; extra fields are allowed (a newer peer may add some) and kept as is.
WORKER_MESSAGES: dict[str, dict[str, Field]] = {
    "hello": {"protocol": _req(int), "versions": _req(dict), "device": _req(dict),
              "environment": _req(dict), "pid": _opt(int)},
    "started": {"run": _req(dict, fields=RUN)},
    "sample": {"step": _req(int), "time": _req(*_NUM), "phase": _opt(str),
               "metrics": _req(dict, each=_req(*_NUM, _NONE))},
    "event": {"kind": _req(str), "message": _req(str), "step": _opt(int, _NONE)},
    "profile": {"step": _req(int), "operators": _req(list, each=_req(dict)),
                "memory_snapshot_path": _opt(str), "memory_snapshot_note": _opt(str)},
    "error": {"kind": _req(str, choices=ERROR_KINDS), "message": _req(str), "hint": _req(str),
              "traceback": _opt(str)},
    "done": {"status": _req(str, choices=DONE_STATUSES), "summary": _req(dict, fields=SUMMARY)},
    # Sent by an idle worker about once a second: the front end can tell silence from work.
    # Transport only: it is never stored in a run's stream.
    "heartbeat": {"time": _opt(*_NUM)},
}
FRONT_MESSAGES: dict[str, dict[str, Field]] = {
    "start": {"config": _req(dict)},
    "set": {"technique": _req(str), "params": _req(dict), "step": _opt(int)},
    "profile": {"steps": _req(int), "memory": _opt(bool)},
    "stop": {},
}
HEARTBEAT_PERIOD_S = 1.0
"""An idle worker sends a heartbeat after this long without sending anything else."""


def _describe(value: Any) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "true or false", int:
            "an integer", float: "a number", _NONE: "null"}.get(type(value), type(value).__name__)


def _expect(types: tuple[type, ...]) -> str:
    names = {dict: "a table", list: "a list", str: "a string", bool: "true or false",
             int: "an integer", float: "a number", _NONE: "null"}
    wanted = [names.get(t, t.__name__) for t in types if not (t is int and float in types)]
    return " or ".join(dict.fromkeys(wanted))


def check(value: Any, spec: Field, where: str) -> None:
    """Raise ProtocolError unless value fits spec (nested fields included); where names it."""
    # bool is an int subclass in Python; a step of `true` is still wrong.
    if (isinstance(value, bool) and bool not in spec.types) or not isinstance(value, spec.types):
        raise ProtocolError(f"{where} must be {_expect(spec.types)}, got {_describe(value)}")
    if spec.choices and value not in spec.choices:
        raise ProtocolError(f"{where} {value!r} is not one of {', '.join(spec.choices)}")
    if isinstance(value, dict):
        if spec.fields:
            for name, field in spec.fields.items():
                if name in value:
                    check(value[name], field, f"{where}.{name}")
                elif field.required:
                    raise ProtocolError(f"{where} lacks its field {name!r}")
        if spec.each is not None:
            for key, item in value.items():
                check(item, spec.each, f"{where}[{key!r}]")
    elif isinstance(value, list) and spec.each is not None:
        for index, item in enumerate(value):
            check(item, spec.each, f"{where}[{index}]")


def validate(message: Any, direction: str) -> dict:
    """Check one decoded message, nested fields included; return it, or raise ProtocolError
    saying what is wrong. direction is "worker" (worker -> front end) or "front" (front end ->
    worker). The same tables check what a side sends and what it receives.
    """
    table = WORKER_MESSAGES if direction == "worker" else FRONT_MESSAGES
    if not isinstance(message, dict):
        raise ProtocolError(f"a message must be a JSON object, got {_describe(message)}")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("a message needs a string field 'type'")
    if kind not in table:
        raise ProtocolError(
            f"unknown {direction} message type {kind[:40]!r}; expected one of {', '.join(table)}"
        )
    check(message, Field((dict,), fields=table[kind]), repr(kind))
    if kind == "hello" and message["protocol"] != PROTOCOL_VERSION:
        raise ProtocolError(
            f"peer speaks protocol {message['protocol']}, this EffiScope speaks "
            f"{PROTOCOL_VERSION}: install the same EffiScope version on both sides"
        )
    if kind == "profile" and direction == "front" and message["steps"] < 1:
        raise ProtocolError("profile needs steps >= 1")
    return message


def _clean(value: Any) -> Any:
    """JSON has no NaN / inf: a missing reading travels as null (shown "n/a")."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict) or (not isinstance(value, (str, int, list, tuple))
                                   and isinstance(value, Mapping)):
        # A dict, or typed technique parameters (plain data on the wire).
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if (isinstance(value, int) and not isinstance(value, bool)
            and not -10**MAX_INT_DIGITS < value < 10**MAX_INT_DIGITS):
        # What the receiver would refuse is refused before it leaves (decode's _parse_int).
        digits = f"about {int(value.bit_length() * 0.30103) + 1:,}"  # str() refuses > 4,300
        raise ProtocolError(f"an integer of {digits} digits is out of range "
                            f"(at most {MAX_INT_DIGITS})")
    return value


def encode(message: dict, direction: str = "worker") -> str:
    """One message as one line of JSON with its newline; validated before it leaves."""
    message = _clean(message)
    validate(message, direction)
    try:
        line = json.dumps(message, separators=(",", ":"), allow_nan=False)
    except (ValueError, RecursionError) as exc:  # an integer too long to print, a deep nest
        raise ProtocolError(f"message cannot be written as JSON ({exc})") from None
    if len(line) >= MAX_LINE_BYTES:
        raise ProtocolError(f"message of {len(line):,} bytes is over the {MAX_LINE_BYTES:,} "
                            "byte limit of one protocol line")
    return line + "\n"


def _reject_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not valid JSON")


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise ProtocolError(f"an integer of {digits:,} digits is out of range (at most "
                            f"{MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ProtocolError(f"the number {text[:40]} is out of range")
    return value


def decode(line: str | bytes, direction: str = "worker") -> dict:
    """Parse and validate one received line; ProtocolError with a readable reason if it is bad.

    Nothing else escapes: not a huge integer literal, not a deep nest, not bad UTF-8.
    """
    if isinstance(line, (bytes, bytearray)):
        if len(line) > MAX_LINE_BYTES:
            raise ProtocolError(f"line of {len(line):,} bytes is over the {MAX_LINE_BYTES:,} "
                                "byte limit")
        try:
            line = bytes(line).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"line is not UTF-8 text ({exc.reason})") from None
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(f"line of {len(line):,} characters is over the {MAX_LINE_BYTES:,} "
                            "limit")
    text = line.strip()
    if not text:
        raise ProtocolError("empty line")
    try:
        message = json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int,
                             parse_float=_parse_float)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON ({exc.msg} at column {exc.colno}): {text[:80]!r}") from None
    except RecursionError:
        raise ProtocolError("JSON nested too deeply") from None
    except ProtocolError:
        raise
    except ValueError as exc:  # any other conversion json.loads refuses
        raise ProtocolError(f"not valid JSON ({str(exc)[:120]})") from None
    return validate(message, direction)


def is_heartbeat(line: bytes | str) -> bool:
    """Whether a raw line is a worker's heartbeat (cheap: no full decode for every line)."""
    head = line[:40] if isinstance(line, (bytes, bytearray)) else line[:40].encode("utf-8", "replace")
    return head.lstrip().startswith(b'{"type":"heartbeat"')


class SilenceWatch:
    """Tells a front end when its worker has sent nothing for too long (stopped, hung, cut off).

    A live worker speaks at least once a second (samples, or a heartbeat when idle), so several
    seconds of silence mean it is not running: SIGSTOP, a hang in C code, a dead network. Call
    `heard()` for every line received and `check()` now and then; each returns a sentence to
    show once, or None. Torch- and Qt-free: the CLI and the app both use it.
    """

    def __init__(self, quiet_after_s: float = 5.0, first_line_s: float = 60.0,
                 clock=time.monotonic):
        self.quiet_after_s = quiet_after_s
        self.first_line_s = first_line_s
        """The longer wait before the first line (the worker imports torch first)."""
        self._clock = clock
        self._since = clock()
        self._heard_any = False
        self.silent = False

    def heard(self) -> str | None:
        now = self._clock()
        note = None
        if self.silent:
            note = f"the worker is sending again after {now - self._since:.0f} s of silence"
        self._since, self._heard_any, self.silent = now, True, False
        return note

    def check(self) -> str | None:
        if self.silent:
            return None
        quiet = self._clock() - self._since
        limit = self.quiet_after_s if self._heard_any else self.first_line_s
        if quiet < limit:
            return None
        self.silent = True
        what = "since its last message" if self._heard_any else "since it was started"
        return (f"the worker has sent nothing for {quiet:.0f} s {what}: it may be stopped "
                "(SIGSTOP), hung or cut off; the run is kept, and Stop ends it")


# --- constructors ---------------------------------------------------------------------------------
# Every message either side sends is built here, never as a raw dict at the call site: the field
# names live beside the tables that check them (a test builds each one and validates it). Extra
# keyword fields travel as they are (a newer peer may read them; validation keeps them).
def hello(versions: dict, device: dict, environment: dict, *, pid: int | None = None,
          **extra: Any) -> dict:
    """The worker's first message: protocol version, package versions, device, machine."""
    message = {"type": "hello", "protocol": PROTOCOL_VERSION, "versions": versions,
               "device": device, "environment": environment, **extra}
    if pid is not None:
        message["pid"] = pid
    return message


def started(run: dict) -> dict:
    """A run was set up: what runs, on what, with which techniques (see RUN)."""
    return {"type": "started", "run": run}


def sample(step: int, time: float, metrics: dict, phase: str | None = None,
           **extra: Any) -> dict:
    """One step's (or one timed pass's) readings; phase: warmup / measure / eval / ..."""
    message = {"type": "sample", "step": step, "time": time, **extra}
    if phase is not None:
        message["phase"] = phase
    message["metrics"] = metrics
    return message


def event(kind: str, message: str, *, step: int | None = None, **extra: Any) -> dict:
    """An event of one of EVENT_KINDS; extra fields (technique, origin, ...) ride along."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"event kind {kind!r} is not one of {', '.join(EVENT_KINDS)}")
    out = {"type": "event", "kind": kind, "message": message, **extra}
    if step is not None:
        out["step"] = step
    return out


def warning(message: str, *, step: int | None = None, **extra: Any) -> dict:
    """Something the user should know that does not stop the run."""
    return event("warning", message, step=step, **extra)


def info(message: str, *, step: int | None = None, **extra: Any) -> dict:
    """What a technique or the workload did (drawn as a marker when it has a step)."""
    return event("info", message, step=step, **extra)


def phase(message: str, *, step: int, **extra: Any) -> dict:
    """The run moves to another phase (warmup over, compile done) at this step."""
    return event("phase", message, step=step, **extra)


def toggle(message: str, *, step: int, technique: str, **extra: Any) -> dict:
    """A mid-run `set` changed a technique at this step."""
    return event("toggle", message, step=step, technique=technique, **extra)


def refused(message: str, *, step: int | None = None, **extra: Any) -> dict:
    """A command that cannot apply (a mid-run change, a command with no run); the run goes on."""
    return event("refused", message, step=step, **extra)


def profile(step: int, operators: list, **extra: Any) -> dict:
    """An operator table captured over some steps, starting at `step`."""
    return {"type": "profile", "step": step, "operators": operators, **extra}


def error(kind: str, message: str, hint: str, traceback: str | None = None,
          **extra: Any) -> dict:
    """Why a run failed (kind one of ERROR_KINDS) and what to do about it."""
    out = {"type": "error", "kind": kind, "message": message, "hint": hint, **extra}
    if traceback is not None:
        out["traceback"] = traceback
    return out


def done(status: str, summary: dict) -> dict:
    """The run's end (status one of DONE_STATUSES) with its summary (see SUMMARY)."""
    return {"type": "done", "status": status, "summary": summary}


def heartbeat(time: float) -> dict:
    """An idle worker's proof of life (transport only, never stored)."""
    return {"type": "heartbeat", "time": time}


def start(config: dict) -> dict:
    """Front end: run this config (plain data, RunConfig.to_dict())."""
    return {"type": "start", "config": config}


def set_technique(technique: str, params: dict, step: int | None = None) -> dict:
    """Front end: change a technique mid-run ({"enabled": false} switches it off); `step`:
    from that step on, not before (the worker holds it until then; a step already past applies
    at once): a change that lands on a planned step boundary whatever the pipe's delay."""
    message = {"type": "set", "technique": technique, "params": params}
    if step is not None:
        message["step"] = step
    return message


def stop() -> dict:
    """Front end: end the run at the next step boundary, with its summary."""
    return {"type": "stop"}


def profile_request(steps: int, memory: bool = False) -> dict:
    """Front end: capture an operator profile over the next `steps` steps; with `memory`, the
    CUDA memory snapshot of the same steps too (n/a on a CPU, said in the profile message)."""
    return {"type": "profile", "steps": steps, **({"memory": True} if memory else {})}
