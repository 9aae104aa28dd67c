"""The worker protocol, version 1: JSON lines, one message per line, both directions.

Both ends (the worker, the app, the CLI, the tests) encode and validate through this module.
Nothing on the wire is ever unpickled or evaluated: a message is a JSON object whose fields are
checked against the table below before anyone acts on it.
"""

from __future__ import annotations

import json
import math
from typing import Any

PROTOCOL_VERSION = 1
# A sample line is ~1 kB and a profile table a few hundred kB; anything beyond this is not ours.
MAX_LINE_BYTES = 4 * 1024 * 1024


class ProtocolError(ValueError):
    """A line that is not a valid protocol message; the text says what was wrong with it."""


_NUM = (int, float)
_OPT_NUM = (int, float, type(None))

# type -> {field: accepted python types}; every listed field is required, extra fields are allowed
# (a newer peer may add some) and kept as they are.
WORKER_MESSAGES: dict[str, dict[str, tuple[type, ...]]] = {
    "hello": {"protocol": (int,), "versions": (dict,), "device": (dict,), "environment": (dict,)},
    "started": {"run": (dict,)},
    "sample": {"step": (int,), "time": _NUM, "metrics": (dict,)},
    "event": {"kind": (str,), "message": (str,)},
    "profile": {"step": (int,), "operators": (list,)},
    "error": {"kind": (str,), "message": (str,), "hint": (str,)},
    "done": {"status": (str,), "summary": (dict,)},
}
FRONT_MESSAGES: dict[str, dict[str, tuple[type, ...]]] = {
    "start": {"config": (dict,)},
    "set": {"technique": (str,), "params": (dict,)},
    "profile": {"steps": (int,)},
    "stop": {},
}
ERROR_KINDS = ("config", "oom", "crash", "unsupported")
DONE_STATUSES = ("completed", "stopped", "failed")
EVENT_KINDS = ("toggle", "phase", "warning", "info", "refused")


def _describe(value: Any) -> str:
    return type(value).__name__


def validate(message: Any, direction: str) -> dict:
    """Check one decoded message; return it, or raise ProtocolError saying what is wrong.

    direction is "worker" (worker -> front end) or "front" (front end -> worker).
    """
    table = WORKER_MESSAGES if direction == "worker" else FRONT_MESSAGES
    if not isinstance(message, dict):
        raise ProtocolError(f"a message must be a JSON object, got {_describe(message)}")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("a message needs a string field 'type'")
    if kind not in table:
        raise ProtocolError(
            f"unknown {direction} message type {kind!r}; expected one of {', '.join(table)}"
        )
    for field, types in table[kind].items():
        if field not in message:
            raise ProtocolError(f"{kind!r} message lacks its field {field!r}")
        value = message[field]
        # bool is an int subclass in Python; a step of `true` is still wrong.
        if isinstance(value, bool) and bool not in types:
            raise ProtocolError(f"{kind!r}.{field} must be {types[0].__name__}, got bool")
        if not isinstance(value, types):
            raise ProtocolError(
                f"{kind!r}.{field} must be {types[0].__name__}, got {_describe(value)}"
            )
    if kind == "hello" and message["protocol"] != PROTOCOL_VERSION:
        raise ProtocolError(
            f"peer speaks protocol {message['protocol']}, this EffiScope speaks "
            f"{PROTOCOL_VERSION}: install the same EffiScope version on both sides"
        )
    if kind == "error" and message["kind"] not in ERROR_KINDS:
        raise ProtocolError(f"error kind {message['kind']!r} is not one of {ERROR_KINDS}")
    if kind == "done" and message["status"] not in DONE_STATUSES:
        raise ProtocolError(f"done status {message['status']!r} is not one of {DONE_STATUSES}")
    if kind == "sample":
        for key, value in message["metrics"].items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, _NUM)):
                raise ProtocolError(f"sample metric {key!r} must be a number or null")
    if kind == "profile" and direction == "front" and message["steps"] < 1:
        raise ProtocolError("profile needs steps >= 1")
    return message


def _clean(value: Any) -> Any:
    """JSON has no NaN / inf: a missing reading travels as null (shown "n/a")."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def encode(message: dict, direction: str = "worker") -> str:
    """One message as one line of JSON with its newline; validated before it leaves."""
    message = _clean(message)
    validate(message, direction)
    line = json.dumps(message, separators=(",", ":"), allow_nan=False)
    if len(line) >= MAX_LINE_BYTES:
        raise ProtocolError(f"message of {len(line)} bytes is over the {MAX_LINE_BYTES} limit")
    return line + "\n"


def _reject_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not valid JSON")


def decode(line: str | bytes, direction: str = "worker") -> dict:
    """Parse and validate one received line; ProtocolError with a readable reason if it is bad."""
    if isinstance(line, bytes):
        if len(line) > MAX_LINE_BYTES:
            raise ProtocolError(f"line of {len(line)} bytes is over the {MAX_LINE_BYTES} limit")
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"line is not UTF-8 text ({exc.reason})") from None
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(f"line of {len(line)} characters is over the {MAX_LINE_BYTES} limit")
    text = line.strip()
    if not text:
        raise ProtocolError("empty line")
    try:
        message = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON ({exc.msg} at column {exc.colno}): {text[:80]!r}") from None
    except RecursionError:
        raise ProtocolError("JSON nested too deeply") from None
    return validate(message, direction)


# Small constructors keep both sides honest about field names.
def start(config: dict) -> dict:
    return {"type": "start", "config": config}


def set_technique(technique: str, params: dict) -> dict:
    return {"type": "set", "technique": technique, "params": params}


def stop() -> dict:
    return {"type": "stop"}


def profile_request(steps: int) -> dict:
    return {"type": "profile", "steps": steps}
