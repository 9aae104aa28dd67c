"""Before Run: the predicted memory breakdown and FLOPs of the current choices, and whether it fits.

The built-in GPT's numbers come from profiler.figures.theory (the same prediction every train
summary puts beside its measurement); a Hugging Face, GGUF or past-run model's come from the
memory trace (`effiscope estimate --json` in a child process, app/estimate_trace.py: its real
model and techniques under fake tensors), said as tracing while it runs. The panel only lays them
out. "Fits" compares the prediction with this machine: available RAM on the CPU, the GPU's memory
(NVML) on CUDA.
"""

from __future__ import annotations

import psutil
from PySide6.QtCore import QRectF, Qt, QTimer
from PySide6.QtGui import QColor, QPainter
from PySide6.QtWidgets import QGridLayout, QLabel, QVBoxLayout, QWidget

from app.estimate_trace import TraceJob, needs_trace
from profiler.config import RunConfig
from profiler.figures import memory_fit
from profiler.figures.metrics import format_value

PARTS = (("weights", "Weights", "#2563eb"), ("buffers", "Buffers", "#94a3b8"),
         ("gradients", "Gradients", "#7c3aed"), ("optimizer_states", "Optimizer states", "#db2777"),
         ("activations", "Activations", "#ea580c"), ("temporaries", "Temporaries", "#ca8a04"),
         ("kv_cache", "KV cache", "#059669"))
RUNTIME_NOTE = ("Tensors only: the worker process itself (Python, torch, allocator caches) adds "
                "a few hundred MiB.")


def estimate(config: RunConfig, host: dict) -> dict:
    """Predicted bytes by part, FLOPs per token and per step, and the fit verdict (torch-free)."""
    from profiler.figures import theory

    world = config.launch.nproc_per_node * config.launch.nnodes
    training = config.workload in ("train", "distill") or (
        config.workload == "compress" and getattr(config.compress, "finetune_steps", 0) > 0)
    shape = _shape(config)
    out: dict = {"training": training, "parts": {}, "note": ""}
    if shape is None:
        out["note"] = "No estimate for this model source."
        return out
    seq = config.train.seq_len
    if training and getattr(config.model, "source", "preset") == "preset":
        pred = theory.predict_for_config(config, world)
        out["parts"] = {key: pred[key] for key, _, _ in PARTS if key in pred}
        out["total"] = pred["total"]
        missing = [pred.get(f"{key}_how") for key in ("activations", "optimizer", "weights")]
        out["note"] = " ".join(m for m in missing if m)
        if pred.get("sharded_over"):
            out["note"] = (f"Per process: weights, gradients and optimizer states sharded over "
                           f"{world}. {out['note']}").strip()
    else:
        weights = shape.parameter_count() * 4
        out["parts"] = {"weights": weights}
        out["total"] = weights
        out["note"] = "Inference: fp32 weights (the KV cache and activations are small here)."
        seq = getattr(getattr(config, "infer", None), "prompt_len", seq)
    per_token = theory.flops_per_token(shape, seq, training=training)
    out["flops_per_token"] = per_token
    if training:
        micro = config.techniques.get("grad_accumulation", {}).get("micro_batches", 1) \
            if "grad_accumulation" in config.techniques else 1
        out["flops_per_step"] = per_token * config.train.batch_size * seq * micro * world
    out.update(_fit(config, host, out["total"]))
    return out


def _trace_device(config: RunConfig, host: dict) -> str:
    gpus = host.get("gpus") or []
    on_gpu = config.device.startswith("cuda") or (config.device == "auto" and gpus)
    return "cuda" if on_gpu else "cpu"


def traced_estimate(config: RunConfig, host: dict, result: dict, base: dict) -> dict:
    """The panel's figures from a memory trace: the parts at the peak, the peak as the total,
    where in the step it happens and the margin band beside it (never inside it)."""
    shown = {key for key, _, _ in PARTS}
    parts = {key: value for key, value in result["parts"].items() if key in shown}
    parts["weights"] = parts.get("weights", 0) + result["parts"].get("gathered_weights", 0)
    out = dict(base, parts=parts, total=result["peak"], traced=True)
    band = memory_fit.margin_band(result["peak"], result["target"], result["world_size"])
    out["note"] = (f"Traced (fake tensors): peak during the {result['peak_phase']}; margin band "
                   f"{format_value(band['low'], 'bytes')} to {format_value(band['high'], 'bytes')}"
                   f" beside it (CUDA context, allocator, NCCL). "
                   + " ".join(result.get("notes", [])[:3]))
    out.update(_fit(config, host, result["peak"]))
    return out


def _shape(config: RunConfig):
    try:
        from profiler.models import source as model_source

        return model_source.model_shape(config.model)
    except Exception:  # noqa: BLE001 - a missing checkpoint: no estimate, validate says why
        from profiler.models.presets import GPT_PRESETS

        return GPT_PRESETS.get(config.model.preset)


def _fit(config: RunConfig, host: dict, total: int | None) -> dict:
    if total is None:
        return {"fits": None, "fit_text": "Cannot tell: part of the prediction is n/a (see the "
                                          "note below)."}
    if config.launch.ssh:
        return {"fits": None, "fit_text": f"Cannot tell here: the memory of {config.launch.ssh} "
                                          "is known to its worker only."}
    gpus = host.get("gpus") or []
    on_gpu = config.device.startswith("cuda") or (config.device == "auto" and gpus)
    if on_gpu and gpus:
        index = int(config.device[5:]) if config.device.startswith("cuda:") else 0
        gpu = gpus[min(index, len(gpus) - 1)]
        room = gpu.get("memory_total_bytes")
        where = f"{gpu.get('name', 'GPU')} ({format_value(room, 'bytes')}, NVML)"
    else:
        room = psutil.virtual_memory().available
        where = f"available RAM ({format_value(room, 'bytes')})"
    if not room:
        return {"fits": None, "fit_text": f"Cannot tell: no memory size for {where}."}
    share = total / room
    fits = share < 0.9
    verdict = "Fits" if fits else "Does not fit"
    return {"fits": fits, "share": share,
            "fit_text": f"{verdict}: {format_value(total, 'bytes')} predicted, "
                        f"{format_value(share, 'fraction')} of {where}."}


class BreakdownBar(QWidget):
    """A stacked horizontal bar of the parts."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.parts: list[tuple[float, str]] = []
        self.setMinimumHeight(12)
        self.setMaximumHeight(12)

    def set_parts(self, parts: list[tuple[float, str]]) -> None:
        self.parts = parts
        self.update()

    def paintEvent(self, _event: object) -> None:  # noqa: N802 - Qt override
        total = sum(v for v, _ in self.parts) or 1.0
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        x = 0.0
        width = float(self.width())
        for value, color in self.parts:
            w = width * value / total
            painter.setBrush(QColor(color))
            painter.drawRect(QRectF(x, 0, max(w, 0.0), self.height()))
            x += w
        painter.end()


class EstimatePanel(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        self.bar = BreakdownBar()
        layout.addWidget(self.bar)
        self.grid = QGridLayout()
        self.grid.setHorizontalSpacing(8)
        self.grid.setVerticalSpacing(1)
        layout.addLayout(self.grid)
        self.value_labels: dict[str, QLabel] = {}
        for row, (key, label, color) in enumerate((*PARTS, ("total", "Total", ""))):
            swatch = QLabel("■" if color else "")
            swatch.setStyleSheet(f"color: {color};" if color else "")
            name = QLabel(label)
            value = QLabel("")
            value.setAlignment(Qt.AlignmentFlag.AlignRight)
            if key == "total":
                name.setObjectName("strong")
                value.setObjectName("strong")
            self.grid.addWidget(swatch, row, 0)
            self.grid.addWidget(name, row, 1)
            self.grid.addWidget(value, row, 2)
            self.value_labels[key] = value
        self.flops = QLabel()
        self.flops.setWordWrap(True)
        layout.addWidget(self.flops)
        self.fit = QLabel()
        self.fit.setObjectName("fitLabel")
        self.fit.setWordWrap(True)
        layout.addWidget(self.fit)
        self.note = QLabel()
        self.note.setObjectName("hint")
        self.note.setWordWrap(True)
        layout.addWidget(self.note)
        self.result: dict = {}
        self.traced: dict[str, dict | str] = {}
        """Answers of the trace by config and device (a result, or the sentence why none)."""
        self.job = TraceJob(self)
        self.job.answered.connect(self._answered)
        self.pending: tuple[str, RunConfig, dict] | None = None
        self.debounce = QTimer(self)
        self.debounce.setSingleShot(True)
        self.debounce.setInterval(600)  # the form changes in bursts: trace what it settles on
        self.debounce.timeout.connect(self._start_trace)

    def no_verdict(self, problem: str) -> None:
        """Settings that cannot run get no "Fits": the verdict waits for valid settings."""
        self.result["fits"] = None
        self.fit.setText("No verdict until the settings are valid (see the sentence under Run).")
        self.fit.setProperty("state", "")
        self.fit.style().unpolish(self.fit)
        self.fit.style().polish(self.fit)

    def update_for(self, config: RunConfig, host: dict) -> None:
        try:
            self.result = estimate(config, host)
        except Exception as exc:  # noqa: BLE001 - an estimate must never stop the form
            self.result = {"parts": {}, "note": f"No estimate: {exc}"}
        self.pending = None
        if needs_trace(config):
            self._trace_for(config, host)
        else:
            self.debounce.stop()
            self.job.stop()
        self._show()

    def _trace_for(self, config: RunConfig, host: dict) -> None:
        device = _trace_device(config, host)
        key = f"{device}\n{config.to_toml()}"
        answer = self.traced.get(key)
        if isinstance(answer, dict):
            self.result = traced_estimate(config, host, answer, self.result)
            return
        if isinstance(answer, str):
            self.result = dict(self.result, fits=None, fit_text=f"No memory trace: {answer}")
            return
        self.pending = (key, config, host)
        self.result = dict(self.result, fits=None, parts={}, total=None, fit_text=(
            "Tracing the model under fake tensors (no memory allocated; a 7-8B model takes up "
            "to a minute)..."))
        self.debounce.start()

    def _start_trace(self) -> None:
        if self.pending is not None:
            key, config, host = self.pending
            self.job.start(key, config, _trace_device(config, host))

    def _answered(self, key: str, result: object, why: str) -> None:
        self.traced[key] = result if isinstance(result, dict) else why
        if self.pending is not None and self.pending[0] == key:
            _, config, host = self.pending
            self.pending = None
            self._trace_for(config, host)
            self._show()

    def _show(self) -> None:
        parts = self.result.get("parts", {})
        for key, _label, _color in PARTS:
            self.value_labels[key].setText(format_value(parts.get(key), "bytes")
                                           if key in parts else "–")
        self.value_labels["total"].setText(format_value(self.result.get("total"), "bytes"))
        self.bar.set_parts([(parts[key], color) for key, _, color in PARTS
                            if parts.get(key) is not None])
        per_token = self.result.get("flops_per_token")
        text = ""
        if per_token:
            kind = "training (6N + 12·L·H·Q·T)" if self.result.get("training") else "inference (2N + …)"
            text = f"FLOPs per token: {format_value(per_token, 'FLOP')} ({kind})"
            if self.result.get("flops_per_step"):
                text += f"; per step: {format_value(self.result['flops_per_step'], 'FLOP')}"
        self.flops.setText(text)
        fits = self.result.get("fits")
        self.fit.setText(self.result.get("fit_text", ""))
        self.fit.setProperty("state", "ok" if fits else "bad" if fits is False else "")
        self.fit.style().unpolish(self.fit)
        self.fit.style().polish(self.fit)
        note = self.result.get("note", "")
        self.note.setText(" ".join(t for t in (note, RUNTIME_NOTE if parts else "") if t))
