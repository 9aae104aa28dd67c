"""What every tracker export reads off a stored run, one way for all of them: the tag of a
metric (its catalogue group / its key), its description with the unit, each message's wall
time, the config as flat parameters and the summary figures.

Wall time: the front end stamps each message it receives (`received`, seconds since the epoch,
profiler.store.recorder), so a sample's wall time is when it arrived. A run recorded before
the stamps has none: its clock is then the stream's last write less the last sample's time,
plus each sample's own time (good to about a second, as the app's time-of-day axis).
"""

from __future__ import annotations

import calendar
import json
import math
import time
from collections.abc import Iterator
from typing import Any

from profiler.figures.metrics import DIMENSIONLESS, metric
from profiler.store import StoredRun


class TrackerError(ValueError):
    """An export cannot be made; the text names what is wrong and how to fix it."""


SUMMARY_GROUP = "summary"
"""Summary figures (one value per run) are tagged summary/KEY, apart from the per-step curves."""


def number(value: Any) -> float | None:
    """A finite number as float; None for anything else (a missing reading, a bool, text)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def plain(text: str) -> str:
    """Text any tracker can store: a lone surrogate (valid in JSON, not in UTF-8) becomes ?."""
    return text.encode("utf-8", "replace").decode("utf-8")


def tag(key: str) -> str:
    """A metric's tag: its catalogue group and its key (`speed/tokens_per_s`)."""
    return f"{metric(key).group}/{key}"


def summary_tag(key: str) -> str:
    return f"{SUMMARY_GROUP}/{key}"


def unit_of(key: str) -> str:
    unit = metric(key).unit
    return "dimensionless" if unit in (DIMENSIONLESS, "") else unit


def description(key: str) -> str:
    """The metric in words with its unit first: what a tracker shows beside the curve."""
    entry = metric(key)
    text = f"{entry.label}, in {unit_of(key)}."
    return f"{text} {entry.description}" if entry.description else text


def created_epoch(stored: StoredRun) -> float:
    """When the run folder was made (meta.json's `created`), 0.0 when unknown."""
    created = str(stored.meta().get("created") or "")
    try:
        return float(calendar.timegm(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return 0.0


class Clock:
    """Wall time (epoch seconds) of each message in stream order; see the module's text."""

    def __init__(self, stored: StoredRun | None = None, start: float = 0.0):
        self._stored = stored
        self._offset: float | None = None
        self.last = start
        """The latest wall time seen (a message without a time of its own gets it)."""

    def wall(self, message: dict) -> float:
        stamp = number(message.get("received"))
        if stamp is None and message.get("type") == "sample":
            offset = self._legacy_offset()
            since = number(message.get("time"))
            if offset is not None and since is not None:
                stamp = offset + since
        if stamp is not None:
            self.last = stamp
        return self.last

    def _legacy_offset(self) -> float | None:
        """The stream's last write less its last sample's time (read once, when first needed)."""
        if self._offset is None and self._stored is not None:
            last = None
            for message in self._stored.messages([]):
                if message.get("type") == "sample" and number(message.get("time")) is not None:
                    last = float(message["time"])
            try:
                mtime = self._stored.stream_path.stat().st_mtime
            except OSError:
                mtime = None
            self._offset = mtime - last if last is not None and mtime is not None else math.nan
        return None if self._offset is None or math.isnan(self._offset) else self._offset


def readings(message: dict) -> Iterator[tuple[str, float]]:
    """(key, value) of each reading of a sample that holds a number (a missing reading, null
    on the wire, is no point: trackers have no gaps)."""
    metrics = message.get("metrics")
    if not isinstance(metrics, dict):
        return
    for key, value in metrics.items():
        value = number(value)
        if value is not None:
            yield plain(str(key)), value


def sample_step(message: dict) -> int | None:
    step = message.get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def is_technique_change(message: dict) -> bool:
    """A mid-run change (applied or refused) of a technique: a text event at its step."""
    return (message.get("type") == "event" and message.get("kind") in ("toggle", "refused")
            and sample_step(message) is not None)


def flat_params(config: dict, prefix: str = "") -> dict[str, str | bool | float]:
    """The run config as flat parameters (`train.batch_size`): numbers, booleans and text as
    they are, a list as JSON text; an empty table leaves nothing."""
    out: dict[str, str | bool | float] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_params(value, f"{name}."))
        elif isinstance(value, bool) or isinstance(value, str):
            out[name] = value
        elif number(value) is not None:
            out[name] = value
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(value, ensure_ascii=False, default=str)
    return out


def summary_figures(summary: dict) -> dict[str, float]:
    """The summary's figures that hold a number, by key (n/a ones are left out)."""
    figures = summary.get("figures") if isinstance(summary, dict) else None
    out = {}
    for key, figure in (figures or {}).items():
        value = number(figure.get("value")) if isinstance(figure, dict) else None
        if value is not None:
            out[str(key)] = value
    return out


def last_step(summary: dict, seen: int | None) -> int:
    """The step the summary figures are placed at: the last sample's step, else the summary's."""
    if seen is not None:
        return seen
    for key in ("last_step", "steps_completed"):
        value = summary.get(key) if isinstance(summary, dict) else None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0


FINISHED = ("completed", "stopped")
"""Statuses of a run that ended as asked; any other (failed, crashed, killed, diverged) did not."""
