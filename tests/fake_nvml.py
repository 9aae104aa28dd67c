"""A fake NVML (the slice of pynvml that profiler.measure.system calls) for testing the GPU readings on a
machine without a GPU: each device has its own UUID, memory, power and energy counter, and NVML
numbers the devices in its own (PCI) order, which a test sets apart from CUDA's."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace


class NVMLError(Exception):
    """What pynvml raises for an unknown handle or an unsupported query."""


@dataclass
class FakeGpu:
    uuid: str
    """NVML's spelling: "GPU-..." for a whole card, "MIG-..." for a MIG slice."""
    name: str = "NVIDIA H100 80GB HBM3"
    memory_used: int = 0
    memory_total: int = 80 * 2**30
    power_mw: int | None = 300_000
    energy_mj: int | None = 1_000_000
    util: int = 50
    capability: tuple[int, int] = (9, 0)
    processes: list = field(default_factory=list)


class FakeNvml:
    """pynvml's functions over a list of FakeGpu in NVML's index order. Handles are the FakeGpu
    objects; a MIG slice is reachable by UUID only (as in NVML); queries a MIG handle does not
    support raise."""

    def __init__(self, gpus: list[FakeGpu], mig: list[FakeGpu] = ()) -> None:
        self.gpus = list(gpus)
        self.mig = list(mig)
        self.calls: list[tuple[str, str]] = []
        """(function, uuid of the device it read), in order."""

    def _note(self, fn: str, handle: FakeGpu) -> FakeGpu:
        if not isinstance(handle, FakeGpu):
            raise NVMLError("invalid handle")
        self.calls.append((fn, handle.uuid))
        return handle

    def nvmlInit(self) -> None:
        return None

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlSystemGetDriverVersion(self) -> str:
        return "580.00"

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        if not 0 <= index < len(self.gpus):
            raise NVMLError("invalid index")
        return self.gpus[index]

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> FakeGpu:
        for gpu in self.gpus + self.mig:
            if gpu.uuid == uuid:
                return gpu
        raise NVMLError(f"no device {uuid}")

    def nvmlDeviceGetUUID(self, handle: FakeGpu) -> str:
        return self._note("uuid", handle).uuid

    def nvmlDeviceGetName(self, handle: FakeGpu) -> str:
        return self._note("name", handle).name

    def nvmlDeviceGetMemoryInfo(self, handle: FakeGpu):
        gpu = self._note("memory", handle)
        return SimpleNamespace(used=gpu.memory_used, total=gpu.memory_total,
                               free=gpu.memory_total - gpu.memory_used)

    def nvmlDeviceGetUtilizationRates(self, handle: FakeGpu):
        return SimpleNamespace(gpu=self._note("util", handle).util, memory=0)

    def nvmlDeviceGetPowerUsage(self, handle: FakeGpu) -> int:
        gpu = self._note("power", handle)
        if gpu.power_mw is None:
            raise NVMLError("not supported")
        return gpu.power_mw

    def nvmlDeviceGetTemperature(self, handle: FakeGpu, sensor: int) -> int:
        self._note("temperature", handle)
        return 60

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: FakeGpu) -> int:
        gpu = self._note("energy", handle)
        if gpu.energy_mj is None:
            raise NVMLError("not supported")
        return gpu.energy_mj

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeGpu) -> list:
        return list(self._note("processes", handle).processes)

    def nvmlDeviceGetCudaComputeCapability(self, handle: FakeGpu) -> tuple[int, int]:
        return self._note("capability", handle).capability


def install(monkeypatch, fake: FakeNvml) -> FakeNvml:
    """Make profiler.measure.system read `fake` as if a driver had answered."""
    from profiler.measure import system

    monkeypatch.setattr(system, "pynvml", fake)
    monkeypatch.setattr(system, "_nvml_state", {"tried": True, "ok": True, "reason": ""})
    return fake
