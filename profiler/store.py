"""The run store: one folder per run under the data directory, plus a rebuildable index.

    $EFFISCOPE_HOME (or the platform's user data dir)/
        runs/<run_id>/config.toml    the run config as started
        runs/<run_id>/meta.json      name, tags, created, status (small, rewritten atomically)
        runs/<run_id>/stream.jsonl   every message as received, appended and flushed per line
        runs/<run_id>/summary.json   written at the end
        runs/<run_id>/worker.log     the worker's stderr
        index.sqlite                 one row per run; rebuilt from the folders when missing

Reports and comparisons read the store only, so any past run can be reported.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import socket
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.config import RunConfig

RUN_STATUSES = ("running", "completed", "stopped", "failed", "killed", "crashed")


class StoreError(RuntimeError):
    """The store cannot be read or written; the text says where and what to do."""


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
    except (psutil.Error, TypeError, ValueError):
        return False


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()  # never leave a half-written file behind
        except OSError:
            pass
        raise StoreError(write_failure(path, exc)) from None


_INDEX_COLUMNS = ("id", "name", "created", "status", "workload", "model", "device", "steps",
                  "tokens_per_s", "loss_train_final", "loss_val_final", "peak_rss_bytes", "tags")


@dataclass
class StoredRun:
    run_id: str
    path: Path

    @property
    def stream_path(self) -> Path:
        return self.path / "stream.jsonl"

    @property
    def log_path(self) -> Path:
        return self.path / "worker.log"

    def config(self) -> RunConfig:
        return RunConfig.load(self.path / "config.toml")

    def config_text(self) -> str:
        try:
            return (self.path / "config.toml").read_text(encoding="utf-8")
        except OSError:
            return ""

    def meta(self) -> dict:
        try:
            return json.loads((self.path / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"name": self.run_id, "tags": [], "created": "", "status": "unknown"}

    def write_meta(self, meta: dict) -> None:
        _atomic_write(self.path / "meta.json", json.dumps(meta, indent=2))

    def summary(self) -> dict | None:
        try:
            return json.loads((self.path / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def write_summary(self, summary: dict) -> None:
        _atomic_write(self.path / "summary.json", json.dumps(summary, indent=2))

    def messages(self, warnings: list[str] | None = None) -> Iterator[dict]:
        """Every stored message; a damaged line is skipped with a warning, the rest still loads."""
        try:
            fh = self.stream_path.open("r", encoding="utf-8", errors="replace")
        except OSError:
            return
        with fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    message = json.loads(line)
                    if not isinstance(message, dict):
                        raise ValueError("not an object")
                except ValueError:
                    note = f"{self.stream_path}: line {number} is damaged and was skipped"
                    if warnings is not None:
                        warnings.append(note)
                    else:
                        print(f"warning: {note}", file=sys.stderr)
                    continue
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
        try:
            self._fh = path.open("ab", buffering=0)
        except OSError as exc:
            raise StoreError(write_failure(path, exc)) from None

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


class RunStore:
    def __init__(self, home: str | Path | None = None):
        self.home = Path(home) if home else data_home()
        self.runs_dir = self.home / "runs"
        self.index_path = self.home / "index.sqlite"

    # --- folders -----------------------------------------------------------------------------
    def ensure(self) -> None:
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(self.home, 0o700)
        except OSError as exc:
            raise StoreError(
                f"cannot create the data directory {self.home} ({exc.strerror}); set "
                "EFFISCOPE_HOME to a writable folder"
            ) from None
        if not os.access(self.runs_dir, os.W_OK):
            raise StoreError(
                f"the data directory {self.home} is read-only; set EFFISCOPE_HOME to a writable folder"
            )

    def create_run(self, config: RunConfig) -> StoredRun:
        self.ensure()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        from profiler.model_source import model_label

        label = model_label(config.model)
        run_id = f"{stamp}-{_slug(config.name or label)}-{secrets.token_hex(2)}"
        path = self.runs_dir / run_id
        try:
            path.mkdir(mode=0o700)  # runs may hold private text and paths: owner only
            (path / "config.toml").write_text(config.to_toml(), encoding="utf-8")
            (path / "stream.jsonl").touch()
            run = StoredRun(run_id, path)
            run.write_meta({"name": config.name or label, "tags": [],
                            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "status": "running",
                            # Who records the run: if that process is gone while the run still
                            # says "running", the run was orphaned (see reconcile).
                            "front": _this_process()})
        except OSError as exc:
            raise StoreError(f"cannot write the run folder {path} ({exc.strerror}); free disk "
                             "space or set EFFISCOPE_HOME to a writable folder") from None
        self.update_index(run)
        return run

    def open_run(self, run_id: str) -> StoredRun:
        path = self.runs_dir / run_id
        if not run_id or "/" in run_id or not (path / "meta.json").exists() and not (path / "config.toml").exists():
            matches = [p.name for p in self.runs_dir.glob(f"{run_id}*")] if run_id and "/" not in run_id else []
            if len(matches) == 1:
                return StoredRun(matches[0], self.runs_dir / matches[0])
            raise StoreError(f"no run {run_id!r} in {self.runs_dir}; `effiscope runs` lists them")
        return StoredRun(run_id, path)

    def run_ids(self) -> list[str]:
        if not self.runs_dir.exists():
            return []
        return sorted(p.name for p in self.runs_dir.iterdir() if p.is_dir())

    def delete_run(self, run_id: str) -> None:
        import shutil

        run = self.open_run(run_id)
        shutil.rmtree(run.path)
        with self._db() as db:
            db.execute("DELETE FROM runs WHERE id = ?", (run.run_id,))

    def set_status(self, run: StoredRun, status: str) -> None:
        meta = run.meta()
        meta["status"] = status
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
    def _db(self) -> sqlite3.Connection:
        self.ensure()
        fresh = not self.index_path.exists()
        db = sqlite3.connect(self.index_path, timeout=5)
        db.execute(
            "CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, name TEXT, created TEXT, "
            "status TEXT, workload TEXT, model TEXT, device TEXT, steps INTEGER, "
            "tokens_per_s REAL, loss_train_final REAL, loss_val_final REAL, "
            "peak_rss_bytes REAL, tags TEXT)"
        )
        if fresh and self.runs_dir.exists():
            for run_id in self.run_ids():
                db.execute(self._upsert_sql(), self._row(StoredRun(run_id, self.runs_dir / run_id)))
            db.commit()
        return db

    @staticmethod
    def _upsert_sql() -> str:
        cols = ", ".join(_INDEX_COLUMNS)
        marks = ", ".join("?" for _ in _INDEX_COLUMNS)
        return f"INSERT OR REPLACE INTO runs ({cols}) VALUES ({marks})"

    @staticmethod
    def _row(run: StoredRun) -> tuple:
        meta = run.meta()
        summary = run.summary() or {}
        figures = summary.get("figures", {})

        def fig(key: str) -> Any:
            return (figures.get(key) or {}).get("value")

        try:
            config = run.config()
            from profiler.model_source import model_label

            workload, model, device = config.workload, model_label(config.model), config.device
        except Exception:  # noqa: BLE001 - a damaged config still gets a row
            workload = model = device = "?"
        return (run.run_id, meta.get("name", run.run_id), meta.get("created", ""),
                meta.get("status", "unknown"), workload, model,
                summary.get("device", device), summary.get("steps_completed"),
                fig("tokens_per_s"), fig("loss_train_final"), fig("loss_val_final"),
                fig("peak_rss_bytes"), json.dumps(meta.get("tags", [])))

    def update_index(self, run: StoredRun) -> None:
        try:
            with self._db() as db:
                db.execute(self._upsert_sql(), self._row(run))
        except sqlite3.OperationalError as exc:  # disk full, read-only: the folders stay the truth
            raise StoreError(f"cannot update {self.index_path} ({exc}); free disk space or set "
                             "EFFISCOPE_HOME to a writable folder with room") from None
        except sqlite3.DatabaseError:
            self.rebuild_index()  # a damaged index is rebuilt from the folders (this run included)

    def reconcile(self) -> list[str]:
        """Mark runs still "running" whose front end is gone as crashed; returns their ids.

        A front end killed with SIGKILL cannot close its run; the next look at the history does.
        """
        if not self.index_path.exists():
            ids = self.run_ids()
        else:
            try:
                with self._db() as db:
                    ids = [r[0] for r in db.execute("SELECT id FROM runs WHERE status = 'running'")]
            except sqlite3.DatabaseError:
                ids = self.run_ids()
        orphaned = []
        for run_id in ids:
            run = StoredRun(run_id, self.runs_dir / run_id)
            meta = run.meta()
            if meta.get("status") != "running" or _alive(meta.get("front")):
                continue
            messages = list(run.messages(warnings=[]))
            samples = [m for m in messages if m.get("type") == "sample"]
            summary = run.summary() or {}
            summary.update({"status": "crashed", "end": "the front end ended without closing the run",
                            "samples_received": len(samples)})
            if samples:
                summary.setdefault("last_step", samples[-1].get("step"))
            try:
                run.write_summary(summary)
                self.set_status(run, "crashed")
            except (OSError, StoreError):
                continue  # a read-only store is listed as it is
            orphaned.append(run_id)
        return orphaned

    def rebuild_index(self) -> int:
        """Drop and rebuild index.sqlite from the run folders; returns the number of runs."""
        try:
            self.index_path.unlink()
        except FileNotFoundError:
            pass
        with self._db() as db:
            return db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]

    def list_runs(self) -> list[dict]:
        """Rows of the index, newest first (orphaned runs marked crashed first)."""
        if not self.runs_dir.exists():
            return []
        self.reconcile()
        try:
            with self._db() as db:
                rows = db.execute(f"SELECT {', '.join(_INDEX_COLUMNS)} FROM runs "
                                  "ORDER BY created DESC, id DESC").fetchall()
        except sqlite3.DatabaseError:
            self.rebuild_index()  # a damaged index is rebuilt from the folders
            with self._db() as db:
                rows = db.execute(f"SELECT {', '.join(_INDEX_COLUMNS)} FROM runs "
                                  "ORDER BY created DESC, id DESC").fetchall()
        out = []
        for row in rows:
            item = dict(zip(_INDEX_COLUMNS, row, strict=True))
            try:
                item["tags"] = json.loads(item["tags"] or "[]")
            except ValueError:
                item["tags"] = []
            out.append(item)
        return out
