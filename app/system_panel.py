"""The System tab: what the machine does while a run goes (nvitop's view, for the run at hand).

Two parts. "The run" is drawn from the samples the worker sends (its CPU, its resident memory,
other processes' CPU from the contention meter, and on a GPU the card's utilization, memory,
power and temperature): a value and the last minutes as a small curve each. "This machine"
is read by the app itself once a second, for a run on this machine: the use of every CPU core
(psutil) and, per NVIDIA GPU, utilization, memory, power, temperature and clocks (NVML through
the same never-raising query as the worker's sampler). A reading that has no meaning here
says n/a; nothing here raises without a GPU.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import psutil
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QLabel,
    QProgressBar,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from profiler.figures import busy
from profiler.figures.metrics import format_figure, format_value, metric

HISTORY = 600
"""Readings kept per curve (at the worker's sampling of one per step, minutes of a run)."""
RUN_KEYS = ("cpu_percent", "rss_bytes", "other_cpu_cores", "gpu_util_percent",
            "gpu_memory_used_bytes", "gpu_process_memory_bytes", "gpu_power_w",
            "gpu_temperature_c")
MACHINE_PERIOD_MS = 1000


def gpu_readings() -> list[dict]:
    """Every NVIDIA GPU, now: name, utilization %, memory used / total, power W, temperature °C,
    SM and memory clocks MHz (None where NVML does not say); [] without a GPU."""
    from profiler.measure import system

    ok, _why = system.nvml_available()
    if not ok:
        return []
    nvml = system.pynvml
    query = system.nvml_query  # the never-raising NVML query: one way to ask (a query
    # this NVML lacks, or that fails, is None: n/a)
    out = []
    for gpu in system.gpus():
        handle = query(nvml.nvmlDeviceGetHandleByIndex, gpu["index"])
        if handle is None:
            continue
        util = query(nvml.nvmlDeviceGetUtilizationRates, handle)
        memory = query(nvml.nvmlDeviceGetMemoryInfo, handle)
        power = query(nvml.nvmlDeviceGetPowerUsage, handle)
        out.append({
            "name": gpu["name"], "index": gpu["index"],
            "util_percent": getattr(util, "gpu", None),
            "memory_used_bytes": getattr(memory, "used", None),
            "memory_total_bytes": getattr(memory, "total", None),
            "power_w": power / 1000.0 if isinstance(power, (int, float)) else None,
            "temperature_c": query(nvml.nvmlDeviceGetTemperature, handle, 0),
            "sm_clock_mhz": query(nvml.nvmlDeviceGetClockInfo, handle,
                                  getattr(nvml, "NVML_CLOCK_SM", 1)),
            "memory_clock_mhz": query(nvml.nvmlDeviceGetClockInfo, handle,
                                      getattr(nvml, "NVML_CLOCK_MEM", 2)),
        })
    return out


def _mhz(value: object) -> str:
    """A clock as NVML gives it: a whole number of MHz (n/a when it does not say)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,} MHz"
    return "n/a"


def _title(text: str) -> QLabel:
    label = QLabel(text)
    label.setObjectName("sectionTitle")
    return label


class Meter:
    """One reading: its name, its value in words, a bar (where it has a scale) and its recent
    history as a small curve."""

    def __init__(self, grid: QGridLayout, row: int, key: str, label: str, unit: str,
                 scale: float | None = None):
        self.key, self.unit, self.scale = key, unit, scale
        self.name = QLabel(label)
        self.value = QLabel("n/a")
        self.value.setObjectName("meterValue")
        self.value.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(False)
        self.bar.setMaximumHeight(10)
        self.bar.setVisible(scale is not None)
        self.plot = pg.PlotWidget()
        self.plot.setObjectName(f"spark_{key}")
        self.plot.setFixedHeight(42)
        self.plot.hideAxis("bottom")
        self.plot.hideAxis("left")
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.getPlotItem().setMenuEnabled(False)
        self.curve = self.plot.plot(pen=pg.mkPen("#2563eb", width=1.5), connect="finite")
        self.history: deque[float] = deque(maxlen=HISTORY)
        for column, widget in enumerate((self.name, self.value, self.bar, self.plot)):
            grid.addWidget(widget, row, column)

    def set(self, value: float | None, scale: float | None = None, text: str = "") -> None:
        number = float(value) if isinstance(value, (int, float)) and not isinstance(
            value, bool) else math.nan
        self.history.append(number)
        self.value.setText(text or format_value(value, self.unit))
        scale = scale if scale is not None else self.scale
        if scale and math.isfinite(number):
            self.bar.setValue(int(max(0.0, min(1.0, number / scale)) * 1000))
        self.curve.setData(np.arange(len(self.history)), np.fromiter(self.history, float))

    def clear(self) -> None:
        self.history.clear()
        self.value.setText("n/a")
        self.bar.setValue(0)
        self.curve.setData([], [])

    def set_theme(self, background: str) -> None:
        self.plot.setBackground(background)


class SystemPanel(QScrollArea):
    """The System tab. `add_samples` takes the run's messages; a timer reads the machine."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        host = QWidget()
        layout = QVBoxLayout(host)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addWidget(_title("The run (from its worker's samples)"))
        self.run_note = QLabel("No run yet: its worker's CPU, memory and GPU readings appear "
                               "here as it goes.")
        self.run_note.setObjectName("hint")
        self.run_note.setWordWrap(True)
        layout.addWidget(self.run_note)
        run_grid = QGridLayout()
        run_grid.setColumnStretch(3, 1)
        run_grid.setColumnMinimumWidth(1, 90)
        run_grid.setColumnMinimumWidth(2, 80)
        layout.addLayout(run_grid)
        self.meters: dict[str, Meter] = {}
        for row, key in enumerate(RUN_KEYS):
            m = metric(key)
            scale = {"cpu_percent": None, "gpu_util_percent": 100.0}.get(key)
            self.meters[key] = Meter(run_grid, row, key, m.label, m.unit, scale)
            self.meters[key].name.setToolTip(m.description)
        self.cores = psutil.cpu_count() or 1
        self.total_memory = psutil.virtual_memory().total
        layout.addWidget(_title("This machine, now (read by the app each second)"))
        self.machine_note = QLabel("")
        self.machine_note.setObjectName("hint")
        self.machine_note.setWordWrap(True)
        layout.addWidget(self.machine_note)
        self.core_grid = QGridLayout()
        self.core_grid.setHorizontalSpacing(8)
        layout.addLayout(self.core_grid)
        self.core_bars: list[QProgressBar] = []
        for index in range(self.cores):
            bar = QProgressBar()
            bar.setObjectName("coreBar")
            bar.setRange(0, 100)
            bar.setFormat(f"core {index}: %p %")
            bar.setMaximumHeight(16)
            self.core_grid.addWidget(bar, index // 4, index % 4)
            self.core_bars.append(bar)
        self.gpu_labels: list[QLabel] = []
        self.gpu_box = QVBoxLayout()
        layout.addLayout(self.gpu_box)
        layout.addStretch(1)
        self.setWidget(host)
        self.remote = False
        self.gpus: list[dict] = []
        self._timer = QTimer(self)
        self._timer.setInterval(MACHINE_PERIOD_MS)
        self._timer.timeout.connect(self.read_machine)
        psutil.cpu_percent(percpu=True)  # the first call starts psutil's interval
        self.set_theme("light")

    # --- the run's samples ------------------------------------------------------------------------
    def start_run(self, remote: bool = False) -> None:
        self.remote = remote
        for meter in self.meters.values():
            meter.clear()
        self.run_note.setText("Waiting for the worker's first sample…")

    def add_samples(self, batch: list[dict]) -> None:
        last = None
        for message in batch:
            if message.get("type") != "sample":
                continue
            last = message
            values = message.get("metrics") or {}
            for key, meter in self.meters.items():
                value = values.get(key)
                if key == "cpu_percent":
                    meter.set(value, 100.0 * self.cores)
                elif key == "rss_bytes":
                    meter.set(value, float(self.total_memory))
                elif key == "other_cpu_cores":
                    words, unreliable = busy.live_text(value, self.cores)
                    meter.set(value, float(self.cores),
                              f"{format_figure(key, value)} of {self.cores}" if words else "")
                    meter.value.setStyleSheet("color: #b45309; font-weight: 600;" if unreliable else "")
                    meter.value.setToolTip(words)
                elif key in ("gpu_memory_used_bytes", "gpu_process_memory_bytes"):
                    total = next((g.get("memory_total_bytes") for g in self.gpus), None)
                    meter.set(value, float(total) if total else None)
                else:
                    meter.set(value)
        if last is not None:
            self.run_note.setText(f"Step {last.get('step')} ({last.get('phase') or 'run'}); "
                                  "n/a where the run has no such reading (GPU figures on a CPU).")

    def values(self) -> dict[str, str]:
        """The shown value of every reading (tests and screenshots read them)."""
        return {key: meter.value.text() for key, meter in self.meters.items()}

    # --- this machine -------------------------------------------------------------------------------
    def showEvent(self, event) -> None:  # noqa: N802 - Qt override: read only while in view
        super().showEvent(event)
        self.read_machine()
        self._timer.start()

    def hideEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().hideEvent(event)
        self._timer.stop()

    def read_machine(self) -> None:
        """Every core's use since the last reading, and each GPU's figures, now."""
        per_core = psutil.cpu_percent(percpu=True)
        for bar, value in zip(self.core_bars, per_core, strict=False):
            bar.setValue(int(round(value)))
        memory = psutil.virtual_memory()
        note = (f"{len(per_core)} cores, {format_value(memory.used, 'bytes')} of "
                f"{format_value(memory.total, 'bytes')} of RAM in use")
        if self.remote:
            note += " — this is the machine the app runs on, not the remote one of the run"
        self.gpus = gpu_readings()
        while len(self.gpu_labels) < len(self.gpus):
            label = QLabel()
            label.setObjectName("gpuReading")
            label.setWordWrap(True)
            self.gpu_box.addWidget(label)
            self.gpu_labels.append(label)
        for label, gpu in zip(self.gpu_labels, self.gpus, strict=False):
            label.setText(
                f"<b>GPU {gpu['index']}: {gpu['name']}</b> — utilization "
                f"{format_value(gpu['util_percent'], '%')}, memory "
                f"{format_value(gpu['memory_used_bytes'], 'bytes')} of "
                f"{format_value(gpu['memory_total_bytes'], 'bytes')}, power "
                f"{format_value(gpu['power_w'], 'W')}, temperature "
                f"{format_value(gpu['temperature_c'], '°C')}, clocks SM "
                f"{_mhz(gpu['sm_clock_mhz'])} / memory {_mhz(gpu['memory_clock_mhz'])}")
        if not self.gpus:
            from profiler.measure.system import nvml_available

            note += f"; no NVIDIA GPU readings ({nvml_available()[1] or 'none found'})"
        self.machine_note.setText(note + ".")

    def set_theme(self, theme: str) -> None:
        background = "#0f172a" if theme == "dark" else "w"
        for meter in self.meters.values():
            meter.set_theme(background)
