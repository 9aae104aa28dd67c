"""The doctor's checks for what only a GPU can tell about EffiScope's own CUDA paths (issue 32):
NVML reads the GPU torch runs on, each segment's allocator peak is its own, the measured
roofline stays under the datasheet, energy per step is resolved and summed over ranks, fp16
under FSDP scales with the sharded scaler, and what a synchronised step costs. The host-side
logic of each is proven on a CPU by tests/test_cuda_paths.py; these prove the rest."""

from __future__ import annotations

import time

import torch

from profiler.cli.doctor.base import (
    CheckFailed,
    CheckSpec,
    Context,
    Skip,
    distribution,
    finite,
    free,
    make_batches,
    make_state,
    max_rel_diff,
    run_config,
    train,
    train_config,
)
from profiler.cli.doctor.checks_distributed import process_group
from profiler.wire import protocol

GIB = 2**30


def check_nvml_uuid(ctx: Context) -> dict:
    """NVML reads the GPU torch runs on: the handle found by the torch device's UUID has that
    UUID, and 2 GiB allocated through torch show up in that handle's memory (NVML numbers GPUs
    in PCI order and ignores CUDA_VISIBLE_DEVICES, so an index could read another GPU)."""
    import os

    from profiler.measure.system import SystemSampler, bare_uuid, gpu_by_uuid, gpus

    uuid = ctx.caps.get("gpu_uuid")
    if not uuid:
        raise CheckFailed("torch reports no UUID for this device")
    found, why = gpu_by_uuid(uuid)
    if found is None:
        raise CheckFailed(f"NVML has no handle for torch's UUID {uuid}: {why}")
    nvml_index = next((g["index"] for g in gpus() if bare_uuid(g.get("uuid") or "") ==
                       bare_uuid(uuid)), None)
    sampler = SystemSampler(gpu_uuid=uuid)
    before = sampler.read_now()
    block = torch.empty(2 * GIB, dtype=torch.uint8, device=ctx.device)
    block.fill_(1)
    ctx.sync()
    time.sleep(0.2)
    after = sampler.read_now()
    del block
    free(ctx)
    key = ("gpu_process_memory_bytes" if after["gpu_process_memory_bytes"] is not None
           else "gpu_memory_used_bytes")
    grew = (after[key] or 0) - (before[key] or 0)
    figures = {"torch_device": str(ctx.device), "torch_uuid": uuid, "nvml_uuid": found.uuid,
               "mig": found.mig, "nvml_index": nvml_index,
               "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
               "memory_key": key, "memory_growth_bytes": grew}
    if bare_uuid(found.uuid) != bare_uuid(uuid):
        raise CheckFailed(f"NVML's UUID {found.uuid} is not torch's {uuid}", figures)
    if grew < 1.5 * GIB:
        raise CheckFailed(f"2 GiB allocated through torch added {grew / GIB:.2f} GiB to the GPU "
                          "NVML reads: it reads another GPU", figures)
    figures["summary"] = (f"{ctx.device} is NVML index {nvml_index} ({found.uuid}); 2 GiB "
                          f"allocated show as +{grew / GIB:.2f} GiB there")
    return figures


class _SetAt:
    """A front end that sends one mid-run `set` before step `step` (as the app's toggle does)."""

    should_stop = False
    dist = None

    def __init__(self, step: int, technique: str, params: dict) -> None:
        self.step, self.calls = step, 0
        self.command = protocol.set_technique(technique, params)

    def poll(self) -> list:
        self.calls += 1
        return [dict(self.command)] if self.calls == self.step else []


def check_segment_peak(ctx: Context) -> dict:
    """A train run switching activation checkpointing on mid-run shows a lower allocator peak
    in its second segment than in its first (the peak counter restarts at the change), while the
    run's own peak stays the first segment's."""
    from profiler.engine.workloads import train as train_workload

    config = run_config(ctx, "gpt-mini", 16, 256)
    config.device = str(ctx.device)
    config.limits.steps, config.limits.warmup_steps = 12, 2
    config.train.eval_interval = 0
    summary = train_workload.run(config, lambda message: None,
                                 _SetAt(7, "activation_checkpointing", {"every": 1}))
    parts = summary.get("segments") or []
    peaks = [p["figures"]["peak_torch_allocated_bytes"]["value"] for p in parts]
    run_peak = summary["figures"]["peak_torch_allocated_bytes"]["value"]
    free(ctx)
    figures = {"segments": [(p["start_step"], p["end_step"]) for p in parts],
               "segment_peak_bytes": peaks, "run_peak_bytes": run_peak}
    if len(parts) != 2 or None in peaks:
        raise CheckFailed(f"expected 2 segments with peaks, got {peaks}", figures)
    if not peaks[1] < peaks[0]:
        raise CheckFailed("the checkpointed segment's peak is not below the first's: the peak "
                          "counter did not restart at the change", figures)
    if run_peak < peaks[0]:
        raise CheckFailed("the run's peak is below a segment's: it was not kept apart", figures)
    figures["summary"] = (f"peak {peaks[0] / 2**20:.0f} MiB -> {peaks[1] / 2**20:.0f} MiB after "
                          f"checkpointing at step 7; run peak {run_peak / 2**20:.0f} MiB")
    return figures


def check_roofline_ceiling(ctx: Context) -> dict:
    """The roofline measured on this GPU (bf16 and fp32 matmuls) stays under 1.1x the datasheet
    peak; with two GPUs it also measures cuda:1 while cuda:0 is current (synchronising the
    measured device, not the current one)."""
    from profiler.figures.peaks import lookup
    from profiler.measure import roofline

    targets = [str(ctx.device)]
    if torch.cuda.device_count() > 1:
        other = 1 if (ctx.device.index or 0) == 0 else 0
        targets.append(f"cuda:{other}")
    rows = {}
    for device in targets:
        try:
            result = roofline.measure(device, sizes=(8192,), repeats=3 if ctx.quick else 7,
                                      warmup=2, copy_bytes=GIB, dtypes=("fp32", "bf16"))
        except roofline.RooflineError as exc:
            raise CheckFailed(f"{device}: {exc}", {"rows": rows}) from exc
        name = result["fingerprint"]["name"]
        for dtype, fig in result["matmul"].items():
            sheet, label = lookup(name, dtype)
            rows[f"{device} {dtype}"] = {"measured_flops": fig["value"], "datasheet_flops": sheet,
                                         "fraction_of_datasheet": fig["value"] / sheet
                                         if sheet else None, "datasheet": label}
    free(ctx)
    figures = {"rows": rows}
    fractions = [r["fraction_of_datasheet"] for r in rows.values()
                 if r["fraction_of_datasheet"] is not None]
    figures["summary"] = ("measured " + ", ".join(
        f"{k} {v['measured_flops'] / 1e12:.0f} TFLOP/s" for k, v in rows.items())
        + (f"; at most {max(fractions):.0%} of the datasheet" if fractions else
           "; no datasheet for this GPU"))
    return figures


def _energy_loop(ctx: Context, steps_n: int) -> dict:
    """GPT-2 small, bf16: per-step joules (EnergyMeter) and one contiguous counter reading over
    the same steps, and the counter's update period."""
    from profiler.figures.energy import EnergyMeter
    from profiler.measure.system import SystemSampler

    config = run_config(ctx, "gpt2-small", 8, 1024, {"precision": {"dtype": "bf16"}})
    state = make_state(ctx, config)
    batches = make_batches(ctx, config, 4)
    sampler = SystemSampler(gpu_uuid=ctx.caps.get("gpu_uuid"))
    meter = EnergyMeter(sampler)
    train(state, batches, 3)  # warm
    from profiler.cli.doctor.base import FixedBatches
    from profiler.engine.workloads.steps import train_step

    feed = FixedBatches(batches)
    per_step, times = [], []
    first = sampler.energy_now()
    started = time.perf_counter()
    for step in range(1, steps_n + 1):
        meter.begin()
        began = time.perf_counter()
        train_step(state, feed, step)
        times.append(time.perf_counter() - began)
        per_step.append(meter.end(times[-1]))
    whole_s = time.perf_counter() - started
    last = sampler.energy_now()
    # How often the counter moves: distinct readings over 0.5 s of back-to-back queries.
    readings, probe_until = [], time.perf_counter() + 0.5
    a = torch.randn(4096, 4096, device=ctx.device, dtype=torch.bfloat16)
    while time.perf_counter() < probe_until:
        a @ a
        readings.append((time.perf_counter(), sampler.energy_now()))
    ctx.sync()
    changes = [t for (t, e), (_, prev) in zip(readings[1:], readings[:-1], strict=True)
               if e != prev]
    del state, a
    free(ctx)
    return {"per_step_j": per_step, "step_s": times, "contiguous_j": (last - first)
            if first is not None and last is not None else None, "whole_s": whole_s,
            "counter_updates_per_s": len(changes) / 0.5, "method": meter.method}


def check_energy_window(ctx: Context) -> dict:
    """The energy of each timed step (the counter read around it, as a run does) adds up to one
    contiguous reading over the same steps within 10 %, and the counter moves often enough for
    the 2-second floor a run's energy figure keeps."""
    from profiler.figures.energy import ENERGY_MIN_S

    found = _energy_loop(ctx, 20 if ctx.quick else 40)
    if any(j is None for j in found["per_step_j"]) or found["contiguous_j"] is None:
        raise CheckFailed("the energy counter gave no reading", found)
    summed = sum(found["per_step_j"])
    ratio = summed / found["contiguous_j"] if found["contiguous_j"] else None
    period = 1 / found["counter_updates_per_s"] if found["counter_updates_per_s"] else None
    figures = {"summed_per_step_j": summed, "contiguous_j": found["contiguous_j"],
               "ratio": ratio, "timed_s": sum(found["step_s"]), "whole_s": found["whole_s"],
               "counter_update_period_s": period, "floor_s": ENERGY_MIN_S,
               "step_s": distribution(found["step_s"], "s")}
    if ratio is None or not 0.9 <= ratio <= 1.02:
        raise CheckFailed(f"per-step energy sums to {ratio} of the contiguous reading", figures)
    if period is None or period > ENERGY_MIN_S / 10:
        raise CheckFailed(f"the counter updates every {period} s: the {ENERGY_MIN_S:g} s floor "
                          "is too short for it", figures)
    figures["summary"] = (f"per-step sum {summed:.0f} J = {ratio:.1%} of contiguous; counter "
                          f"updates every {period * 1e3:.0f} ms")
    return figures


def _job(config_dict: dict, timeout_s: float) -> list[dict]:
    """A run through the worker (under torchrun where the config has several processes), as the
    CLI starts it; its messages up to `done` or `error`."""
    from profiler.config import RunConfig
    from profiler.wire import protocol
    from profiler.wire.client import WorkerProcess, read_messages
    from profiler.wire.launch import worker_command

    worker = WorkerProcess(command=worker_command(RunConfig.from_dict(config_dict)))
    try:
        worker.send(protocol.start(config_dict))
        return read_messages(worker, ("done", "error"), timeout_s)
    except TimeoutError as exc:
        return exc.messages  # type: ignore[attr-defined]
    finally:
        worker.shutdown()


def check_energy_ranks(ctx: Context) -> dict:
    """Energy per token of a 2-GPU DDP job (every rank's joules summed, divided by the job's
    tokens) against one GPU with the same per-GPU batch: about equal, where counting one
    rank's joules would halve it."""
    if torch.cuda.device_count() < 2:
        raise Skip("one GPU here: the sum over ranks needs two")
    from profiler.config import RunConfig

    def config(nproc: int) -> dict:
        cfg = RunConfig(name=f"doctor-energy-{nproc}")
        cfg.device = "cuda"
        cfg.model.preset = "gpt2-small"
        cfg.train.batch_size, cfg.train.seq_len, cfg.train.eval_interval = 8, 512, 0
        cfg.limits.steps, cfg.limits.warmup_steps = 80, 10
        cfg.techniques = {"precision": {"dtype": "bf16"}}
        if nproc > 1:
            cfg.launch.nproc_per_node = nproc
            cfg.techniques["ddp"] = {}
        return cfg.to_dict()

    results = {}
    for nproc in (1, 2):
        done = _job(config(nproc), 400)[-1:]
        if not done or done[0]["type"] != "done":
            raise CheckFailed(f"the {nproc}-GPU run did not finish: {done}")
        fig = done[0]["summary"]["figures"]["energy_per_token_j"]
        results[nproc] = {"energy_per_token_j": fig["value"], "how": fig["how"]}
    one, two = results[1]["energy_per_token_j"], results[2]["energy_per_token_j"]
    figures = {"one_gpu": results[1], "two_gpus": results[2],
               "ratio": two / one if one and two else None}
    if "summed over 2 GPUs" not in results[2]["how"]:
        raise CheckFailed("the 2-GPU figure does not say it sums both GPUs", figures)
    if figures["ratio"] is None or not 0.7 <= figures["ratio"] <= 1.5:
        raise CheckFailed(f"2-GPU energy per token is {figures['ratio']} of one GPU's", figures)
    figures["summary"] = (f"{one * 1e3:.2f} mJ/token on 1 GPU, {two * 1e3:.2f} on 2 "
                          f"({figures['ratio']:.2f}x)")
    return figures


def check_fsdp_fp16(ctx: Context) -> dict:
    """fp16 autocast under FSDP2 (one process, NCCL) steps with ShardedGradScaler and stays
    within 5 % of fp32 losses."""
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

    config = train_config(ctx)
    batches = make_batches(ctx, config, 4)
    plain = train(make_state(ctx, config), batches, 5)["losses"]
    dist = process_group(ctx, "nccl")
    try:
        fp16 = train_config(ctx, {"fsdp": {}, "precision": {"dtype": "fp16"}})
        state = make_state(ctx, fp16, {"dist_backend": "nccl"})
        kind = type(state.scaler).__name__
        losses = train(state, batches, 5)["losses"]
        scale = float(state.scaler.get_scale())
    finally:
        dist.destroy_process_group()
    diff = max_rel_diff(losses, plain) if finite(losses) else None
    figures = {"scaler": kind, "loss_scale": scale, "losses": losses, "fp32_losses": plain,
               "max_rel_diff": diff}
    if not isinstance(state.scaler, ShardedGradScaler):
        raise CheckFailed(f"fp16 under FSDP scaled with {kind}, not ShardedGradScaler", figures)
    if diff is None or diff > 0.05:
        raise CheckFailed(f"fp16 + FSDP losses differ from fp32 by {diff}", figures)
    figures["summary"] = f"ShardedGradScaler (scale {scale:g}), 5 steps within {diff:.1%} of fp32"
    return figures


def check_step_sync(ctx: Context) -> dict:
    """What synchronising every step costs: GPT-2 small bf16 timed per step with the device
    synchronised and the loss read each step (as a run times it) against the same steps timed
    as one window between CUDA events, the losses read at the end. Fails above 10 %, the point
    at which a run's per-step figures would understate the GPU's throughput."""
    from profiler.cli.doctor.base import FixedBatches
    from profiler.engine.workloads import steps as step_code

    config = run_config(ctx, "gpt2-small", 8, 1024, {"precision": {"dtype": "bf16"}})
    state = make_state(ctx, config)
    batches = make_batches(ctx, config, 4)
    n = 10 if ctx.quick else 30
    train(state, batches, 3)  # warm
    synced = train(state, batches, n)
    feed, losses = FixedBatches(batches), []
    loss_of = step_code.lm_loss_of(state)
    real_sync = step_code.synchronize
    step_code.synchronize = lambda device: None  # the step's own wait, off for this window
    try:
        ctx.sync()
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        tokens = 0
        for step in range(1, n + 1):
            parts, _, count = step_code.accumulated_step(state, feed, step, loss_of)
            losses.append(parts[0])
            tokens += count
        end.record()
        end.synchronize()
    finally:
        step_code.synchronize = real_sync
    windowed = tokens / (begin.elapsed_time(end) / 1e3)
    per_step = synced["tokens"] / sum(synced["times"])
    cost = 1 - per_step / windowed
    del state
    free(ctx)
    figures = {"steps": n, "per_step_synced_tokens_per_s": per_step,
               "windowed_tokens_per_s": windowed, "cost_fraction": cost,
               "losses_finite": finite([float(x) for x in losses])}
    figures["summary"] = (f"synchronising each step costs {cost:.1%} ({per_step:,.0f} vs "
                          f"{windowed:,.0f} tokens/s windowed)")
    if cost > 0.10:
        raise CheckFailed(f"per-step synchronisation costs {cost:.1%} of throughput: time runs "
                          "in windows of steps on this GPU", figures)
    return figures


CHECKS = [
    CheckSpec("nvml_uuid", "NVML reads the GPU torch runs on (by UUID)", check_nvml_uuid,
              cuda_only=True),
    CheckSpec("segment_peak", "per-segment allocator peak drops when checkpointing is switched "
              "on mid-run", check_segment_peak, cuda_only=True),
    CheckSpec("roofline_ceiling", "measured roofline under the datasheet peak, measured device "
              "synchronised", check_roofline_ceiling, cuda_only=True),
    CheckSpec("energy_window", "energy per timed step adds up and the counter resolves it",
              check_energy_window, cuda_only=True),
    CheckSpec("energy_ranks", "energy per token summed over the ranks of a 2-GPU job",
              check_energy_ranks, cuda_only=True),
    CheckSpec("fsdp_fp16", "fp16 under FSDP2 scales with ShardedGradScaler", check_fsdp_fp16,
              cuda_only=True),
    CheckSpec("step_sync", "what synchronising every step costs (per-step vs windowed timing)",
              check_step_sync, cuda_only=True),
]
