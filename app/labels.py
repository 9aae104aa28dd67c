"""Words the window shows: the machine in one line, a mid-run change as a chart label."""

from __future__ import annotations

from profiler.config import RunConfig
from profiler.metrics import format_value

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


def figure_text(value: object, unit: str) -> str:
    """A figure as the app shows it: format_value, with percentages below 10 to one decimal
    ("0.6 %", as the report says it, never a rounded "1 %")."""
    if unit == "%" and isinstance(value, (int, float)) and not isinstance(value, bool) \
            and abs(value) < 10:
        return f"{value:.1f} %"
    return format_value(value, unit)
