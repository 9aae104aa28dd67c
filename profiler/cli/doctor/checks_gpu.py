"""The checks of `effiscope doctor` that need a CUDA GPU (and torch.compile, which is CUDA-fast
and CPU-slow). Written against the paths a run takes; unverified until one runs on a GPU (see
README, "Self-check")."""

from __future__ import annotations

import copy
import time
import warnings

import torch
import torch.nn.functional as F

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
    needs_ampere,
    run_config,
    steps,
    time_calls,
    train,
    train_config,
)
from profiler.cli.doctor.checks import check_sdpa_cpu
from profiler.figures.theory import flops_per_token, mfu


def check_nvml(ctx: Context) -> dict:
    """Memory, utilisation, power and the energy counter, read while the GPU multiplies."""
    from profiler.measure.system import SystemSampler, nvml_available

    ok, why = nvml_available()
    if not ok:
        raise CheckFailed(f"NVML does not answer on a CUDA machine: {why}")
    sampler = SystemSampler(period_s=0.1, gpu_uuid=ctx.caps.get("gpu_uuid"))
    before = sampler.read_now()
    sampler.start()
    a = torch.randn(8192, 8192, device=ctx.device, dtype=torch.bfloat16)
    started, products = time.perf_counter(), 0
    try:
        while time.perf_counter() - started < (2.0 if ctx.quick else 4.0):
            for _ in range(10):
                a @ a
            ctx.sync()
            products += 10
        elapsed = time.perf_counter() - started
        time.sleep(0.3)  # let the sampler take a reading after the work
        after = sampler.read_now()
    finally:
        sampler.stop()
    peaks = sampler.peaks()
    energy = (after["gpu_energy_j"] - before["gpu_energy_j"]
              if after["gpu_energy_j"] is not None and before["gpu_energy_j"] is not None else None)
    figures = {"gpu_memory_used_bytes": after["gpu_memory_used_bytes"],
               "gpu_process_memory_bytes": after["gpu_process_memory_bytes"],
               "gpu_util_percent_peak": peaks.get("gpu_util_percent"),
               "gpu_power_w_peak": peaks.get("gpu_power_w"),
               "gpu_temperature_c_peak": peaks.get("gpu_temperature_c"),
               "energy_j": energy, "work_s": elapsed,
               "mean_power_w": energy / elapsed if energy else None,
               "bf16_matmul_tflops": products * 2 * 8192**3 / elapsed / 1e12}
    missing = [k for k in ("gpu_memory_used_bytes", "gpu_util_percent_peak", "gpu_power_w_peak")
               if not figures[k]]
    if not energy or energy <= 0:
        missing.append("energy counter (did not tick)")
    if missing:
        raise CheckFailed(f"NVML gave no reading for: {', '.join(missing)}", figures)
    figures["summary"] = (f"util {figures['gpu_util_percent_peak']:.0f} %, power up to "
                          f"{figures['gpu_power_w_peak']:.0f} W, {energy:.0f} J in {elapsed:.1f} s")
    return figures


def check_tf32(ctx: Context) -> dict:
    """fp32 matmuls with TF32 off and on (the tf32 technique): speed, and error against fp64."""
    needs_ampere(ctx, "TF32")
    from techniques import tf32

    n = 4096 if ctx.quick else 8192
    a = torch.randn(n, n, device=ctx.device)
    b = torch.randn(n, n, device=ctx.device)
    exact = (a.double() @ b.double())
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    results = {}
    try:
        for name, switch in (("fp32", tf32.remove), ("tf32", lambda s: tf32.apply(s, {}))):
            switch(None)
            out = a @ b
            results[name] = {
                "rel_error_vs_fp64": float((out.double() - exact).norm() / exact.norm()),
                "matmul_s": distribution(time_calls(ctx, lambda: a @ b, 10, 3), "s")}
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
    speedup = results["fp32"]["matmul_s"]["median"] / results["tf32"]["matmul_s"]["median"]
    figures = {"size": n, **results, "speedup_x": speedup,
               "summary": f"TF32 {speedup:.1f}x faster, relative error "
                          f"{results['tf32']['rel_error_vs_fp64']:.1e} vs "
                          f"{results['fp32']['rel_error_vs_fp64']:.1e} in fp32"}
    if results["tf32"]["rel_error_vs_fp64"] <= results["fp32"]["rel_error_vs_fp64"]:
        raise CheckFailed("TF32 on gave no less precise result than fp32: TF32 was not used",
                          figures)
    if results["tf32"]["rel_error_vs_fp64"] > 1e-2:
        raise CheckFailed("TF32 error above 1e-2", figures)
    return figures


SDPA_BACKENDS = ("flash", "efficient", "cudnn", "math")


def _excess(value: torch.Tensor, reference: torch.Tensor, tol: float) -> float:
    """The largest |value - reference| / (tol + tol·|reference|): 1 or less is within tolerance
    (bf16 keeps 8 bits of mantissa, so the allowance grows with the magnitude)."""
    return float(((value - reference).abs() / (tol + tol * reference.abs())).max())


def check_sdpa(ctx: Context) -> dict:
    """Each SDPA backend alone (the attention technique's backend = NAME): it runs, agrees with
    math, and refuses fp64 input it has no kernel for — proof that it, and only it, was allowed."""
    if not ctx.cuda:
        return check_sdpa_cpu(ctx)
    gen = torch.Generator(device=ctx.device).manual_seed(0)
    shape = (4, 12, 1024, 64)
    q, k, v = (torch.randn(shape, device=ctx.device, generator=gen, dtype=torch.bfloat16)
               for _ in range(3))
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    q64, k64, v64 = (t[:1, :2, :64].double() for t in (q, k, v))
    results, failures, logits = {}, [], {}
    for name in ("math",) + tuple(b for b in SDPA_BACKENDS if b != "math"):
        config = train_config(ctx, {"attention": {"implementation": "sdpa", "backend": name},
                                    "precision": {"dtype": "bf16"}})
        row: dict = {}
        results[name] = row
        try:
            state = make_state(ctx, config)

            def attend(state=state):
                with state.step_context():
                    return F.scaled_dot_product_attention(q, k, v, is_causal=True)

            row["max_abs_diff_vs_math_fp32"] = float((attend().float() - reference).abs().max())
            row["tolerance_used"] = _excess(attend().float(), reference, 2e-2)
            row["time_s"] = distribution(time_calls(ctx, attend, 5 if ctx.quick else 20, 3), "s")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    with state.step_context():
                        F.scaled_dot_product_attention(q64, k64, v64, is_causal=True)
                    row["refused_fp64"] = False
                except RuntimeError:
                    row["refused_fp64"] = True
            x, _ = make_batches(ctx, config, 1)[0]
            with torch.no_grad(), state.step_context():
                logits[name] = state.forward_model(x)[0].float()
            row["model_logits_max_abs_diff_vs_math"] = float((logits[name] - logits["math"])
                                                             .abs().max())
            row["model_tolerance_used"] = _excess(logits[name], logits["math"], 5e-2)
            del state
        except Exception as exc:  # noqa: BLE001 - one backend's failure is recorded, the rest run
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            failures.append(f"{name}: {row['error']}")
            continue
        if row["tolerance_used"] > 1 or row["model_tolerance_used"] > 1:
            failures.append(f"{name}: disagrees with math (max difference "
                            f"{row['max_abs_diff_vs_math_fp32']:.3g}, logits "
                            f"{row['model_logits_max_abs_diff_vs_math']:.3g})")
        if name != "math" and not row["refused_fp64"]:
            failures.append(f"{name}: ran fp64 input it has no kernel for, so the backend "
                            "restriction did not apply")
    free(ctx)
    figures = {"shape_bhtd": list(shape), "dtype": "bf16", "backends": results}
    if failures:
        raise CheckFailed("; ".join(failures), figures)
    times = ", ".join(f"{n} {results[n]['time_s']['median'] * 1e3:.2f} ms" for n in SDPA_BACKENDS)
    figures["summary"] = f"all 4 backends selected and agree with math; {times}"
    return figures


def check_compile(ctx: Context) -> dict:
    """torch.compile (the compile technique) on train steps: same losses as eager, its own
    compile time, and the steady step time against eager."""
    if not ctx.cuda and not ctx.caps.get("compiler"):
        raise Skip("no C compiler found (torch.compile on a CPU needs cc / gcc / clang)")
    config = train_config(ctx)
    batches = make_batches(ctx, config, 4)
    n = 6 if ctx.quick else 10
    eager = train(make_state(ctx, config), batches, n, warmup=2)
    compiled_config = copy.deepcopy(config)
    compiled_config.techniques = {"compile": {}}
    state = make_state(ctx, compiled_config)
    started = time.perf_counter()
    first = train(state, batches[:1], 1)["losses"]
    compile_s = time.perf_counter() - started
    rest = train(state, batches[1:] + batches[:1], n - 1, warmup=1)
    losses = first + rest["losses"]
    torch._dynamo.reset()
    diff = max_rel_diff(losses, eager["losses"]) if finite(losses) else None
    figures = {"model": config.model.preset, "first_step_s": compile_s,
               "step_time_s": distribution(rest["times"], "s"),
               "eager_step_time_s": distribution(eager["times"], "s"),
               "max_rel_diff_vs_eager": diff}
    if diff is None or diff > 1e-2:
        raise CheckFailed(f"compiled losses differ from eager by {diff}", figures)
    speed = figures["eager_step_time_s"]["median"] / figures["step_time_s"]["median"]
    figures["speedup_x"] = speed
    figures["summary"] = f"compiled in {compile_s:.1f} s, {speed:.2f}x eager, losses within {diff:.1g}"
    return figures


def _gpt2_run(ctx: Context, techniques: dict, batch: int, measured: int, warmup: int) -> dict:
    """GPT-2 small trained for warmup + measured steps; tokens/s, MFU and the energy counter's
    joules over the measured steps only."""
    from profiler.measure.system import SystemSampler

    config = run_config(ctx, "gpt2-small", batch, 1024, techniques)
    state = make_state(ctx, config)
    batches = make_batches(ctx, config, 4)
    sampler = SystemSampler(period_s=0.2, gpu_uuid=ctx.caps.get("gpu_uuid"))
    train(state, batches, warmup)
    start = sampler.read_now()["gpu_energy_j"]
    result = train(state, batches, measured)
    end = sampler.read_now()["gpu_energy_j"]
    del state
    free(ctx)
    seconds = sum(result["times"])
    tokens_per_s = result["tokens"] / seconds
    value, how = mfu(tokens_per_s, flops_per_token(build_gpt_shape(), 1024),
                     torch.cuda.get_device_name(ctx.device), "bf16")
    energy = end - start if start is not None and end is not None else None
    return {"batch": batch, "seq_len": 1024, "warmup_steps": warmup, "measured_steps": measured,
            "step_time_s": distribution(result["times"], "s"), "tokens_per_s": tokens_per_s,
            "mfu": value, "mfu_how": how, "energy_j": energy,
            "energy_per_token_j": energy / result["tokens"] if energy else None,
            "loss_last": result["losses"][-1]}


def build_gpt_shape():
    from profiler.models.presets import GPT_PRESETS

    return GPT_PRESETS["gpt2-small"]


GPT2_FAST = {"precision": {"dtype": "bf16"}, "compile": {}, "attention": {"implementation": "sdpa"},
             "optimizer": {"implementation": "fused"}}


def check_gpt2_throughput(ctx: Context) -> dict:
    figures = _gpt2_run(ctx, GPT2_FAST, 16 if ctx.quick else 32, 10 if ctx.quick else 20, 3)
    torch._dynamo.reset()
    figures["techniques"] = list(GPT2_FAST)
    figures["mfu_aim"] = 0.45
    figures["mfu_aim_met"] = figures["mfu"] is not None and figures["mfu"] >= 0.45
    if not finite([figures["loss_last"]]):
        raise CheckFailed("GPT-2 small's loss is not finite", figures)
    mfu_text = f"MFU {figures['mfu']:.1%}" if figures["mfu"] is not None else "MFU n/a"
    figures["summary"] = (f"{figures['tokens_per_s']:,.0f} tokens/s, {mfu_text} (aim 45 %), "
                          "bf16 + compile + SDPA + fused AdamW")
    return figures


def check_energy_per_token(ctx: Context) -> dict:
    """Joules per trained token of GPT-2 small (bf16 autocast, eager) from the GPU's energy
    counter over the measured steps."""
    n = steps(ctx)
    figures = _gpt2_run(ctx, {"precision": {"dtype": "bf16"}}, 16, n, 3)
    if not figures["energy_per_token_j"]:
        raise CheckFailed("the energy counter gave no reading (or did not tick)", figures)
    figures["summary"] = (f"{figures['energy_per_token_j'] * 1e3:.2f} mJ/token over {n} steps "
                          f"({figures['tokens_per_s']:,.0f} tokens/s)")
    return figures


CHECKS = [
    CheckSpec("nvml", "NVML memory / utilisation / power / energy counter", check_nvml,
              cuda_only=True),
    CheckSpec("tf32", "TF32 matmuls on vs off (speed, error)", check_tf32, cuda_only=True),
    CheckSpec("sdpa", "SDPA backends selected for real and agreeing with math", check_sdpa),
    CheckSpec("compile", "torch.compile on train steps", check_compile,
              cpu_needs_full="torch.compile on a CPU takes 40 s to minutes to compile cold; run with "
                             "--full to include it"),
    CheckSpec("gpt2_throughput", "GPT-2 small bf16 + compile + SDPA: tokens/s and MFU",
              check_gpt2_throughput, cuda_only=True),
    CheckSpec("energy_per_token", "energy per trained token (NVML energy counter)",
              check_energy_per_token, cuda_only=True),
]
