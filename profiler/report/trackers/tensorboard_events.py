"""A run as a TensorBoard event file: exported from the store, or mirrored live while it goes.

One event directory per run (DIR/RUN_ID/), one event file in it with a fixed name, so a later
export replaces the live mirror's file instead of doubling every curve. Each sample is one event
at its own step and wall time holding every reading it carried, tagged GROUP/KEY from the metric
catalogue, the label and unit in the tag's description (written with a tag's first reading, as
TensorBoard reads it); a mid-run technique change is a text event at its step; nothing is
down-sampled (TensorBoard's own view keeps 1,000 points per curve unless started with
`--samples_per_plugin scalars=0`).

The config and the summary figures go in once, as the hparams plugin's three summaries in the
run's own file. tensorboardX's `add_hparams` writes them through a second writer into a new
sub-folder per call, which TensorBoard lists as one more run (lanpa/tensorboardX#519,
pytorch/pytorch#32651); writing the summaries here keeps one run per run.

The records are written by this module (TFRecord framing with tensorboardX's checksum, its
protocol buffers and summary builders), not by tensorboardX's SummaryWriter: its queue and
writer thread would hold events a crash loses, and it opens its files itself, where every file
EffiScope writes goes through profiler.files (a regular file or a new path).
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from profiler import files
from profiler.figures.metrics import metric
from profiler.report.trackers import readings
from profiler.store import StoredRun, StoreError

TECHNIQUES_TAG = "techniques"
"""Text events of mid-run technique changes (TensorBoard shows it as techniques/text_summary)."""
STATUS = {"completed": "STATUS_SUCCESS", "stopped": "STATUS_SUCCESS"}
"""A run's status as a hparams session's; any other is STATUS_FAILURE."""


def tensorboardx() -> Any:
    """tensorboardX, imported with torch kept out when it is not loaded yet: tensorboardX tries
    `import torch` only to accept torch tensors (EffiScope hands it floats), and the app, which
    mirrors and exports runs, never imports torch (docs/architecture.md)."""
    if "tensorboardX" in sys.modules:
        return sys.modules["tensorboardX"]
    blocked = [name for name in ("torch",) if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment] - `import torch` raises ImportError
    try:
        import tensorboardX
        import tensorboardX.summary  # noqa: F401 - the builders used below
    finally:
        for name in blocked:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
    return tensorboardX


def event_path(folder: str | Path, run_id: str) -> Path:
    """The run's event file: its own directory (a TensorBoard run), a fixed name."""
    return Path(folder) / run_id / f"events.out.tfevents.{run_id}.effiscope"


def run_facts(stored: StoredRun, warnings: list[str] | None = None) -> tuple[dict, dict, dict]:
    """(config, summary, meta) of a stored run, as the mirror and the export both read them;
    a damaged config.toml is an empty config and a warning."""
    try:
        config = stored.config_dict()
    except StoreError as exc:
        config = {}
        if warnings is not None:
            warnings.append(str(exc))
    return config, stored.summary() or {}, stored.meta()


class EventWriter:
    """A run's messages, in stream order, as TensorBoard events handed to `write` as framed
    records (bytes); finish() adds the summary figures and the hparams once."""

    def __init__(self, write: Callable[[bytes], Any], clock: readings.Clock):
        tbx = tensorboardx()
        self._summary = tbx.summary
        from tensorboardX.proto import event_pb2
        from tensorboardX.record_writer import masked_crc32c

        self._event_pb2, self._crc = event_pb2, masked_crc32c
        self._write = write
        self.clock = clock
        self.described: set[str] = set()
        self.last_step: int | None = None
        self.first_wall: float | None = None
        self.events = 0

    # --- records --------------------------------------------------------------------------------
    def _record(self, event: Any) -> None:
        data = event.SerializeToString(deterministic=True)
        header = struct.pack("<Q", len(data))
        self._write(header + struct.pack("<I", self._crc(header)) + data
                    + struct.pack("<I", self._crc(data)))
        self.events += 1

    def _event(self, wall: float, step: int, summary: Any) -> None:
        if self.first_wall is None:  # TensorBoard reads the format's version first
            self.first_wall = wall
            self._record(self._event_pb2.Event(wall_time=wall, file_version="brain.Event:2"))
        self._record(self._event_pb2.Event(wall_time=wall, step=step, summary=summary))

    def _value(self, name: str, key: str, value: float) -> Any:
        """One scalar; its label and unit go with the tag's first reading only."""
        if name in self.described:
            return self._summary.scalar(name, value).value[0]
        self.described.add(name)
        return self._summary.scalar(name, value, display_name=metric(key).label,
                                    summary_description=readings.description(key)).value[0]

    # --- messages -------------------------------------------------------------------------------
    def message(self, message: dict) -> None:
        wall = self.clock.wall(message)
        step = readings.sample_step(message)
        if message.get("type") == "sample" and step is not None:
            values = [self._value(readings.tag(key), key, value)
                      for key, value in readings.readings(message)]
            self.last_step = step
            if values:
                self._event(wall, step, self._summary.Summary(value=values))
        elif readings.is_technique_change(message):
            text = readings.plain(str(message.get("message") or ""))
            if message.get("kind") == "refused":
                text = f"refused: {text}"
            self._event(wall, step, self._summary.text(TECHNIQUES_TAG, f"step {step}: {text}"))

    def finish(self, config: dict, summary: dict, meta: dict, run_id: str) -> None:
        """The summary figures (summary/KEY at the last step) and the hparams: the flat config,
        the run's id, name and status, and the figures as the session's metrics."""
        wall, step = self.clock.last, readings.last_step(summary, self.last_step)
        figures = readings.summary_figures(summary)
        if figures:
            values = [self._value(readings.summary_tag(key), key, value)
                      for key, value in figures.items()]
            self._event(wall, step, self._summary.Summary(value=values))
        status = str(summary.get("status") or meta.get("status") or "unknown")
        params = {"effiscope.run_id": run_id, "effiscope.name": str(meta.get("name") or run_id),
                  "effiscope.status": status, **readings.flat_params(config)}
        for summary_proto in self._hparams(params, figures, status, wall):
            self._event(wall, step, summary_proto)

    def _hparams(self, params: dict, figures: dict[str, float], status: str,
                 wall: float) -> list[Any]:
        """The hparams plugin's experiment, session start and session end summaries."""
        from tensorboardX.proto.api_pb2 import (
            DataType,
            Experiment,
            HParamInfo,
            MetricInfo,
            MetricName,
            Status,
        )
        from tensorboardX.proto.plugin_hparams_pb2 import (
            HParamsPluginData,
            SessionEndInfo,
            SessionStartInfo,
        )

        start = SessionStartInfo(start_time_secs=self.first_wall or wall)
        infos = []
        for name, value in params.items():
            if isinstance(value, bool):
                start.hparams[name].bool_value = value
                kind = "DATA_TYPE_BOOL"
            elif isinstance(value, str):
                start.hparams[name].string_value = value
                kind = "DATA_TYPE_STRING"
            else:
                start.hparams[name].number_value = float(value)
                kind = "DATA_TYPE_FLOAT64"
            infos.append(HParamInfo(name=name, type=DataType.Value(kind)))
        metrics = [MetricInfo(name=MetricName(tag=readings.summary_tag(key)),
                              display_name=metric(key).label,
                              description=readings.description(key)) for key in figures]
        experiment = Experiment(hparam_infos=infos, metric_infos=metrics,
                                time_created_secs=self.first_wall or wall)
        end = SessionEndInfo(status=Status.Value(STATUS.get(status, "STATUS_FAILURE")),
                             end_time_secs=wall)
        out = []
        for tag, content in (("_hparams_/experiment", HParamsPluginData(experiment=experiment)),
                             ("_hparams_/session_start_info",
                              HParamsPluginData(session_start_info=start)),
                             ("_hparams_/session_end_info",
                              HParamsPluginData(session_end_info=end))):
            content.version = 0
            metadata = self._summary.SummaryMetadata(
                plugin_data=self._summary.SummaryMetadata.PluginData(
                    plugin_name="hparams", content=content.SerializeToString(deterministic=True)))
            out.append(self._summary.Summary(value=[self._summary.Summary.Value(
                tag=tag, metadata=metadata)]))
        return out


FIX = "choose another --dir"


def export_run(stored: StoredRun, folder: str | Path, warnings: list[str] | None = None,
               fix: str = FIX) -> Path:
    """Write one stored run's event file under folder (replacing an earlier export or the live
    mirror's file of the same run, whole or not at all); returns its path. FileRefused / OSError
    when it cannot be written."""
    path = event_path(folder, stored.run_id)
    files.output_folder(path.parent, fix)
    with files.replacing(path, binary=True, fix=fix) as fh:
        writer = EventWriter(fh.write, readings.Clock(stored, readings.created_epoch(stored)))
        for message in stored.messages(warnings if warnings is not None else []):
            writer.message(message)
        writer.finish(*run_facts(stored, warnings), stored.run_id)
    return path


class TensorBoardMirror:
    """The event file of a run written while it goes (the recorder's mirror, see
    profiler.store.recorder.Mirror): every stored message as it is stored, each event written
    at once; the summary and hparams when the run is finished. A write that fails stops the
    mirror (`problem` says why), never the run: the store holds everything, and
    `effiscope export RUN_ID --to tensorboard` writes the file again from it."""

    def __init__(self, folder: str | Path, run: StoredRun, fix: str = "choose another folder "
                                                                      "for --tensorboard"):
        self.path = event_path(folder, run.run_id)
        self.problem: str | None = None
        files.output_folder(self.path.parent, fix)
        self._fh = files.open_growing(self.path, fix)
        self._writer = EventWriter(self._fh.write,
                                   readings.Clock(start=readings.created_epoch(run)))

    def message(self, message: dict) -> None:
        if self.problem is None:
            try:
                self._writer.message(message)
            except Exception as exc:  # noqa: BLE001 - a mirror never stops the run it mirrors
                self._stop(exc)

    def finish(self, run: StoredRun) -> None:
        if self.problem is None:
            try:
                self._writer.finish(*run_facts(run), run.run_id)
            except Exception as exc:  # noqa: BLE001 - the run is stored whatever happens here
                self._stop(exc)
        if not self._fh.closed:
            self._fh.close()

    def _stop(self, exc: Exception) -> None:
        reason = getattr(exc, "strerror", None) or exc
        self.problem = (f"the TensorBoard file {files.shown(self.path)} could not be written "
                        f"({reason}); the run is stored whole: `effiscope export "
                        "RUN_ID --to tensorboard` writes it again")
        if not self._fh.closed:
            self._fh.close()
