"""System readings (psutil, NVML) that never raise: no GPU is a normal state, not an error.

Every NVML query goes through `nvml_query`, which turns a failure into None ("n/a"). The sampler
thread polls on a drift-free schedule and keeps the latest snapshot and the peaks; the training
loop reads them without waiting.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

from profiler.measure.contention import ContentionMeter

try:  # nvidia-ml-py; importing it never touches the driver
    import pynvml
except ImportError:  # pragma: no cover - it is a dependency, but stay honest without it
    pynvml = None

_nvml_state: dict[str, Any] = {"tried": False, "ok": False, "reason": ""}
_nvml_lock = threading.Lock()


def nvml_query(fn: Callable, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 - any NVML failure is "n/a"
        return None


def nvml_available() -> tuple[bool, str]:
    """(True, "") when NVML answered; (False, why) otherwise, e.g. "no GPU driver"."""
    with _nvml_lock:
        if not _nvml_state["tried"]:
            _nvml_state["tried"] = True
            if pynvml is None:
                _nvml_state["reason"] = "nvidia-ml-py is not installed"
            else:
                try:
                    pynvml.nvmlInit()
                    _nvml_state["ok"] = True
                except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound is normal here
                    name = type(exc).__name__
                    _nvml_state["reason"] = (
                        "no NVIDIA driver" if "LibraryNotFound" in name or "DriverNotLoaded" in name
                        else f"NVML unavailable ({name})"
                    )
        return _nvml_state["ok"], _nvml_state["reason"]


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def gpus() -> list[dict]:
    """Every NVIDIA GPU NVML sees: index (NVML's: PCI order, not CUDA's), UUID, name, memory,
    driver; [] without a GPU."""
    ok, _ = nvml_available()
    if not ok:
        return []
    count = nvml_query(pynvml.nvmlDeviceGetCount) or 0
    driver = _text(nvml_query(pynvml.nvmlSystemGetDriverVersion))
    out = []
    for index in range(count):
        handle = nvml_query(pynvml.nvmlDeviceGetHandleByIndex, index)
        if handle is None:
            continue
        memory = nvml_query(pynvml.nvmlDeviceGetMemoryInfo, handle)
        out.append({
            "index": index,
            "uuid": _text(nvml_query(pynvml.nvmlDeviceGetUUID, handle)),
            "name": _text(nvml_query(pynvml.nvmlDeviceGetName, handle)),
            "memory_total_bytes": getattr(memory, "total", None),
            "memory_free_bytes": getattr(memory, "free", None),
            "driver": driver,
        })
    return out


# --- which GPU: by UUID, never by index ------------------------------------------------------
# NVML ignores CUDA_VISIBLE_DEVICES and numbers GPUs in PCI bus order, while CUDA numbers the
# visible ones from 0 (fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID). So torch's cuda:0 is
# NVML index 0 only by luck: with CUDA_VISIBLE_DEVICES=3, under torchrun on GPUs 4-7, or on a
# box of mixed cards, an index reads another GPU's memory and power. The device's UUID is the
# one name both agree on; a MIG slice has a "MIG-" UUID of its own.

def bare_uuid(uuid: str) -> str:
    """A UUID without NVML's "GPU-" / "MIG-" prefix, lower-cased (torch prints it bare)."""
    text = str(uuid).strip().lower()
    for prefix in ("gpu-", "mig-"):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


@dataclass(frozen=True)
class GpuHandle:
    """The NVML handle of one torch device, found by UUID; `mig` for a MIG slice."""

    handle: Any
    uuid: str
    """NVML's spelling, with its prefix ("GPU-..." or "MIG-...")."""
    mig: bool


def gpu_by_uuid(uuid: str | None) -> tuple[GpuHandle | None, str]:
    """The NVML handle of the GPU (or MIG slice) with this UUID, or None and why not."""
    if not uuid:
        return None, "no GPU"
    ok, why = nvml_available()
    if not ok:
        return None, why
    bare = bare_uuid(uuid)
    for prefix, mig in (("GPU-", False), ("MIG-", True)):
        handle = nvml_query(pynvml.nvmlDeviceGetHandleByUUID, prefix + bare)
        if handle is not None:
            return GpuHandle(handle, prefix + bare, mig), ""
    return None, f"NVML knows no GPU with UUID {uuid}"


def visible_gpus() -> tuple[list[Any], bool]:
    """The NVML handles of the GPUs a CUDA program started here would see, in CUDA's order, and
    whether that order is certain. CUDA_VISIBLE_DEVICES of UUIDs is exact; integers (or no
    variable) follow NVML's order only with CUDA_DEVICE_ORDER=PCI_BUS_ID: otherwise CUDA counts
    fastest first, every GPU is a candidate for cuda:0, and the list is all of them, uncertain."""
    ok, _ = nvml_available()
    if not ok:
        return [], True
    count = nvml_query(pynvml.nvmlDeviceGetCount) or 0
    every = [h for h in (nvml_query(pynvml.nvmlDeviceGetHandleByIndex, i) for i in range(count))
             if h is not None]
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    entries = ([e.strip() for e in listed.split(",")] if listed is not None
               else [str(i) for i in range(len(every))])
    pci = os.environ.get("CUDA_DEVICE_ORDER", "") == "PCI_BUS_ID"
    handles: list[Any] = []
    for entry in entries:
        if entry.isdigit():
            if not pci and len(every) > 1:
                return every, False
            if int(entry) >= len(every):
                break  # CUDA stops at the first entry that names no GPU
            handles.append(every[int(entry)])
            continue
        found, _ = gpu_by_uuid(entry) if entry else (None, "")
        if found is None:
            break
        handles.append(found.handle)
    return handles, True


def _capability(handle: Any) -> float | None:
    cc = nvml_query(pynvml.nvmlDeviceGetCudaComputeCapability, handle) if handle is not None else None
    return cc[0] + cc[1] / 10 if cc else None


BF16_MIN_CAPABILITY = 8.0
"""bf16 in hardware from Ampere (compute capability 8.0) on. torch.cuda.is_bf16_supported()
also says yes on V100 / T4, where bf16 is emulated and slower than fp32: one rule for the
app's panel and the worker is this number."""


def bf16_native(device_type: str, capability: float | None) -> bool:
    """Whether bf16 autocast is a real option on this device: always on a CPU (slow without
    AVX512-BF16 / AMX, which the worker says), on CUDA from compute capability 8.0."""
    if device_type != "cuda":
        return True
    return (capability or 0.0) >= BF16_MIN_CAPABILITY


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_host() -> dict:
    """The machine, without torch: CPU, cores, memory, GPUs (or why there are none)."""
    ok, reason = nvml_available()
    return {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "cpu": cpu_name(),
        "cpu_cores_logical": psutil.cpu_count(logical=True),
        "cpu_cores_physical": psutil.cpu_count(logical=False),
        "memory_total_bytes": psutil.virtual_memory().total,
        "gpus": gpus(),
        "gpu_note": "" if ok else reason,
    }


def host_capabilities() -> dict:
    """What techniques can expect here, without importing torch (for the app's technique panel).

    The same keys as profiler.measure.capabilities.detect; CUDA facts come from NVML, so they describe
    the driver's view. The worker checks again with torch before a run and refuses what fails.
    """
    import importlib.util
    import shutil

    devices = gpus()
    capability = None
    if devices:
        # cuda:0 of a run started here; where CUDA's order is not known, the weakest
        # candidate, so the panel never offers what the run's GPU may lack.
        handles, exact = visible_gpus()
        found = [c for c in map(_capability, handles[:1] if exact else handles) if c is not None]
        capability = min(found) if found else None
    return {
        "device": "cuda" if devices else "cpu",
        "cuda": bool(devices),
        "cuda_capability": capability,
        "bf16": bf16_native("cuda" if devices else "cpu", capability),
        "compiler": bool(shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")),
        "distributed": True,
        "packages": [p for p in ("torchao", "transformers") if importlib.util.find_spec(p)],
        "fused": ["adamw", "adam", "sgd"],
        "source": "nvml",
    }


MIG_NOTE = ("n/a on a MIG slice: NVML reports power, energy and utilisation for the whole card, "
            "shared with the other slices")

SAMPLER_PERIOD_S = 0.2
"""How often the system sampler reads psutil / NVML by default (seconds)."""


class SystemSampler:
    """A daemon thread reading psutil (and NVML for one GPU) every `period_s`.

    `latest()` returns the newest snapshot; `peaks()` the highest values seen. Readings that have
    no meaning here (GPU figures without a GPU) are None.
    """

    def __init__(self, period_s: float = SAMPLER_PERIOD_S, gpu_uuid: str | None = None,
                 pid: int | None = None, contention: ContentionMeter | None = None):
        """gpu_uuid: the UUID of the run's torch device (profiler.measure.capabilities.device_uuid), never
        an index (see gpu_by_uuid); None reads no GPU."""
        self.period_s = max(0.1, period_s)
        self.contention = contention
        """Sampled at every read (it keeps its own, slower pace): other processes' CPU and GPU
        use over the run."""
        self.process = psutil.Process(pid or os.getpid())
        self.gpu: GpuHandle | None = None
        self.gpu_note = ""
        """Why GPU readings are n/a ("" when they are read)."""
        if gpu_uuid is not None:
            self.gpu, self.gpu_note = gpu_by_uuid(gpu_uuid)
            if self.gpu is not None and self.gpu.mig:
                self.gpu_note = MIG_NOTE
        self._handle = self.gpu.handle if self.gpu is not None else None
        self._whole_card = self.gpu is not None and not self.gpu.mig
        self._latest: dict[str, float | None] = {}
        self._peaks: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="effiscope-sampler", daemon=True)
        self.process.cpu_percent(None)  # prime: the first call always says 0
        self.read_now()

    def start(self) -> SystemSampler:
        self._thread.start()
        return self

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        if self.contention is not None:  # the run's last stretch counts, however short
            self.contention.sample(force=True)

    def _run(self) -> None:
        deadline = time.monotonic()
        while not self._stop.is_set():
            self.read_now()
            deadline += self.period_s
            delay = deadline - time.monotonic()
            if delay < 0:  # fell behind (suspended?): restart the schedule instead of bursting
                deadline = time.monotonic()
                delay = 0
            self._stop.wait(delay)

    def read_now(self) -> dict[str, float | None]:
        snap: dict[str, float | None] = {
            "rss_bytes": nvml_query(lambda: self.process.memory_info().rss),
            "cpu_percent": nvml_query(self.process.cpu_percent, None),
            "gpu_memory_used_bytes": None,
            "gpu_process_memory_bytes": None,
            "gpu_util_percent": None,
            "gpu_power_w": None,
            "gpu_temperature_c": None,
            "gpu_energy_j": None,
        }
        handle = self._handle
        if handle is not None:
            memory = nvml_query(pynvml.nvmlDeviceGetMemoryInfo, handle)
            snap["gpu_memory_used_bytes"] = getattr(memory, "used", None)
            if self._whole_card:  # a MIG slice's figures would be the whole card's
                util = nvml_query(pynvml.nvmlDeviceGetUtilizationRates, handle)
                snap["gpu_util_percent"] = getattr(util, "gpu", None)
                power = nvml_query(pynvml.nvmlDeviceGetPowerUsage, handle)
                snap["gpu_power_w"] = power / 1000.0 if power is not None else None
                snap["gpu_temperature_c"] = nvml_query(pynvml.nvmlDeviceGetTemperature, handle, 0)
                snap["gpu_energy_j"] = self.energy_now()
            procs = nvml_query(pynvml.nvmlDeviceGetComputeRunningProcesses, handle) or []
            mine = [p.usedGpuMemory for p in procs
                    if p.pid == self.process.pid and isinstance(p.usedGpuMemory, int)]
            snap["gpu_process_memory_bytes"] = sum(mine) if mine else None
            if self.contention is not None:
                self.contention.note_gpu((p.pid, p.usedGpuMemory) for p in procs)
        if self.contention is not None:
            self.contention.sample()
            snap["other_cpu_cores"] = self.contention.latest()
        with self._lock:
            self._latest = snap
            for key, value in snap.items():
                if value is not None and value > self._peaks.get(key, float("-inf")):
                    self._peaks[key] = value
        return snap

    def energy_now(self) -> float | None:
        """Joules the GPU has used since its driver loaded (NVML's counter, Volta and newer:
        exact, no sampling gaps), read now; None without a GPU, on a MIG slice (the counter is
        the whole card's) or where the GPU has no counter."""
        if not self._whole_card:
            return None
        energy = nvml_query(pynvml.nvmlDeviceGetTotalEnergyConsumption, self._handle)
        return energy / 1000.0 if energy is not None else None

    def latest(self) -> dict[str, float | None]:
        with self._lock:
            return dict(self._latest)

    def peaks(self) -> dict[str, float]:
        with self._lock:
            return dict(self._peaks)
