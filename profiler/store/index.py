"""index.sqlite: one row per run, a cache of the run folders that is rebuilt from them.

The folders are the truth and the index is a cache of them: an index that is missing, empty,
damaged, a folder, locked by another process or on a read-only disk never hides a run (the
history is then read from the folders), and a damaged run folder never hides the others.
"""

from __future__ import annotations

import json
import os
import sqlite3
from abc import ABC, abstractmethod
from pathlib import Path

from profiler.store.runfolder import StoredRun
from profiler.store.storage import StoreError, number_or_none, shown, text_or

READ_TIMEOUT_S = 1.0
"""How long a listing waits for another process's lock on the index before reading the folders."""
INDEX_COLUMNS = ("id", "name", "created", "status", "workload", "model", "device", "steps",
                 "tokens_per_s", "loss_train_final", "loss_val_final", "peak_rss_bytes", "tags")


class IndexUnavailable(Exception):
    """index.sqlite cannot be used right now (locked, a folder, unreadable, no room)."""


def _locked(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class RunIndex(ABC):
    """The index half of RunStore (profiler.store.folders): the store's folders (home, runs_dir,
    run_ids) and its warnings are RunStore's; the methods below are what the index needs of
    them, declared here so a store that lacks one cannot be made."""

    home: Path
    runs_dir: Path
    index_path: Path
    stale_path: Path

    @abstractmethod
    def run_ids(self) -> list[str]:
        """Every run folder's id (the folders are the truth the index is checked against)."""

    @abstractmethod
    def reconcile(self) -> list[str]:
        """Mark runs still "running" whose front end is gone as crashed; returns their ids."""

    @abstractmethod
    def _warn(self, text: str) -> None:
        """Keep a warning for whoever shows the store's state."""

    @abstractmethod
    def _check_home(self) -> None:
        """StoreError with the fix when the data folder cannot be used."""

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
        cols = ", ".join(INDEX_COLUMNS)
        marks = ", ".join("?" for _ in INDEX_COLUMNS)
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
            return number_or_none(item.get("value")) if isinstance(item, dict) else None

        workload, model, device = (text_or(meta.get("workload")), text_or(meta.get("model")),
                                   text_or(meta.get("device")))
        if not (workload and model and device):  # a run from before meta held them
            try:
                config = run.config_dict()
            except StoreError as exc:
                run._note(str(exc))
                config = {}
            model_cfg = config.get("model") if isinstance(config.get("model"), dict) else {}
            workload = workload or text_or(config.get("workload"), "?")
            device = device or text_or(config.get("device"), "?")
            model = model or text_or(model_cfg.get("preset") if model_cfg.get(
                "source", "preset") == "preset" else model_cfg.get("path") or
                model_cfg.get("run_id"), "?")
        for problem in run.problems:
            self._warn(f"run folder {run.path}: {problem}; listed with what could be read")
        tags = meta.get("tags")
        tags = [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []
        steps = summary.get("steps_completed")
        return (run.run_id, text_or(meta.get("name"), run.run_id), text_or(meta.get("created")),
                text_or(meta.get("status"), "unknown"), workload, model,
                text_or(summary.get("device"), device),
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

    def indexed_running_ids(self) -> list[str] | None:
        """The ids the index lists as running; None when the index cannot tell (missing, stale,
        locked, damaged): then every folder is looked at."""
        if not self.index_path.is_file() or self.stale_path.exists():
            return None
        try:
            db = self._connect(timeout=READ_TIMEOUT_S)
            try:
                return [r[0] for r in db.execute("SELECT id FROM runs WHERE status = 'running'")]
            finally:
                db.close()
        except (IndexUnavailable, sqlite3.Error):
            return None

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
                rows = db.execute(f"SELECT {', '.join(INDEX_COLUMNS)} FROM runs").fetchall()
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
            item = dict(zip(INDEX_COLUMNS, row, strict=True))
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
                       f"(e.g. {shown(gone[0])}) and {'are' if len(gone) > 1 else 'is'} not "
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
