"""One run's folder and its files: config.toml, meta.json (rewritten atomically, with room to
record how a run ended on a full disk), summary.json, stream.jsonl (appended a line at a time)
and worker.log. Every read is bounded and checked; a damaged file is named in the run's
`problems` and never hides the rest of the run.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from profiler import files
from profiler.store.storage import (
    STORE_FIX,
    SUMMARY_LIMIT,
    DamagedFile,
    StoreError,
    atomic_write,
    parse_json,
    read_object,
    write_failure,
)
from profiler.wire import protocol

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

RUN_STATUSES = ("running", "completed", "stopped", "failed", "killed", "crashed", "diverged")
META_RESERVE = 512
"""Spaces after meta.json's JSON: room to record how a run ended even when the disk is full."""
META_LIMIT = 1_000_000
"""The most bytes meta.json may have (it holds a name, tags and a few labels)."""
CONFIG_LIMIT = 1_000_000
"""The most bytes a run's config.toml may have (profiler.config.MAX_CONFIG_BYTES, the same)."""
STREAM_LINE_LIMIT = 8 * protocol.MAX_LINE_BYTES
"""The longest stream.jsonl line read (a message re-encoded with escapes grows up to 3x)."""


def _fits(value: Any, spec: protocol.Field) -> bool:
    try:
        protocol.check(value, spec, "field")
    except protocol.ProtocolError:
        return False
    return True


_TEXT = protocol.Field((str,), required=False)
META_FIELDS = {"name": _TEXT, "created": _TEXT, "status": _TEXT, "model": _TEXT,
               "workload": _TEXT, "device": _TEXT, "end": _TEXT,
               "tags": protocol.Field((list,), required=False, each=protocol.Field((str,))),
               "front": protocol.Field((dict,), required=False)}


@dataclass
class StoredRun:
    run_id: str
    path: Path
    problems: list[str] = field(default_factory=list, compare=False, repr=False)
    """What could not be read in this folder (a sentence each), filled by meta() and summary()."""

    @property
    def stream_path(self) -> Path:
        return self.path / "stream.jsonl"

    @property
    def log_path(self) -> Path:
        return self.path / "worker.log"

    def _read_config(self) -> str:
        """config.toml's text under files' rule; FileNotFoundError when absent, OSError (a
        sentence) when it is not a regular file in the folder, too large or not UTF-8."""
        return files.read_text(self.path / "config.toml", CONFIG_LIMIT, inside=self.path)

    def config_text(self) -> str:
        """config.toml's text; "" (with the reason in `problems`) when it cannot be read."""
        try:
            return self._read_config()
        except FileNotFoundError:
            return ""
        except OSError as exc:
            self._note(f"config.toml was not read: {exc.strerror or exc}")
            return ""

    def config_dict(self) -> dict:
        """config.toml as plain data; StoreError with a sentence when it is missing or damaged
        (profiler.config.RunConfig.from_dict turns it into a checked RunConfig)."""
        try:
            return tomllib.loads(self._read_config())
        except FileNotFoundError:
            raise StoreError(f"run {self.run_id} has no config.toml") from None
        except (OSError, tomllib.TOMLDecodeError, RecursionError, ValueError) as exc:
            reason = ("nested too deeply" if isinstance(exc, RecursionError) else
                      str(getattr(exc, "strerror", None) or exc)[:300])
            raise StoreError(f"the config.toml of run {self.run_id} is damaged ({reason}); "
                             "its summary and stream are still readable") from None

    def _note(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)

    def meta(self) -> dict:
        """meta.json as a table whose known fields have their types (a damaged field is left
        out and named in `problems`); a stand-in when the file is missing or damaged."""
        notes: list[str] = []
        try:
            meta = read_object(self.path / "meta.json", META_LIMIT, self.path, notes)
        except DamagedFile as exc:
            self._note(str(exc))
            meta = None
        for note in notes:
            self._note(note)
        if meta is None:
            return {"name": self.run_id, "tags": [], "created": "", "status": "unknown"}
        return self._checked(meta, META_FIELDS, "meta.json")

    def _checked(self, data: dict, fields: dict, filename: str) -> dict:
        out = dict(data)
        figures = out.get("figures")
        if isinstance(figures, dict):
            out["figures"] = {k: v for k, v in figures.items() if _fits(v, protocol.FIGURE)}
            if len(out["figures"]) < len(figures):
                self._note(f"{filename} has damaged figures, left out")
        for name, spec in fields.items():
            if name in out and not _fits(out[name], spec):
                self._note(f"{filename} field {name!r} is damaged, left out")
                del out[name]
        return out

    def write_meta(self, meta: dict) -> None:
        text = json.dumps(meta, indent=2)
        try:
            atomic_write(self.path / "meta.json", text + " " * META_RESERVE)
        except StoreError:
            # The disk is full: meta.json was written with room to spare, so the run's status
            # can still be recorded in place (it never says "running" for a run that ended).
            if not self._write_in_place(self.path / "meta.json", text):
                raise

    @staticmethod
    def _write_in_place(path: Path, text: str) -> bool:
        data = text.encode("utf-8")
        try:  # a regular file only: a FIFO would block the write, a symlink is not followed
            fd = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            return False
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or len(data) > info.st_size:
                return False
            os.write(fd, data + b" " * (info.st_size - len(data)))
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    def summary(self) -> dict | None:
        """summary.json with the fields front ends read checked (protocol.SUMMARY); None when
        it is missing or damaged."""
        notes: list[str] = []
        try:
            summary = read_object(self.path / "summary.json", SUMMARY_LIMIT, self.path, notes)
        except DamagedFile as exc:
            self._note(str(exc))
            return None
        for note in notes:
            self._note(note)
        return None if summary is None else self._checked(summary, protocol.SUMMARY,
                                                          "summary.json")

    def write_config(self, text: str) -> None:
        """config.toml, written whole (the run config as started)."""
        atomic_write(self.path / "config.toml", text)

    def write_summary(self, summary: dict) -> None:
        atomic_write(self.path / "summary.json", json.dumps(summary, indent=2))

    def messages(self, warnings: list[str] | None = None) -> Iterator[dict]:
        """Every stored message, streamed (memory stays bounded whatever the file holds); a
        damaged or overlong line is skipped with a warning, the rest still loads. A stream
        that is not a regular file in the folder (a FIFO, a symlink) is not read: a warning."""

        def warn(note: str) -> None:
            if warnings is not None:
                warnings.append(note)
            else:
                print(f"warning: {note}", file=sys.stderr)

        try:
            fh = files.open_regular(self.stream_path, inside=self.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            warn(f"stream.jsonl was not read: {exc.strerror or exc}")
            return
        notes: list[str] = []
        with fh:
            for number, line in files.bounded_lines(fh, STREAM_LINE_LIMIT):
                if line is None:
                    warn(f"{self.stream_path}: line {number} is longer than "
                         f"{STREAM_LINE_LIMIT:,} bytes and was skipped")
                    continue
                if not line.strip():
                    continue
                try:
                    message = parse_json(line.decode("utf-8", errors="replace"), notes,
                                         f"{self.stream_path}: line {number}", exact=False)
                    if not isinstance(message, dict):
                        raise ValueError("not an object")
                except (ValueError, RecursionError):
                    warn(f"{self.stream_path}: line {number} is damaged and was skipped")
                    continue
                finally:
                    while notes:  # NaN / Infinity where a figure belongs: n/a, and said
                        warn(notes.pop(0))
                yield message


class StreamWriter:
    """Appends messages to stream.jsonl, one line each, written at once: a crash loses nothing.

    A failed write (full disk, read-only folder) raises StoreError; a line cut short by it (or
    found at the end of the file when it is opened) is ended before the next one, so a later
    reader skips it as damaged and loads the rest.
    """

    def __init__(self, path: Path):
        self.path = path
        self._cut = False
        flags = (os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                 | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        try:  # never a FIFO (it would block) or a symlink: the run's own regular file
            fd = os.open(path, flags, 0o600)
        except OSError as exc:
            raise StoreError(write_failure(path, exc)) from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise StoreError(f"{path} is {files.kind(info.st_mode)}, not a regular file; "
                             f"{STORE_FIX}")
        os.set_blocking(fd, True)
        # A file that ends inside a line (a writer killed mid-line) has it ended first.
        self._cut = info.st_size > 0 and os.pread(fd, 1, info.st_size - 1) != b"\n"
        self._fh = os.fdopen(fd, "ab", buffering=0)

    def append(self, message: dict) -> None:
        data = (json.dumps(message, separators=(",", ":")) + "\n").encode("utf-8")
        if self._cut:
            data = b"\n" + data
        view = memoryview(data)
        try:
            while view:
                written = self._fh.write(view)
                if not written:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view = view[written:]
        except OSError as exc:
            self._cut = self._cut or len(view) < len(data)
            raise StoreError(write_failure(self.path, exc)) from None
        self._cut = False

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
