"""A tune's journal, so that an interrupted tune resumes (`effiscope tune --resume RUN_ID`) with
nothing measured measured again.

The tune run's folder holds tune_settings.json (the base config and the settings: what a
resumed tune searches, whatever the command line says) and trials.jsonl: one line per finished
measurement, appended the moment its job ends (Ctrl-C, SIGTERM or a crash loses at most the
jobs in flight). A resumed tune replays the search: the search is deterministic given its
measurements, so every job it plans again finds its measurements here and runs nothing; the
first job not in the journal is where the measuring goes on. Lines are data, checked on
reading (a damaged line is skipped and said); a candidate the space no longer has is ignored.
Torch-free.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
from pathlib import Path
from typing import Any

from profiler import files
from profiler.tune.search import Measurement
from profiler.tune.space import Candidate, Space

JOURNAL = "trials.jsonl"
SETTINGS = "tune_settings.json"
LIMIT = 64 * 2**20
"""Bytes a journal or settings file may have (a tune of thousands of trials is a few MiB)."""
MAX_LINE = 4 * 2**20
_NUMBERS = ("value", "ci_low", "ci_high", "peak_bytes", "cost_s", "fixed_cost_s")


class JournalError(ValueError):
    """A tune run that cannot be resumed; the text says what to do instead."""


def candidate_key(candidate: Candidate) -> str:
    return json.dumps(candidate.as_dict(), sort_keys=True)


def measurement_dict(m: Measurement) -> dict:
    return {"value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high,
            "peak_bytes": m.peak_bytes, "cost_s": m.cost_s, "fixed_cost_s": m.fixed_cost_s,
            "error": m.error, "run_id": m.run_id, "samples": list(m.samples), "extra": m.extra}


def _number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                             and math.isfinite(value))


def measurement_from(data: Any) -> Measurement | None:
    """A Measurement from a journal line's data; None when it is not one."""
    if not isinstance(data, dict) or not all(_number(data.get(k)) for k in _NUMBERS):
        return None
    samples = data.get("samples")
    if not isinstance(samples, list) or not all(_number(s) and s is not None for s in samples):
        return None
    error, run_id, extra = data.get("error"), data.get("run_id"), data.get("extra")
    if not (error is None or isinstance(error, str)) or not (
            run_id is None or isinstance(run_id, str)) or not isinstance(extra, dict):
        return None
    return Measurement(value=data.get("value"), ci_low=data.get("ci_low"),
                       ci_high=data.get("ci_high"), peak_bytes=data.get("peak_bytes"),
                       cost_s=float(data.get("cost_s") or 0.0),
                       fixed_cost_s=float(data.get("fixed_cost_s") or 0.0), error=error,
                       run_id=run_id, samples=[float(s) for s in samples], extra=extra)


class Journal:
    """The measurements of one tune run, keyed (part, candidate, rung, steps): part "search"
    (rung = the halving's rung) or "final" (rung = the round of the final re-measure)."""

    def __init__(self, folder: Path, space: Space) -> None:
        self.path = Path(folder) / JOURNAL
        self.by_key = {candidate_key(c): c for c in space.candidates()}
        self.known: dict[tuple[str, Candidate, int, int], Measurement] = {}
        self.skipped = 0
        """Lines that were damaged or named a candidate outside the space."""
        self.reused = 0
        """Measurements handed back instead of measured again."""
        self._lock = threading.Lock()
        self._writer = None

    def load(self) -> int:
        """Reads the journal (none yet: nothing known); the number of measurements known."""
        if not self.path.exists():
            return 0
        try:
            fh = files.open_regular(self.path, inside=self.path.parent)
        except (OSError, files.FileRefused) as exc:
            raise JournalError(f"{self.path} cannot be read ({exc}); start a new tune instead "
                               "of resuming this one") from None
        with fh:
            for _, line in files.bounded_lines(fh, MAX_LINE):
                entry = self._entry(line)
                if entry is None:
                    self.skipped += 1
                    continue
                key, measurement = entry
                self.known[key] = measurement
        return len(self.known)

    def _entry(self, line: bytes | None) -> tuple[tuple, Measurement] | None:
        if not line or not line.strip():
            return None
        try:
            data = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(data, dict):
            return None
        part, rung, steps = data.get("part"), data.get("rung"), data.get("steps")
        candidate = self.by_key.get(data.get("candidate")) if isinstance(
            data.get("candidate"), str) else None
        measurement = measurement_from(data.get("measurement"))
        if part not in ("search", "final") or candidate is None or measurement is None \
                or not isinstance(rung, int) or not isinstance(steps, int):
            return None
        return (part, candidate, rung, steps), measurement

    def take(self, part: str, candidate: Candidate, rung: int, steps: int) -> Measurement | None:
        """The stored measurement of this trial, if it was measured before."""
        found = self.known.get((part, candidate, rung, steps))
        if found is not None:
            with self._lock:
                self.reused += 1
            return dataclasses.replace(found, extra=dict(found.extra, resumed=True))
        return None

    def add(self, part: str, candidate: Candidate, rung: int, steps: int,
            m: Measurement) -> None:
        """Appends a finished measurement (a stopped one is not finished: never stored)."""
        if m.extra.get("stopped"):
            return
        from profiler.store.runfolder import StreamWriter

        line = {"part": part, "candidate": candidate_key(candidate), "rung": rung,
                "steps": steps, "measurement": measurement_dict(m)}
        with self._lock:
            if self._writer is None:  # (it ends a line a crash cut short first)
                self._writer = StreamWriter(self.path)
            self._writer.append(json.loads(json.dumps(line, default=str)))
            self.known[(part, candidate, rung, steps)] = m

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None


# --- what a resumed tune searches -------------------------------------------------------------
def save_settings(folder: Path, base: dict, settings: Any) -> None:
    data = {"base": base, "settings": dataclasses.asdict(settings)}
    files.write_text(Path(folder) / SETTINGS, json.dumps(data, indent=2, default=str))


def load_settings(folder: Path, settings_type: type) -> tuple[dict, Any]:
    """(the base config as a dict, the Settings) a tune run was started with; JournalError with
    what to do when the folder is not a tune run's or the file is damaged."""
    path = Path(folder) / SETTINGS
    if not path.exists():
        raise JournalError(f"{folder.name} is not a tune run that can be resumed (it has no "
                           f"{SETTINGS}); `effiscope runs --tag tune` lists tune runs")
    try:
        data = json.loads(files.read_text(path, LIMIT, inside=folder))
    except (OSError, ValueError, files.FileRefused) as exc:
        raise JournalError(f"{path} cannot be read ({exc}); start a new tune") from None
    raw = data.get("settings") if isinstance(data, dict) else None
    base = data.get("base") if isinstance(data, dict) else None
    names = {f.name for f in dataclasses.fields(settings_type)}
    if not isinstance(raw, dict) or not isinstance(base, dict) or set(raw) - names:
        raise JournalError(f"{path} is not a tune's settings file; start a new tune")
    for name, value in raw.items():
        if not _setting_ok(name, value):
            raise JournalError(f"{path}: {name} = {value!r} is not a setting a tune takes; "
                               "start a new tune")
    return base, settings_type(**raw)


def _setting_ok(name: str, value: Any) -> bool:
    if name in ("min_steps", "eta", "max_steps", "final_rounds"):
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1
    if name in ("budget_s", "memory_limit"):
        return (value is None and name == "memory_limit") or (
            _number(value) and value is not None and value > 0)
    if name in ("objective", "workers"):
        return isinstance(value, str)
    if name == "segments":
        return isinstance(value, bool)
    if name == "dims":
        return value is None or isinstance(value, dict) and all(
            isinstance(k, str) and (v is None or isinstance(v, list)
                                    and all(isinstance(x, str) for x in v))
            for k, v in value.items())
    return False


__all__ = ["JOURNAL", "SETTINGS", "Journal", "JournalError", "load_settings", "save_settings"]
