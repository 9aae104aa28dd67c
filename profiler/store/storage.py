"""The store's small files, read and written under profiler.files' rule: JSON tables read
bounded and checked (non-finite numbers become n/a, lone surrogates are replaced), text written
whole or not at all; StoreError and DamagedFile say in a sentence what failed and what to do."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from profiler import files


class StoreError(RuntimeError):
    """The store cannot be read or written; the text says where and what to do."""


class DamagedFile(ValueError):
    """A store file that exists but cannot be used (not JSON, not a table, unreadable)."""


STORE_FIX = "remove it (EffiScope keeps its own files in the data directory) or set EFFISCOPE_HOME to another folder"
SUMMARY_LIMIT = 16 * 1024 * 1024
"""The most bytes summary.json may have (a `done` message is at most protocol.MAX_LINE_BYTES)."""


def atomic_write(path: Path, text: str) -> None:
    """Write text to path whole or not at all (files.write_text: a temporary file then a
    rename, onto a regular file or a new path only); StoreError says what failed."""
    try:
        files.write_text(path, text, fix=STORE_FIX)
    except files.FileRefused as exc:
        raise StoreError(str(exc)) from None
    except OSError as exc:
        raise StoreError(write_failure(path, exc)) from None


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _clean_text(value: Any) -> Any:
    """value with lone surrogates (a JSON "\\udcff" escape decodes to one) replaced: such text
    cannot be printed, written as UTF-8 or put in the index."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, list):
        return [_clean_text(v) for v in value]
    if isinstance(value, dict):
        return {_clean_text(k): _clean_text(v) for k, v in value.items()}
    return value


def parse_json(text: str, notes: list[str] | None = None, what: str = "the file",
               exact: bool = True) -> Any:
    """json.loads for files of the store: NaN, Infinity and numbers too large for a float become
    None (n/a) with a note saying so, and lone surrogates are replaced. exact=False (stream
    lines, millions of them) leaves out the per-number check: 1e999 then reads as inf, which
    every reader of a stream already takes as a missing reading."""
    found: list[str] = []

    def constant(name: str) -> None:
        found.append(name)

    def number(literal: str) -> float | None:
        value = float(literal)
        if math.isfinite(value):
            return value
        found.append(literal if len(literal) <= 24 else literal[:21] + "...")
        return None

    data = json.loads(text, parse_constant=constant, parse_float=number if exact else None)
    if found and notes is not None:
        notes.append(f"{what} holds {found[0]} where a finite number belongs"
                     f"{f' ({len(found)} such values)' if len(found) > 1 else ''}; shown as n/a")
    if ("\\ud" in text or "\\uD" in text) and _SURROGATE_ESCAPE.search(text):
        # only an escape makes a lone surrogate out of UTF-8 text
        data = _clean_text(data)
    return data


def read_object(path: Path, limit: int = SUMMARY_LIMIT, inside: Path | None = None,
                notes: list[str] | None = None) -> dict | None:
    """A JSON file holding a table, read under files' rule (a regular file, at most `limit`
    bytes, never through a symlink): None when absent, DamagedFile when it is anything else.
    `notes` collects what was read but not as written (a non-finite number)."""
    try:
        raw = files.read_bytes(path, limit, inside)
    except FileNotFoundError:
        return None
    except files.FileRefused as exc:
        raise DamagedFile(str(exc)) from None
    except OSError as exc:
        raise DamagedFile(f"{path.name} cannot be read ({exc.strerror or exc})") from None
    try:
        data = parse_json(raw.decode("utf-8"), notes, path.name)
    except UnicodeDecodeError:
        raise DamagedFile(f"{path.name} cannot be read (it is not UTF-8 text)") from None
    except (ValueError, RecursionError):
        raise DamagedFile(f"{path.name} is not valid JSON") from None
    if not isinstance(data, dict):
        raise DamagedFile(f"{path.name} holds {type(data).__name__}, not a JSON object")
    return data


def write_failure(path: Path, exc: OSError) -> str:
    """The sentence for a store write that failed (full disk, read-only folder)."""
    return (f"cannot write {path} ({exc.strerror or exc}); free disk space or set EFFISCOPE_HOME "
            "to a writable folder with room")


def text_or(value: Any, default: str = "") -> str:
    """value when it is text, else default (a field of a file from outside may be anything)."""
    return value if isinstance(value, str) else default


def encodable(text: str) -> bool:
    """Whether text can be written as UTF-8 (a name with a lone surrogate cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def number_or_none(value: Any) -> float | None:
    """value when it is a number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def shown(text: Any) -> str:
    """A value from outside, safe to put in a sentence (short, control characters escaped)."""
    value = repr(text if isinstance(text, str) else str(text))
    return value if len(value) <= 80 else value[:77] + "..."
