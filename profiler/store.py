"""The run store: one folder per run under the data directory, plus a rebuildable index.

    $EFFISCOPE_HOME (or the platform's user data dir)/
        runs/<run_id>/config.toml    the run config as started
        runs/<run_id>/meta.json      name, tags, created, status, model (small, rewritten atomically)
        runs/<run_id>/stream.jsonl   every message as received, appended and flushed per line
        runs/<run_id>/summary.json   written at the end
        runs/<run_id>/worker.log     the worker's stderr
        index.sqlite                 one row per run; rebuilt from the folders when missing

The folders are the truth and the index is a cache of them: an index that is missing, empty,
damaged, a folder, locked by another process or on a read-only disk never hides a run (the
history is then read from the folders), and a damaged run folder never hides the others.
Reports and comparisons read the store only, so any past run can be reported.

The store takes the run config as data (its TOML text and a few labels): it imports neither
profiler.config nor profiler.model_source, which both use it.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
import socket
import sqlite3
import stat
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from profiler import files, protocol

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

RUN_STATUSES = ("running", "completed", "stopped", "failed", "killed", "crashed", "diverged")
READ_TIMEOUT_S = 1.0
"""How long a listing waits for another process's lock on the index before reading the folders."""
META_RESERVE = 512
"""Spaces after meta.json's JSON: room to record how a run ended even when the disk is full."""


class StoreError(RuntimeError):
    """The store cannot be read or written; the text says where and what to do."""


class DamagedFile(ValueError):
    """A store file that exists but cannot be used (not JSON, not a table, unreadable)."""


def data_home() -> Path:
    env = os.environ.get("EFFISCOPE_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("effiscope", appauthor=False))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:24] or "run"


def _this_process() -> dict:
    import psutil

    return {"pid": os.getpid(), "started": psutil.Process().create_time(),
            "host": socket.gethostname()}


def _alive(front: Any) -> bool:
    """Whether the process that recorded a run still runs (a reused pid does not count)."""
    if not isinstance(front, dict) or not isinstance(front.get("pid"), int):
        return True  # no record of it (an older run): leave the run alone
    if front.get("host", socket.gethostname()) != socket.gethostname():
        return True  # recorded on another machine sharing this store: cannot tell from here
    import psutil

    try:
        process = psutil.Process(front["pid"])
        return (abs(process.create_time() - float(front.get("started", 0))) < 1.0
                and process.status() != psutil.STATUS_ZOMBIE)
    except (psutil.Error, TypeError, ValueError, OverflowError):
        return False


STORE_FIX = "remove it (EffiScope keeps its own files in the data directory) or set EFFISCOPE_HOME to another folder"
META_LIMIT = 1_000_000
"""The most bytes meta.json may have (it holds a name, tags and a few labels)."""
SUMMARY_LIMIT = 16 * 1024 * 1024
"""The most bytes summary.json may have (a `done` message is at most protocol.MAX_LINE_BYTES)."""
CONFIG_LIMIT = 1_000_000
"""The most bytes a run's config.toml may have (profiler.config.MAX_CONFIG_BYTES, the same)."""
STREAM_LINE_LIMIT = 8 * protocol.MAX_LINE_BYTES
"""The longest stream.jsonl line read (a message re-encoded with escapes grows up to 3x)."""


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


def _text(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


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

_INDEX_COLUMNS = ("id", "name", "created", "status", "workload", "model", "device", "steps",
                  "tokens_per_s", "loss_train_final", "loss_val_final", "peak_rss_bytes", "tags")
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


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


def write_failure(path: Path, exc: OSError) -> str:
    """The sentence for a store write that failed (full disk, read-only folder)."""
    return (f"cannot write {path} ({exc.strerror or exc}); free disk space or set EFFISCOPE_HOME "
            "to a writable folder with room")


class StreamWriter:
    """Appends messages to stream.jsonl, one line each, written at once: a crash loses nothing.

    A failed write (full disk, read-only folder) raises StoreError; a line cut short by it is
    ended before the next one, so a later reader skips it as damaged and loads the rest.
    """

    def __init__(self, path: Path):
        self.path = path
        self._cut = False
        flags = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
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


class IndexUnavailable(Exception):
    """index.sqlite cannot be used right now (locked, a folder, unreadable, no room)."""


def _locked(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class RunStore:
    def __init__(self, home: str | Path | None = None):
        self.home = Path(home) if home else data_home()
        self.runs_dir = self.home / "runs"
        self.index_path = self.home / "index.sqlite"
        self.stale_path = self.home / "index.stale"
        self.warnings: list[str] = []
        """Sentences about what could not be read or indexed (damaged folders, a locked index);
        a front end shows them beside the history."""

    def _warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    # --- folders -----------------------------------------------------------------------------
    def ensure(self) -> None:
        """Create the data directory if needed. Only folders EffiScope creates get its private
        mode: an existing EFFISCOPE_HOME (even /tmp) is never chmodded."""
        self._check_home()
        try:
            for folder in (self.home, self.runs_dir):
                if not folder.is_dir():
                    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                    os.chmod(folder, 0o700)  # mkdir's mode is masked by the umask
        except OSError as exc:
            raise StoreError(
                f"cannot create the data directory {self.home} ({exc.strerror or exc}); set "
                "EFFISCOPE_HOME to a writable folder"
            ) from None
        if not os.access(self.runs_dir, os.W_OK):
            raise StoreError(
                f"the data directory {self.home} is read-only; set EFFISCOPE_HOME to a writable folder"
            )

    def create_run(self, config: Any) -> StoredRun:
        """A new run folder for `config`: a mapping {config_toml, name, model, workload, device}
        or an object whose `run_record()` returns one (profiler.config.RunConfig).

        Everything is checked before the folder is made, and a folder that cannot be written
        whole is removed: a refused run leaves nothing behind.
        """
        record = config if isinstance(config, Mapping) else config.run_record()
        for key in ("config_toml", "name", "model", "workload", "device"):
            value = record.get(key)
            if isinstance(value, str) and not _encodable(value):
                what = "run name" if key == "name" else "run config" if key == "config_toml" \
                    else f"run's {key}"
                raise StoreError(f"the {what} holds characters that are not valid text "
                                 f"(invalid UTF-8: {_shown(value)}); give it in plain UTF-8")
        if not isinstance(record.get("config_toml"), str):
            raise StoreError("the run has no config to store")
        self.ensure()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        label = _text(record.get("model"), "model")
        name = _text(record.get("name")) or label
        run_id = f"{stamp}-{_slug(name)}-{secrets.token_hex(2)}"
        path = self.runs_dir / run_id
        try:
            path.mkdir(mode=0o700)  # runs may hold private text and paths: owner only
        except OSError as exc:
            raise StoreError(f"cannot write the run folder {path} ({exc.strerror}); free disk "
                             "space or set EFFISCOPE_HOME to a writable folder") from None
        try:
            atomic_write(path / "config.toml", record["config_toml"])
            StreamWriter(path / "stream.jsonl").close()
            run = StoredRun(run_id, path)
            run.write_meta({"name": name, "tags": [],
                            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "status": "running", "model": label,
                            "workload": _text(record.get("workload")),
                            "device": _text(record.get("device")),
                            # Who records the run: if that process is gone while the run still
                            # says "running", the run was orphaned (see reconcile).
                            "front": _this_process()})
        except (OSError, StoreError) as exc:
            import shutil

            shutil.rmtree(path, ignore_errors=True)  # no half-made run in the history
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise StoreError(f"cannot write the run folder {path} ({reason}); free disk "
                             "space or set EFFISCOPE_HOME to a writable folder") from None
        self.update_index(run)
        return run

    def _check_home(self) -> None:
        """StoreError when the data directory or its runs/ exists but is not a folder (a file
        named by EFFISCOPE_HOME): said, rather than "no runs yet"."""
        for folder in (self.home, self.runs_dir):
            try:
                info = os.stat(folder)
            except FileNotFoundError:
                return
            except OSError as exc:
                raise StoreError(f"cannot read the data directory {folder} "
                                 f"({exc.strerror or exc}); set EFFISCOPE_HOME to a readable "
                                 "folder") from None
            if not stat.S_ISDIR(info.st_mode):
                named = " (EFFISCOPE_HOME)" if folder == self.home and os.environ.get(
                    "EFFISCOPE_HOME") else ""
                raise StoreError(f"the data directory {folder}{named} is "
                                 f"{files.kind(info.st_mode)}, not a folder; set EFFISCOPE_HOME "
                                 "to a writable folder (it is created when missing)")

    def open_run(self, run_id: str) -> StoredRun:
        """The run with this id, or the only one it is a prefix of (taken literally: glob
        characters are just characters, and never match)."""
        if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id) or len(run_id) > 200:
            raise StoreError(f"{_shown(run_id)} is not a run id (run ids are letters, digits, "
                             "'-', '_' and '.'); `effiscope runs` lists them")
        self._check_home()
        path = self.runs_dir / run_id
        if path.is_symlink():
            raise StoreError(f"the run folder {path} is a symbolic link; runs are read only "
                             "from real folders in the data directory")
        if (path / "meta.json").exists() or (path / "config.toml").exists():
            return StoredRun(run_id, path)
        matches = [name for name in self.run_ids() if name.startswith(run_id)]
        if len(matches) == 1:
            return StoredRun(matches[0], self.runs_dir / matches[0])
        if len(matches) > 1:
            raise StoreError(f"{run_id!r} is the start of {len(matches)} run ids; give more of "
                             "it (`effiscope runs` lists them)")
        raise StoreError(f"no run {run_id!r} in {self.runs_dir}; `effiscope runs` lists them")

    def run_ids(self) -> list[str]:
        """The run folders: real folders only (a symbolic link is skipped with a warning)."""
        try:
            entries = list(os.scandir(self.runs_dir))
        except OSError:
            return []
        ids = []
        for entry in entries:
            try:
                if not _encodable(entry.name):
                    self._warn(f"{_shown(entry.path)} has a name that is not valid UTF-8, so it "
                               "is not a run folder; it was skipped")
                elif entry.is_dir(follow_symlinks=False):
                    ids.append(entry.name)
                elif entry.is_symlink():
                    self._warn(f"{entry.path} is a symbolic link, not a run folder; it was "
                               "skipped")
            except OSError:
                continue
        return sorted(ids)

    def delete_run(self, run_id: str) -> None:
        import shutil

        run = self.open_run(run_id)
        shutil.rmtree(run.path)
        try:
            db = self._connect()
            try:
                with db:
                    db.execute("DELETE FROM runs WHERE id = ?", (run.run_id,))
            finally:
                db.close()
        except (IndexUnavailable, sqlite3.Error):
            self._mark_stale()

    def set_status(self, run: StoredRun, status: str, end: str | None = None) -> None:
        meta = run.meta()
        meta["status"] = status
        if end:
            meta["end"] = end[:300]
        run.write_meta(meta)
        self.update_index(run)

    def rename(self, run_id: str, name: str) -> None:
        run = self.open_run(run_id)
        meta = run.meta()
        meta["name"] = name
        run.write_meta(meta)
        self.update_index(run)

    def set_tags(self, run_id: str, tags: list[str]) -> None:
        run = self.open_run(run_id)
        meta = run.meta()
        meta["tags"] = sorted(set(tags))
        run.write_meta(meta)
        self.update_index(run)

    # --- index ---------------------------------------------------------------------------------
    _CREATE = ("CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, name TEXT, created TEXT, "
               "status TEXT, workload TEXT, model TEXT, device TEXT, steps INTEGER, "
               "tokens_per_s REAL, loss_train_final REAL, loss_val_final REAL, "
               "peak_rss_bytes REAL, tags TEXT)")

    def _writable(self) -> bool:
        return os.access(self.home, os.W_OK) and os.access(self.runs_dir, os.W_OK)

    def _connect(self, path: Path | None = None, timeout: float = 5.0) -> sqlite3.Connection:
        """The index, filled from the folders when it has no table yet (new, or 0 bytes).

        Raises IndexUnavailable when it cannot be used now (locked, a folder, read-only and
        missing, no room), sqlite3.DatabaseError when the file is damaged.
        """
        path = path or self.index_path
        if path.is_dir():
            raise IndexUnavailable(f"{path} is a folder, not an index; remove it and run "
                                   "`effiscope runs --rebuild`")
        writable = self._writable()
        if not writable and not path.exists():
            raise IndexUnavailable(f"{path} is missing and the store is read-only")
        try:
            if writable:
                db = sqlite3.connect(path, timeout=timeout)
            else:
                db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", timeout=timeout,
                                     uri=True)
        except sqlite3.OperationalError as exc:
            raise IndexUnavailable(f"cannot open {path} ({exc})") from None
        try:
            have = db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND "
                              "name = 'runs'").fetchone()
            if have is None and writable:
                with db:
                    db.execute(self._CREATE)
                    db.executemany(self._upsert_sql(), self._folder_rows())
            elif have is None:
                raise IndexUnavailable(f"{path} has no runs table and the store is read-only")
        except sqlite3.OperationalError as exc:
            db.close()
            if _locked(exc):
                raise IndexUnavailable(f"{path} is locked by another process") from None
            if "malformed" in str(exc) or "not a database" in str(exc):
                raise sqlite3.DatabaseError(str(exc)) from None
            raise IndexUnavailable(f"cannot use {path} ({exc})") from None
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _upsert_sql() -> str:
        cols = ", ".join(_INDEX_COLUMNS)
        marks = ", ".join("?" for _ in _INDEX_COLUMNS)
        return f"INSERT OR REPLACE INTO runs ({cols}) VALUES ({marks})"

    def _folder_rows(self) -> list[tuple]:
        """An index row per run folder; a folder that cannot be read is skipped with a warning
        naming it, and the others are still listed."""
        rows = []
        for run_id in self.run_ids():
            run = StoredRun(run_id, self.runs_dir / run_id)
            try:
                row = self._row(run)
            except Exception as exc:  # noqa: BLE001 - one damaged folder never hides the others
                self._warn(f"run folder {run.path} is damaged and was skipped ({exc})")
                continue
            if row is None:
                continue
            rows.append(row)
        return rows

    def _row(self, run: StoredRun) -> tuple | None:
        """The run's index row, read defensively; None (with a warning) for a folder that is
        not a run at all. Damaged files are named in a warning; the rest of the row stays."""
        has_meta = (run.path / "meta.json").exists()
        meta = run.meta()
        summary = run.summary() or {}
        if not has_meta and not (run.path / "config.toml").exists():
            self._warn(f"run folder {run.path} has neither meta.json nor config.toml and was "
                       "skipped")
            return None
        figures = summary.get("figures")
        figures = figures if isinstance(figures, dict) else {}

        def fig(key: str) -> float | None:
            item = figures.get(key)
            return _number(item.get("value")) if isinstance(item, dict) else None

        workload, model, device = (_text(meta.get("workload")), _text(meta.get("model")),
                                   _text(meta.get("device")))
        if not (workload and model and device):  # a run from before meta held them
            try:
                config = run.config_dict()
            except StoreError as exc:
                run._note(str(exc))
                config = {}
            model_cfg = config.get("model") if isinstance(config.get("model"), dict) else {}
            workload = workload or _text(config.get("workload"), "?")
            device = device or _text(config.get("device"), "?")
            model = model or _text(model_cfg.get("preset") if model_cfg.get(
                "source", "preset") == "preset" else model_cfg.get("path") or
                model_cfg.get("run_id"), "?")
        for problem in run.problems:
            self._warn(f"run folder {run.path}: {problem}; listed with what could be read")
        tags = meta.get("tags")
        tags = [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []
        steps = summary.get("steps_completed")
        return (run.run_id, _text(meta.get("name"), run.run_id), _text(meta.get("created")),
                _text(meta.get("status"), "unknown"), workload, model,
                _text(summary.get("device"), device),
                steps if isinstance(steps, int) and not isinstance(steps, bool) else None,
                fig("tokens_per_s"), fig("loss_train_final"), fig("loss_val_final"),
                fig("peak_rss_bytes"), json.dumps(tags))

    def _mark_stale(self) -> None:
        """The index missed an update (locked, no room): the next listing resyncs it."""
        try:
            self.stale_path.touch()
        except OSError:
            pass

    def update_index(self, run: StoredRun) -> None:
        """Put one run's row in the index. Never fails a run: the folder is the truth, and an
        index that cannot take the row now (locked, a folder, no room) is resynced later."""
        try:
            row = self._row(run)
        except Exception as exc:  # noqa: BLE001 - a damaged folder is listed from the folders
            self._warn(f"run folder {run.path} cannot be indexed ({exc})")
            return
        if row is None:
            return
        try:
            db = self._connect()
        except IndexUnavailable as exc:
            self._warn(str(exc))
            self._mark_stale()
            return
        except sqlite3.DatabaseError:
            self._rebuild_damaged()  # a damaged index is rebuilt from the folders (this run included)
            return
        try:
            with db:
                db.execute(self._upsert_sql(), row)
        except sqlite3.Error as exc:
            self._warn(f"cannot update {self.index_path} ({exc}); the run folder is kept")
            self._mark_stale()
        finally:
            db.close()

    def reconcile(self) -> list[str]:
        """Mark runs still "running" whose front end is gone as crashed; returns their ids.

        A front end killed with SIGKILL cannot close its run; the next look at the history does.
        """
        ids = None
        if self.index_path.is_file() and not self.stale_path.exists():
            try:
                db = self._connect(timeout=READ_TIMEOUT_S)
                try:
                    ids = [r[0] for r in db.execute("SELECT id FROM runs WHERE status = 'running'")]
                finally:
                    db.close()
            except (IndexUnavailable, sqlite3.Error):
                ids = None
        orphaned = []
        for run_id in self.run_ids() if ids is None else ids:
            run = StoredRun(run_id, self.runs_dir / run_id)
            if not run.path.is_dir() or run.path.is_symlink():
                continue  # an index row whose folder is gone: list_runs drops it
            meta = run.meta()
            if meta.get("status") != "running" or _alive(meta.get("front")):
                continue
            samples, last_step = 0, None
            for message in run.messages(warnings=[]):  # streamed: a long stream stays on disk
                if message.get("type") == "sample":
                    samples, last_step = samples + 1, message.get("step")
            summary = run.summary() or {}
            summary.update({"status": "crashed", "end": "the front end ended without closing the run",
                            "samples_received": samples})
            if samples:
                summary.setdefault("last_step", last_step)
            try:
                run.write_summary(summary)
                self.set_status(run, "crashed")
            except (OSError, StoreError):
                continue  # a read-only store is listed as it is
            orphaned.append(run_id)
        return orphaned

    def rebuild_index(self, timeout: float = 5.0) -> int:
        """Rebuild index.sqlite from the run folders; returns the number of runs.

        The rows are replaced inside one transaction, so another process's lock is waited for
        (and a StoreError says so if it is held too long), and a full disk leaves the old index
        as it was. A damaged index file is replaced by a fresh one, built aside first.
        """
        self._check_home()
        if self.index_path.is_dir():
            raise StoreError(f"{self.index_path} is a folder, not an index; remove it (the runs "
                             "are listed from their folders meanwhile) and rebuild again")
        try:
            db = self._connect(timeout=timeout)
        except IndexUnavailable as exc:
            raise StoreError(f"cannot rebuild the index: {exc}; the runs are listed from "
                             "their folders meanwhile, try again later") from None
        except sqlite3.DatabaseError:
            return self._rebuild_damaged()
        try:
            rows = self._folder_rows()
            with db:
                db.execute("DELETE FROM runs")
                db.executemany(self._upsert_sql(), rows)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot rebuild {self.index_path} ({exc}); the old index is kept "
                             "and the runs are listed from their folders meanwhile") from None
        finally:
            db.close()
        self._clear_stale()
        return len(rows)

    def _clear_stale(self) -> None:
        try:
            self.stale_path.unlink()
        except OSError:
            pass

    def _rebuild_damaged(self) -> int:
        """Replace a damaged index: build a new one beside it, then swap it in (a failure on
        the way leaves no empty index behind)."""
        fresh = self.home / "index.sqlite.new"
        try:
            fresh.unlink(missing_ok=True)
            db = self._connect(fresh)
            count = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            db.close()
            os.replace(fresh, self.index_path)
        except (IndexUnavailable, sqlite3.Error, OSError) as exc:
            try:
                fresh.unlink(missing_ok=True)
            except OSError:
                pass
            raise StoreError(f"{self.index_path} is damaged and cannot be rebuilt now ({exc}); "
                             "the runs are listed from their folders meanwhile") from None
        self._clear_stale()
        return count

    def list_runs(self) -> list[dict]:
        """Every run, newest first (orphaned runs marked crashed first), from the index when it
        can be used and from the folders when not: the history is never hidden by its cache.
        The folders are the truth: an index row without its folder is dropped and a folder the
        index lacks is added (both said in `warnings`, and the index is mended)."""
        self._check_home()
        if not self.runs_dir.is_dir():
            return []
        self.reconcile()
        rows = None
        try:
            if self.stale_path.exists() and self._writable():
                self.rebuild_index(timeout=READ_TIMEOUT_S)
            db = self._connect(timeout=READ_TIMEOUT_S)
            try:
                rows = db.execute(f"SELECT {', '.join(_INDEX_COLUMNS)} FROM runs").fetchall()
            finally:
                db.close()
        except IndexUnavailable as exc:
            self._warn(f"{exc}; the runs are listed from their folders")
        except StoreError as exc:
            self._warn(str(exc))
        except sqlite3.DatabaseError as exc:
            if _locked(exc):
                self._warn(f"{self.index_path} is locked by another process; the runs are "
                           "listed from their folders")
            else:
                try:
                    self._rebuild_damaged()  # a damaged index is rebuilt from the folders
                except StoreError as error:
                    self._warn(str(error))
        rows = self._folder_rows() if rows is None else self._against_folders(rows)
        out = []
        for row in rows:
            item = dict(zip(_INDEX_COLUMNS, row, strict=True))
            try:
                item["tags"] = json.loads(item["tags"] or "[]")
            except (ValueError, TypeError):
                item["tags"] = []
            out.append(item)
        out.sort(key=lambda r: (str(r["created"] or ""), str(r["id"])), reverse=True)
        return out

    def _against_folders(self, rows: list[tuple]) -> list[tuple]:
        """The index's rows checked against the run folders: rows without a folder (deleted by
        hand, or forged) are dropped, folders without a row are read; the index is mended."""
        folders = set(self.run_ids())
        listed = {row[0] for row in rows}
        gone = sorted(str(i) for i in listed - folders)
        missing = sorted(folders - listed)
        if not gone and not missing:
            return rows
        if gone:
            self._warn(f"{len(gone)} run{'s' if len(gone) > 1 else ''} in {self.index_path} "
                       f"{'have' if len(gone) > 1 else 'has'} no folder in {self.runs_dir} "
                       f"(e.g. {_shown(gone[0])}) and {'are' if len(gone) > 1 else 'is'} not "
                       "listed; the index was corrected")
        added = []
        for run_id in missing:
            try:
                row = self._row(StoredRun(run_id, self.runs_dir / run_id))
            except Exception as exc:  # noqa: BLE001 - one damaged folder never hides the others
                self._warn(f"run folder {self.runs_dir / run_id} is damaged and was skipped ({exc})")
                continue
            if row is not None:
                added.append(row)
        self._mend_index(gone, added)
        return [row for row in rows if row[0] in folders] + added

    def _mend_index(self, gone: list[str], added: list[tuple]) -> None:
        if not self._writable():
            return
        try:
            db = self._connect(timeout=READ_TIMEOUT_S)
        except (IndexUnavailable, sqlite3.Error):
            self._mark_stale()
            return
        try:
            with db:
                db.executemany("DELETE FROM runs WHERE id = ?", [(i,) for i in gone])
                db.executemany(self._upsert_sql(), added)
        except sqlite3.Error:
            self._mark_stale()
        finally:
            db.close()


def _shown(text: Any) -> str:
    """A value from outside, safe to put in a sentence (short, control characters escaped)."""
    value = repr(text if isinstance(text, str) else str(text))
    return value if len(value) <= 80 else value[:77] + "..."
