"""Words the window shows: the machine in one line, a mid-run change as a chart label."""

from __future__ import annotations

import re

from profiler.config import RunConfig

MARKER_LABEL_CHARS = 40


def host_line(host: dict) -> str:
    """The machine in one status-bar line, from describe_host()."""
    cores = host.get("cpu_cores_logical") or "?"
    line = f"CPU: {host.get('cpu') or 'unknown'}, {cores} cores"
    gpus = host.get("gpus") or []
    if gpus:
        return line + " — GPU: " + ", ".join(str(g.get("name")) for g in gpus)
    return line + f" — no GPU ({host.get('gpu_note') or 'none found'})"


def marker_label(event: dict) -> str:
    """A toggle event as a short chart label: "Mixed precision on (fp16)", "Optimizer: lr 0.001".

    Parameters left at their defaults are not repeated; the worker's full account of the change
    is the marker's tooltip and the status bar's message."""
    name = event.get("technique")
    params = dict(event.get("params") or {})
    if not name:
        text = str(event.get("message", ""))
    else:
        try:
            from techniques import registry

            info = registry.get(name)
            title, defaults = info.label, info.defaults()
        except Exception:  # noqa: BLE001 - an unknown technique keeps its name
            title, defaults = str(name), {}
        enabled = params.pop("enabled", None)
        if enabled is True:
            params = {k: v for k, v in params.items() if defaults.get(k, object()) != v}
        shown = ", ".join(str(v) if isinstance(v, str) else
                          f"{'lr' if k == 'learning_rate' else k.replace('_', ' ')} {v:g}"
                          if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
                          for k, v in params.items())
        if enabled is False:
            text = f"{title} off"
        elif enabled is True:
            text = f"{title} on" + (f" ({shown})" if shown else "")
        else:
            text = f"{title}: {shown}"
    return text if len(text) <= MARKER_LABEL_CHARS else text[: MARKER_LABEL_CHARS - 1] + "…"


def expected_steps(config: RunConfig) -> int:
    """Steps the progress bar counts: optimizer steps, or timed generations for infer/compress."""
    if config.workload in ("infer", "compress") and hasattr(config, "infer"):
        return config.infer.warmup_runs + config.infer.repeats
    return config.limits.steps


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


SIGNALS = {
    9: ("SIGKILL", "nothing inside the worker can catch it. Check whether the machine ran out of "
                   "memory (the kernel's out-of-memory killer: `dmesg` or `journalctl -k` say "
                   "\u201cOut of memory: Killed process\u201d){memory}, or whether another process "
                   "or user ended it (kill -9, a job scheduler's limit)."),
    15: ("SIGTERM", "another process, a user or a shutdown asked it to end (kill, a job "
                    "scheduler, the session closing)."),
    6: ("SIGABRT", "a library inside the worker aborted: its log says which."),
    11: ("SIGSEGV", "native code inside the worker crashed (a driver, an extension): its log "
                    "says where."),
}


def killed_hint(end: str, last_rss: float | None, total_memory: float | None,
                samples: int) -> str:
    """What a user can check after a worker was killed from outside, from its exit code in
    `end` ("… (exit code -9) …") and its last memory reading."""
    from profiler.figures.metrics import format_value

    found = re.search(r"exit code -(\d+)", end)
    number = int(found[1]) if found else None
    memory = ""
    if last_rss:
        memory = f"; its last reading was {format_value(last_rss, 'bytes')}"
        if total_memory:
            memory += f" of {format_value(total_memory, 'bytes')} of RAM"
    name, advice = SIGNALS.get(number, ("", "check the worker's log (Show log) and whether "
                                            "another process ended it."))
    lead = f"Exit {-number} is {name}: " if name else "The worker ended without finishing: "
    return (lead + advice.format(memory=memory) + f" The {samples} samples received before are "
            "kept with the run. Press Run to start again.")
