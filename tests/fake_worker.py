"""A stand-in worker for GUI tests: speaks protocol v1 without torch, answers in milliseconds.

    python tests/fake_worker.py [STEP_DELAY_S]

It reads `start`, sends hello / started, then one sample per step until the config's step limit
or a `stop`; a `set` is answered with a toggle event at the current step (or refused for
techniques named "refuse_me"), a `profile` with a small profile message, and the end with `done`
and a summary whose figures are functions of the config (so tests can predict them).
"""

from __future__ import annotations

import gzip
import json
import os
import queue
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: find profiler/

from profiler.wire import protocol  # noqa: E402 - after the path; light, no torch


def send(message: dict) -> None:
    """Every line goes through the protocol module, as the real worker's do: validated."""
    sys.stdout.write(protocol.encode(message, "worker"))
    sys.stdout.flush()


STDIN_CLOSED = threading.Event()


def read_commands(commands: queue.Queue) -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            commands.put(protocol.decode(line, "front"))
        except protocol.ProtocolError as exc:
            send({"type": "event", "kind": "warning", "message": f"bad command: {exc}"})
    STDIN_CLOSED.set()
    commands.put({"type": "stop"})  # stdin closed: the front end went away


def figures_for(config: dict, steps: int) -> dict:
    batch = config["train"]["batch_size"]
    seq = config["train"]["seq_len"]
    tokens_per_s = 1000.0 * batch * seq / 64
    loss = 3.0 - 0.001 * config["limits"]["steps"]
    return {
        "tokens_per_s": {"value": tokens_per_s, "unit": "tokens/s", "how": "fake"},
        "step_time_p50_s": {"value": batch * seq / tokens_per_s, "unit": "s", "how": "fake"},
        "peak_rss_bytes": {"value": 100 * 2**20 + batch * 2**20, "unit": "bytes", "how": "fake"},
        "loss_train_final": {"value": loss + 0.1, "unit": "nats/token", "how": "fake"},
        "loss_val_final": {"value": loss, "unit": "nats/token", "how": "fake"},
    }


def main() -> None:
    delay = float(sys.argv[1]) if len(sys.argv) > 1 else 0.02
    commands: queue.Queue = queue.Queue()
    threading.Thread(target=read_commands, args=(commands,), daemon=True).start()
    start = commands.get()
    config = start["config"]
    send({"type": "hello", "protocol": protocol.PROTOCOL_VERSION, "versions": {"torch": "fake"},
          "device": {"name": "fake", "default": "cpu"}, "environment": {"cpu_cores_logical": 2}})
    # Other processes' CPU as the contention meter would read it (None: no reading yet).
    other = os.environ.get("EFFISCOPE_FAKE_OTHER_CORES")
    steps = config["limits"]["steps"]
    # Inference reads no tokens per step (as the real worker's infer and compress runs): its
    # samples are timed generations with latency figures.
    inference = config["workload"] in ("infer", "compress")
    run = {"workload": config["workload"], "device": "cpu",
           "model": {"preset": config["model"]["preset"], "parameters": 1234},
           "steps": steps, "warmup_steps": 1, "data": "fake text"}
    if not inference:
        run["tokens_per_step"] = 256
    send({"type": "started", "run": run})
    speed = figures_for(config, steps)["tokens_per_s"]["value"]  # samples agree with the summary
    began = time.perf_counter()
    teacher_steps = (config.get("distill") or {}).get("teacher_train_steps", 0) \
        if config["workload"] == "distill" else 0
    for step in range(1, teacher_steps + 1):  # a distill run trains its teacher first
        time.sleep(delay)
        send({"type": "sample", "step": step, "time": time.perf_counter() - began,
              "phase": "teacher", "metrics": {"teacher_loss_train": 5.0 / step ** 0.2}})
    status, done_steps = "completed", 0
    profile_left, profile_first = 0, 0
    profile_memory = False  # the CUDA memory snapshot asked for: n/a here, as on a CPU
    step_time = delay
    for step in range(1, steps + 1):
        stop = False
        while not commands.empty():
            command = commands.get()
            if command["type"] == "stop":
                stop = True
            elif command["type"] == "set":
                name = command["technique"]
                kind = "refused" if name == "refuse_me" else "toggle"
                event = {"type": "event", "kind": kind, "step": step, "technique": name,
                         "params": command["params"],
                         "message": f"{name} changed: {command['params']}"}
                if name == "grad_accumulation" and kind == "toggle":  # as train.py announces it
                    params = command["params"]
                    micro = int(params.get("micro_batches", 4)) if params.get("enabled", True) \
                        else 1
                    event["tokens_per_step"] = 256 * micro
                    step_time = delay * micro  # the fake's steps read `micro` times the tokens
                send(event)
            elif command["type"] == "profile":
                profile_left, profile_first = command["steps"], step
                profile_memory = bool(command.get("memory"))
        if stop:
            status = "stopped"
            break
        time.sleep(delay)
        done_steps = step
        metrics = ({"decode_tokens_per_s": speed + step, "ttft_s": 0.004 + step * 1e-5,
                    "decode_latency_s": 0.0015, "rss_bytes": 2**20 * (100 + step % 7)}
                   if inference else
                   {"loss_train": 3.0 / step ** 0.1, "tokens_per_s": speed + step,
                    "step_time_s": step_time, "rss_bytes": 2**20 * (100 + step % 7),
                    "cpu_percent": 95.0, "torch_allocated_bytes": None,
                    "gpu_util_percent": None, "gpu_power_w": None})
        metrics["other_cpu_cores"] = float(other) if other and step > 1 else None
        send({"type": "sample", "step": step, "time": time.perf_counter() - began,
              "phase": "warmup" if step == 1 else "measure", "metrics": metrics})
        if profile_left:
            profile_left -= 1
            if profile_left == 0:
                trace = Path(config.get("output_dir") or ".") / "traces" / "fake.pt.trace.json.gz"
                trace.parent.mkdir(parents=True, exist_ok=True)
                with gzip.open(trace, "wt") as fh:
                    json.dump({"traceEvents": [{"name": "aten::mm", "ph": "X", "ts": 0,
                                                "dur": 5}]}, fh)
                send({"type": "profile", "step": profile_first, "steps": step - profile_first + 1,
                      "operators": [
                          {"name": "aten::mm", "calls": 12, "self_cpu_s": 0.004,
                           "total_cpu_s": 0.005, "self_cuda_s": None, "total_cuda_s": None,
                           "percent_of_steps": 40.0},
                          {"name": "aten::add", "calls": 30, "self_cpu_s": 0.001,
                           "total_cpu_s": 0.001, "self_cuda_s": None, "total_cuda_s": None,
                           "percent_of_steps": 10.0}],
                      "step_time_s": [delay] * (step - profile_first + 1),
                      "breakdown": {"forward_s": 0.004, "backward_s": 0.008,
                                    "optimizer_s": 0.002, "other_s": 0.006},
                      "trace_path": str(trace),
                      **({"memory_snapshot_note": "memory snapshot: n/a on CPU: it is the CUDA "
                          "caching allocator's history (run on a GPU for it)"}
                         if profile_memory else {})})
    summary = {"workload": config["workload"], "steps_completed": done_steps,
               "figures": figures_for(config, done_steps)}
    send({"type": "done", "status": status, "summary": summary})
    STDIN_CLOSED.wait()  # like the real worker: exit when the front end closes stdin


if __name__ == "__main__":
    main()
