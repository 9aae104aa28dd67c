"""`effiscope run`'s progress on the terminal: one status line (step, tokens/s, loss, ETA)
rewritten in place on a terminal, plain lines every few seconds when piped."""

from __future__ import annotations

import sys
import time

from profiler.text import safe


class Progress:
    """One status line on a terminal (step, tokens/s, loss, ETA); plain lines when piped."""

    def __init__(self, total_steps: int, stream=None):
        self.total = total_steps
        self.stream = stream or sys.stderr  # looked up now: sys.stderr may have been replaced
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.last_print = 0.0
        self.last_step = 0
        self.cores: int | None = None  # the worker's machine's, from its hello

    def update(self, message: dict) -> None:
        from profiler.figures.busy import live_text
        from profiler.figures.metrics import format_value

        kind = message["type"]
        if kind == "hello":
            cores = message["environment"].get("cpu_cores_logical")
            self.cores = cores if isinstance(cores, int) else None
        elif kind == "started":
            run = message["run"]
            model = run.get("model") or {}
            verb = {"infer": "generating with", "compress": "compressing",
                    "distill": "distilling into"}.get(run.get("workload"), "training")
            params = model.get("parameters")
            size = f" ({params:,} parameters)" if isinstance(params, int) else ""
            self._line(safe(f"{verb} {model.get('preset', 'a model')}{size} on "
                            f"{run.get('device', '?')}; {run.get('data', '')}"), final=True)
            self.started = time.monotonic()
        elif kind == "sample" and message["step"] > 0:
            self.last_step = message["step"]
            now = time.monotonic()
            if now - self.last_print < (0.1 if self.tty else 5.0) and message["step"] < self.total:
                return
            if self.total <= 0:
                return
            self.last_print = now
            m = message["metrics"]
            elapsed = now - self.started
            rate = message["step"] / elapsed if elapsed > 0 else 0
            eta = (self.total - message["step"]) / rate if rate > 0 else 0
            width = 24
            filled = min(width, int(width * message["step"] / self.total))
            bar = "#" * filled + "-" * (width - filled)
            loss = m.get("loss_train")
            val = m.get("loss_val")
            loss_text = f"loss {loss:.3f}" if loss is not None else "loss n/a"
            rate_tps = next((m[k] for k in ("tokens_per_s", "decode_tokens_per_s",
                                            "compressed_decode_tokens_per_s",
                                            "encode_tokens_per_s", "compressed_encode_tokens_per_s")
                             if m.get(k) is not None), None)
            text = (f"[{bar}] step {message['step']}/{self.total} | "
                    f"{format_value(rate_tps, 'tokens/s')} | {loss_text}")
            if val is not None:
                text += f" | val {val:.3f}"
            text += f" | ETA {int(eta) // 60}:{int(eta) % 60:02d}"
            load, contended = live_text(m.get("other_cpu_cores"), self.cores)
            if contended:  # the speed on this line was measured beside other work
                text += f" | {load}"
            self._line(text)
        elif kind == "event" and message["kind"] in ("warning", "refused", "toggle"):
            self._line(safe(f"{message['kind']}: {message['message']}"), final=True)
        elif kind == "error":
            self._line(safe(f"error ({message['kind']}): {message['message']}") + "\n  hint: "
                       + safe(message["hint"]), final=True)
        elif kind == "profile":
            top = ", ".join(f"{op['name']} ({op['percent_of_steps']:.0f} %)"
                            for op in message["operators"][:3]
                            if op.get("percent_of_steps") is not None)
            last = message["step"] + message["steps"] - 1
            trace = message.get("trace_path") or "not written"
            memory = ""
            if message.get("memory_snapshot_path"):
                memory = (f"; CUDA memory snapshot {message['memory_snapshot_path']} (open it at "
                          "pytorch.org/memory_viz)")
            elif message.get("memory_snapshot_note"):
                memory = f"; {message['memory_snapshot_note']}"
            self._line(safe(f"profile of steps {message['step']}..{last}: trace {trace}; top "
                            f"operators: {top or 'n/a'}{memory}"), final=True)

    def _line(self, text: str, final: bool = False) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
