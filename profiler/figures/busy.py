"""When a run's speed figures count as measured on a busy machine: the one rule (other
processes' CPU against this machine's cores), and how a run's machine state is said. The meter
that measures it is profiler.measure.contention; the verdict rule reads this."""

from __future__ import annotations

CONTENDED_CORES = 0.25  # other processes above this many cores ...
CONTENDED_FRACTION = 0.10  # ... or above this share of the machine: speed figures unreliable


def contended(other_cores: float, cores: int | None) -> bool:
    """Whether other processes using this many cores of `cores` (None: not known, then only
    the absolute rule applies) make speed figures unreliable."""
    return other_cores > CONTENDED_CORES or (
        cores is not None and other_cores > CONTENDED_FRACTION * cores)


def live_text(other_cores: object, cores: object) -> tuple[str, bool]:
    """A sample's live reading for a status line, and whether it is contended: ("other
    processes: 1.20 cores of 2 now: speeds unreliable", True); ("", False) without a reading."""
    from profiler.figures.metrics import format_figure

    if not isinstance(other_cores, (int, float)) or isinstance(other_cores, bool):
        return "", False
    size = cores if isinstance(cores, int) and not isinstance(cores, bool) and cores > 0 else None
    text = (f"other processes: {format_figure('other_cpu_cores', other_cores)}"
            + (f" of {size}" if size else "") + " now")
    busy = contended(float(other_cores), size)
    return (text + ": speeds unreliable" if busy else text), busy


def load_text(summary: dict) -> str:
    """The machine's load over a run as one line for the front ends ("" for a run recorded
    without it): "other processes 0.0500 cores (p90 0.120 cores) of 2, machine CPU 48.0 %, 12
    samples"."""
    from profiler.figures.metrics import format_figure

    mean = summary.get("contention_other_cpu_cores_mean")
    if not isinstance(mean, (int, float)) or isinstance(mean, bool):
        return ""

    def shown(key: str) -> str:
        value = summary.get(key)
        return format_figure(key, None if isinstance(value, bool) else value)

    samples = summary.get("contention_samples", "n/a")
    text = (f"other processes {shown('contention_other_cpu_cores_mean')} (p90 "
            f"{shown('contention_other_cpu_cores_p90')}) of {summary.get('contention_cores', 'n/a')}"
            f", machine CPU {shown('contention_machine_cpu_percent')}, "
            f"{samples} sample{'' if samples == 1 else 's'}")
    if isinstance(summary.get("contention_front_end_cpu_cores_mean"), (int, float)):
        text += f", front end {shown('contention_front_end_cpu_cores_mean')} (not counted)"
    gpu = summary.get("contention_gpu_other_processes")
    if isinstance(gpu, int) and not isinstance(gpu, bool):
        text += f", {gpu} other process{'' if gpu == 1 else 'es'} on the GPU"
    return text


def sentence(summary: dict) -> str:
    """The contention warning of a summary ("" when the run was not contended or predates it)."""
    text = summary.get("contention_sentence")
    return text if summary.get("contended") is True and isinstance(text, str) else ""
