"""The run store: one folder per run under the data directory, plus a rebuildable index.

    $EFFISCOPE_HOME (or the platform's user data dir)/
        runs/<run_id>/config.toml    the run config as started
        runs/<run_id>/meta.json      name, tags, created, status, model (small, rewritten atomically)
        runs/<run_id>/stream.jsonl   every message as received, appended and flushed per line
        runs/<run_id>/summary.json   written at the end
        runs/<run_id>/worker.log     the worker's stderr
        index.sqlite                 one row per run; rebuilt from the folders when missing

This module creates, opens, lists and deletes the folders (profiler.store.runfolder reads and
writes one folder's files, profiler.store.index keeps the index, profiler.store.liveness finds
runs whose front end died). Reports and comparisons read the store only, so any past run can be
reported.

The store takes the run config as data (its TOML text and a few labels): it imports neither
profiler.config nor profiler.models.source, which both use it.
"""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from profiler import files
from profiler.store import liveness
from profiler.store.index import IndexUnavailable, RunIndex
from profiler.store.runfolder import StoredRun, StreamWriter
from profiler.store.storage import StoreError, encodable, shown, text_or

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def data_home() -> Path:
    """The data directory: $EFFISCOPE_HOME, else the platform's user data folder."""
    env = os.environ.get("EFFISCOPE_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("effiscope", appauthor=False))


def _slug(text: str) -> str:
    """A run name as a short piece of a run id (lowercase letters, digits and '-')."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:24] or "run"


class RunStore(RunIndex):
    """The data directory's runs: their folders here, their index in RunIndex."""

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
            if isinstance(value, str) and not encodable(value):
                what = "run name" if key == "name" else "run config" if key == "config_toml" \
                    else f"run's {key}"
                raise StoreError(f"the {what} holds characters that are not valid text "
                                 f"(invalid UTF-8: {shown(value)}); give it in plain UTF-8")
        if not isinstance(record.get("config_toml"), str):
            raise StoreError("the run has no config to store")
        self.ensure()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        label = text_or(record.get("model"), "model")
        name = text_or(record.get("name")) or label
        run_id = f"{stamp}-{_slug(name)}-{secrets.token_hex(2)}"
        path = self.runs_dir / run_id
        try:
            path.mkdir(mode=0o700)  # runs may hold private text and paths: owner only
        except OSError as exc:
            raise StoreError(f"cannot write the run folder {path} ({exc.strerror}); free disk "
                             "space or set EFFISCOPE_HOME to a writable folder") from None
        try:
            run = StoredRun(run_id, path)
            run.write_config(record["config_toml"])
            StreamWriter(run.stream_path).close()
            run.write_meta({"name": name, "tags": [],
                            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "status": "running", "model": label,
                            "workload": text_or(record.get("workload")),
                            "device": text_or(record.get("device")),
                            # Who records the run: if that process is gone while the run still
                            # says "running", the run was orphaned (see reconcile).
                            "front": liveness.this_process()})
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
            raise StoreError(f"{shown(run_id)} is not a run id (run ids are letters, digits, "
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
                if not encodable(entry.name):
                    self._warn(f"{shown(entry.path)} has a name that is not valid UTF-8, so it "
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

    def reconcile(self) -> list[str]:
        """Mark runs still "running" whose front end is gone as crashed (liveness.reconcile)."""
        return liveness.reconcile(self)
