"""Peak dense FLOP/s per accelerator and dtype, for MFU; plain data, importable without torch.

Figures are the vendors' dense (no 2:4 sparsity) tensor-core numbers in TFLOP/s; "fp32" is the
plain (non-tensor) FP32 rate, "tf32" the tensor-core rate that fp32 matmuls reach when TF32 is
allowed. Where a datasheet prints only the sparse figure, the dense one is half of it (the
datasheets' own footnote). GeForce cards use the FP32-accumulate rows, the ones PyTorch training
runs at. A dtype a device lacks in hardware (bf16 / tf32 before Ampere) is left out: no number is
better than a misleading one.

Memory sizes sit beside the rates (DevicePeak.memory): the datasheet's label and about the total
a process sees on that part (a little under the label: ECC and the driver's reserve), which is
what "will it fit" (profiler.figures.memory_fit) judges a GPU the user does not have against.
These totals are typical figures, good to about 1 % (nvidia-smi's "Total" and torch's
total_memory differ by about that much), not read from each datasheet; a peak within the margin
band of one reads "may fit". For the device a run is on, the driver's own total is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Dtype spellings accepted from configs, torch (str(torch.bfloat16)) and users.
_DTYPE_ALIASES = {
    "fp32": "fp32", "float32": "fp32", "float": "fp32", "torch.float32": "fp32",
    "tf32": "tf32",
    "bf16": "bf16", "bfloat16": "bf16", "torch.bfloat16": "bf16",
    "fp16": "fp16", "float16": "fp16", "half": "fp16", "torch.float16": "fp16",
    "fp8": "fp8", "float8": "fp8", "float8_e4m3fn": "fp8", "float8_e5m2": "fp8",
    "torch.float8_e4m3fn": "fp8", "torch.float8_e5m2": "fp8",
    "int8": "int8", "torch.int8": "int8",
}
DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8")
NO_MFU_DTYPES = ("fp8", "int8")  # scaled / integer matmuls: 6N FLOPs against their peak misleads

# Names that say "this is a CPU": the worker reports "cpu" or platform.processor() / machine().
_CPU_TOKENS = frozenset({"cpu", "x86_64", "amd64", "aarch64", "arm64", "i386", "i686", "xeon",
                         "epyc", "ryzen", "threadripper", "intel64"})


@dataclass(frozen=True)
class DevicePeak:
    """One device family: the tokens that pick it out of a reported name, and its peaks."""

    label: str
    tokens: tuple[str, ...]  # all must appear as words in the lower-cased name
    tflops: dict[str, float]
    exclude: tuple[str, ...] = field(default=())  # none may appear (e.g. "ti" for RTX 3090)
    memory: tuple[tuple[str, float], ...] = field(default=())
    """Its memory sizes: (the datasheet's label, the GiB the driver reports as total, which is
    what torch.cuda.mem_get_info and nvidia-smi show), the usual one first."""


def _hopper(label: str, tokens: tuple[str, ...], sparse_tf32: float, sparse_bf16: float,
            sparse_fp8: float, fp32: float, memory: tuple[tuple[str, float], ...] = ()
            ) -> DevicePeak:
    """Hopper datasheets print sparse figures only; dense is half."""
    return DevicePeak(label, tokens, {"fp32": fp32, "tf32": sparse_tf32 / 2,
                                      "bf16": sparse_bf16 / 2, "fp16": sparse_bf16 / 2,
                                      "fp8": sparse_fp8 / 2, "int8": sparse_fp8 / 2},
                      memory=memory)


# Order matters: the first rule whose tokens all match wins, so specific rules come first.
PEAKS: tuple[DevicePeak, ...] = (
    # NVIDIA H200 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/h200): SXM and NVL.
    _hopper("H200 NVL", ("h200", "nvl"), 835, 1671, 3341, 60, memory=(("141 GB", 140.4),)),
    _hopper("H200 SXM", ("h200",), 989, 1979, 3958, 67, memory=(("141 GB", 140.4),)),
    # NVIDIA GH200 Grace Hopper Superchip datasheet: the GPU has H100 SXM's tensor rates.
    _hopper("GH200", ("gh200",), 989, 1979, 3958, 67, memory=(("96 GB", 95.6), ("144 GB", 140.4))),
    # NVIDIA H100 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/h100): SXM, PCIe, NVL.
    # torch names the SXM part e.g. "NVIDIA H100 80GB HBM3", so a bare "H100" means SXM.
    _hopper("H100 NVL", ("h100", "nvl"), 835, 1671, 3341, 60, memory=(("94 GB", 93.6),)),
    _hopper("H100 PCIe", ("h100", "pcie"), 756, 1513, 3026, 51, memory=(("80 GB", 79.6),)),
    _hopper("H100 SXM", ("h100",), 989, 1979, 3958, 67, memory=(("80 GB", 79.6),)),
    # NVIDIA A100 Tensor Core GPU datasheet: 40GB and 80GB, SXM4 and PCIe, share these rates.
    DevicePeak("A100", ("a100",),
               {"fp32": 19.5, "tf32": 156, "bf16": 312, "fp16": 312, "int8": 624},
               memory=(("80 GB", 79.3), ("40 GB", 39.4))),
    # NVIDIA A30 and A40 datasheets.
    DevicePeak("A30", ("a30",), {"fp32": 10.3, "tf32": 82, "bf16": 165, "fp16": 165, "int8": 330},
               memory=(("24 GB", 23.5),)),
    DevicePeak("A40", ("a40",),
               {"fp32": 37.4, "tf32": 74.8, "bf16": 149.7, "fp16": 149.7, "int8": 299.3},
               memory=(("48 GB", 44.4),)),
    # NVIDIA A10 datasheet. "A10G" (AWS) is a different part with no public datasheet: unknown.
    DevicePeak("A10", ("a10",),
               {"fp32": 31.2, "tf32": 62.5, "bf16": 125, "fp16": 125, "int8": 250},
               memory=(("24 GB", 22.1),)),
    # NVIDIA L40S and L40 datasheets.
    DevicePeak("L40S", ("l40s",), {"fp32": 91.6, "tf32": 183, "bf16": 362.05, "fp16": 362.05,
                                   "fp8": 733, "int8": 733},
               memory=(("48 GB", 44.4),)),
    DevicePeak("L40", ("l40",), {"fp32": 90.5, "tf32": 90.5, "bf16": 181.05, "fp16": 181.05,
                                 "fp8": 362, "int8": 362},
               memory=(("48 GB", 44.4),)),
    # NVIDIA L4 datasheet (sparse 120 / 242 / 485 printed; dense is half).
    DevicePeak("L4", ("l4",), {"fp32": 30.3, "tf32": 60, "bf16": 121, "fp16": 121,
                               "fp8": 242.5, "int8": 242.5},
               memory=(("24 GB", 22.0),)),
    # NVIDIA T4 datasheet (Turing: no bf16, no tf32; fp16 is "mixed precision FP16/FP32").
    DevicePeak("T4", ("t4",), {"fp32": 8.1, "fp16": 65, "int8": 130},
               memory=(("16 GB", 14.6),)),
    # NVIDIA V100 datasheet (Volta: no bf16, no tf32): SXM2, PCIe, V100S PCIe.
    DevicePeak("V100S PCIe", ("v100s",), {"fp32": 16.4, "fp16": 130},
               memory=(("32 GB", 31.7),)),
    DevicePeak("V100 PCIe", ("v100", "pcie"), {"fp32": 14, "fp16": 112},
               memory=(("32 GB", 31.7), ("16 GB", 15.8))),
    DevicePeak("V100 SXM2", ("v100",), {"fp32": 15.7, "fp16": 125},
               memory=(("32 GB", 31.7), ("16 GB", 15.8))),
    # NVIDIA Ada GPU architecture whitepaper, appendix table (GeForce RTX 4090), FP32 accumulate.
    DevicePeak("RTX 4090", ("rtx", "4090"), {"fp32": 82.6, "tf32": 82.6, "bf16": 165.2,
                                             "fp16": 165.2, "fp8": 330.3, "int8": 660.6},
               exclude=("laptop", "mobile", "d"),
               memory=(("24 GB", 23.6),)),
    # NVIDIA Ampere GA102 GPU architecture whitepaper, appendix table (GeForce RTX 3090),
    # FP32 accumulate.
    DevicePeak("RTX 3090", ("rtx", "3090"), {"fp32": 35.6, "tf32": 35.6, "bf16": 71,
                                             "fp16": 71, "int8": 284}, exclude=("ti",),
               memory=(("24 GB", 23.7),)),
    # AMD Instinct MI300X / MI325X data sheets (matrix rates, dense).
    DevicePeak("MI325X", ("mi325x",), {"fp32": 163.4, "tf32": 653.7, "bf16": 1307.4,
                                       "fp16": 1307.4, "fp8": 2614.9, "int8": 2614.9},
               memory=(("256 GB", 255.98),)),
    DevicePeak("MI300X", ("mi300x",), {"fp32": 163.4, "tf32": 653.7, "bf16": 1307.4,
                                       "fp16": 1307.4, "fp8": 2614.9, "int8": 2614.9},
               memory=(("192 GB", 191.98),)),
)


def memory_gib(peak: DevicePeak, device_name: str = "") -> tuple[str, float] | None:
    """The device's memory (label, GiB): the size the name says ("A100-SXM4-40GB": 40 GB), else
    its usual one; None when the table has no size for it."""
    words = _words(device_name)
    for label, gib in peak.memory:
        number = label.split()[0]
        if f"{number}gb" in words or (number in words and "gb" in words):
            return label, gib
    return peak.memory[0] if peak.memory else None


def normalize_dtype(dtype: object) -> str | None:
    """Map "bfloat16", torch.bfloat16, "BF16"... to the table's key; None if not a known dtype."""
    return _DTYPE_ALIASES.get(str(dtype).strip().lower())


def _words(name: str) -> set[str]:
    return set(re.split(r"[^0-9a-z_]+", name.lower())) - {""}


def is_cpu(device_name: str) -> bool:
    """True for the names a CPU run reports ("cpu", "x86_64", "Intel Xeon ...")."""
    return bool(_words(device_name) & _CPU_TOKENS) or device_name.strip().lower().startswith("cpu")


def match_device(device_name: str) -> DevicePeak | None:
    """The first rule whose tokens are all words of the name (case-insensitive), if any."""
    words = _words(device_name)
    for peak in PEAKS:
        if all(t in words for t in peak.tokens) and not any(t in words for t in peak.exclude):
            return peak
    return None


def lookup(device_name: str, dtype: object) -> tuple[float | None, str]:
    """Peak FLOP/s and a short label ("H100 SXM bf16 dense"), or None and why not."""
    key = normalize_dtype(dtype)
    if key is None:
        return None, f"no peak FLOP/s for dtype {dtype!r}; use one of {', '.join(DTYPES)}"
    if not device_name or is_cpu(device_name):
        return None, "no peak FLOP/s known for CPU"
    peak = match_device(device_name)
    if peak is None:
        return None, f"no peak FLOP/s known for {device_name!r}; set override_tflops"
    tflops = peak.tflops.get(key)
    if tflops is None:
        return None, f"{peak.label} has no {key} tensor-core rate in hardware"
    return tflops * 1e12, f"{peak.label} {key} dense"


def peak_flops(device_name: str, dtype: object, override_tflops: float | None = None
               ) -> float | None:
    """Dense peak FLOP/s of the device for the dtype; None when unknown or CPU.

    An override (TFLOP/s) wins over the table, so a user can name any device's peak.
    """
    if override_tflops is not None:
        return _override_flops(override_tflops)
    return lookup(device_name, dtype)[0]


def _override_flops(override_tflops: float) -> float:
    if not override_tflops > 0:
        raise ValueError(f"override_tflops must be a positive TFLOP/s figure, got {override_tflops!r}")
    return float(override_tflops) * 1e12
