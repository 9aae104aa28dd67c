"""The checks of `effiscope doctor` that need a CUDA GPU (and torch.compile, which is CUDA-fast
and CPU-slow). Written against the paths a run takes; unverified until one runs on a GPU (see
README, "Self-check")."""

from __future__ import annotations

import copy
import importlib.util
import time
import warnings

import torch
import torch.nn.functional as F

from profiler.doctor_base import (
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
    steps,
    time_calls,
    train,
    train_config,
)
from profiler.doctor_checks import check_sdpa_cpu, process_group
from profiler.models.gpt import build_gpt
from profiler.theory import flops_per_token, mfu


def _needs_ampere(ctx: Context, what: str) -> None:
    if (ctx.caps.get("cuda_capability") or 0) < 8.0:
        raise Skip(f"{what} needs an Ampere or newer GPU (compute capability 8.0+), this one "
                   f"is {ctx.caps.get('cuda_capability')}")


def check_nvml(ctx: Context) -> dict:
    """Memory, utilisation, power and the energy counter, read while the GPU multiplies."""
    from profiler.system import SystemSampler, nvml_available

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
    _needs_ampere(ctx, "TF32")
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


@torch.no_grad()
def _decode_tokens_per_s(ctx: Context, model, prompt: torch.Tensor, gen: int) -> dict:
    def once() -> None:
        cache = model.new_kv_cache(prompt.size(1) + gen)
        token = model(prompt, kv_cache=cache)[0][:, -1:].argmax(-1)
        for _ in range(gen - 1):
            token = model(token, kv_cache=cache)[0][:, -1:].argmax(-1)

    times = time_calls(ctx, once, 3 if ctx.quick else 5, 2)
    return {"tokens_per_s": gen * prompt.size(0) / distribution(times, "s")["median"],
            "generation_s": distribution(times, "s")}


def check_torchao(ctx: Context) -> dict:
    """int8 and int4 weight-only through the quantize_weight_only technique on GPT-2 small in
    bf16 (int4 in torchao's tinygemm packing, which needs no kernel package beside torchao):
    every block Linear weight becomes a torchao tensor (its class is reported), the logits stay
    within 5 % (int8) / 30 % (int4) relative error of the bf16 model, and decode tokens/s."""
    if importlib.util.find_spec("torchao") is None:
        raise Skip("torchao is not installed (pip install torchao)")
    from techniques import registry, runtime

    base = build_gpt("gpt2-small").to(ctx.device, torch.bfloat16).eval()
    config = run_config(ctx, "gpt2-small", 4, 256)
    config.workload = "infer"  # where the technique runs (eager: no compile stage)
    x, _ = make_batches(ctx, config, 1)[0]
    prompt, gen = x[:1, :64], 32 if ctx.quick else 64
    with torch.no_grad():
        reference = base(x)[0].float()
    results = {"bf16": _decode_tokens_per_s(ctx, base, prompt, gen)}
    failures = []
    for bits, limit in ((8, 0.05), (4, 0.3)):
        name = f"int{bits}"
        try:
            model = copy.deepcopy(base)
            state = runtime.TrainState(config=config, device=ctx.device, caps=ctx.caps, model=model,
                                       warn=ctx.warnings.append)
            params = registry.validate_params("quantize_weight_only", {"bits": bits})
            report = runtime.hooks("quantize_weight_only").apply(state, params)
            from techniques.compress_common import target_linears
            from techniques.quantize_weight_only import is_quantized

            layers = target_linears(model, "all")[0]
            kinds = sorted({type(m.weight).__name__ for _, m in layers if is_quantized(m.weight)})
            plain = [n for n, m in layers if not is_quantized(m.weight)]
            with torch.no_grad():
                logits = model(x)[0].float()
            row = {"report": report, "limit": limit, "weight_types": kinds,
                   "layers_left_plain": plain,
                   "logits_rel_error": float((logits - reference).norm() / reference.norm()),
                   "top1_agreement": float((logits.argmax(-1) == reference.argmax(-1))
                                           .float().mean()),
                   **_decode_tokens_per_s(ctx, model, prompt, gen)}
            row["speedup_vs_bf16_x"] = row["tokens_per_s"] / results["bf16"]["tokens_per_s"]
            results[name] = row
            if plain:
                failures.append(f"{name}: {len(plain)} block Linear layers were not converted "
                                f"({', '.join(plain[:3])})")
            if not row["logits_rel_error"] <= limit:
                failures.append(f"{name}: logits off by {row['logits_rel_error']:.3g} "
                                f"(allowed {limit})")
            del model, state
        except Exception as exc:  # noqa: BLE001 - record, and still try the other width
            results[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
            failures.append(f"{name}: {results[name]['error']}")
        free(ctx)
    figures = {"model": "gpt2-small", "prompt_tokens": 64, "generated_tokens": gen, **results}
    if failures:
        raise CheckFailed("; ".join(failures), figures)
    figures["summary"] = ", ".join(f"{k} {v['tokens_per_s']:.0f} tok/s" for k, v in results.items())
    return figures


def check_sparse_2to4(ctx: Context) -> dict:
    """The prune_semi_structured technique applied through the engine (with a bf16 weight cast,
    as a compress run plans it) to gpt-mini: every block Linear weight ends a torch
    SparseSemiStructuredTensor (none "kept dense"), and the model's logits agree within 1 % with
    the same 2:4-pruned bf16 weights kept dense (accelerate = false); forward time of both."""
    _needs_ampere(ctx, "2:4 sparse tensor cores")
    from torch.sparse import SparseSemiStructuredTensor

    from profiler.workloads.setup import INFER_STAGES
    from techniques import runtime
    from techniques.compress_common import target_linears

    base = build_gpt("gpt-mini").to(ctx.device).eval()
    states, reports = {}, {}
    for name, accelerate in (("sparse", True), ("dense", False)):
        config = run_config(ctx, "gpt-mini", 16, 256, {
            "prune_semi_structured": {"accelerate": accelerate}, "weight_cast": {"dtype": "bf16"}})
        config.workload = "compress"
        state = runtime.TrainState(config=config, device=ctx.device, caps=ctx.caps,
                                   model=copy.deepcopy(base), warn=ctx.warnings.append)
        applied = runtime.apply_all(state, runtime.plan(config, ctx.caps, INFER_STAGES))
        states[name], reports[name] = state, [a["report"] for a in applied]  # as a run does
    layers = target_linears(states["sparse"].model, "all")[0]
    dense_left = [n for n, m in layers if not isinstance(m.weight, SparseSemiStructuredTensor)]
    x, _ = make_batches(ctx, run_config(ctx, "gpt-mini", 16, 256), 1)[0]
    with torch.no_grad():
        sparse_out = states["sparse"].model(x)[0].float()
        dense_out = states["dense"].model(x)[0].float()
    error = float((sparse_out - dense_out).norm() / dense_out.norm())

    def forward(state):
        with torch.no_grad():
            return state.model(x)

    times = {name: distribution(time_calls(ctx, lambda s=state: forward(s), 20, 3), "s")
             for name, state in states.items()}
    figures = {"model": "gpt-mini", "batch": list(x.shape), "dtype": "bf16",
               "reports": reports,
               "layers": len(layers), "layers_left_dense": dense_left,
               "sparse_kind": sorted({type(m.weight).__name__ for _, m in layers}),
               "logits_rel_error_vs_dense": error, "sparse_forward_s": times["sparse"],
               "dense_forward_s": times["dense"],
               "speedup_x": times["dense"]["median"] / times["sparse"]["median"]}
    del states, state
    free(ctx)
    if dense_left:
        raise CheckFailed(f"{len(dense_left)} of {len(layers)} layers are not in the compressed "
                          f"2:4 form ({', '.join(dense_left[:3])})", figures)
    if error > 1e-2:
        raise CheckFailed(f"the 2:4 sparse model's logits differ from the dense 2:4-pruned model "
                          f"by {error:.3g}", figures)
    figures["summary"] = (f"{len(layers)} layers sparse semi-structured through the technique, "
                          f"logits within {error:.1e} of dense, forward "
                          f"{figures['speedup_x']:.2f}x dense")
    return figures


def check_fsdp(ctx: Context) -> dict:
    """FSDP2 (the fsdp technique, bf16 mixed precision) in one process — NCCL on CUDA, gloo on a
    CPU — against plain bf16 autocast on the same batches."""
    backend = "nccl" if ctx.cuda else "gloo"
    config = train_config(ctx, {"precision": {"dtype": "bf16"}})
    batches = make_batches(ctx, config, 4)
    n = 5
    plain = train(make_state(ctx, config), batches, n)["losses"]
    dist = process_group(ctx, backend)
    try:
        fsdp_config = train_config(ctx, {"fsdp": {"mixed_precision": "bf16"}})
        state = make_state(ctx, fsdp_config, {"dist_backend": backend})
        kinds = {type(p).__name__ for p in state.model.parameters()}
        losses = train(state, batches, n)["losses"]
    finally:
        dist.destroy_process_group()
    diff = max_rel_diff(losses, plain) if finite(losses) else None
    figures = {"backend": backend, "world_size": 1, "parameter_types": sorted(kinds),
               "losses": losses, "autocast_losses": plain, "max_rel_diff": diff,
               "report": state.reports.get("fsdp")}
    if kinds != {"DTensor"}:
        raise CheckFailed(f"fully_shard left parameters of type {sorted(kinds)}, not DTensor",
                          figures)
    if diff is None or diff > 0.05:
        raise CheckFailed(f"FSDP2 losses differ from bf16 autocast by {diff}", figures)
    figures["summary"] = f"FSDP2 over {backend}, 1 process: {n} steps within {diff:.1%} of autocast"
    return figures


def _gpt2_run(ctx: Context, techniques: dict, batch: int, measured: int, warmup: int) -> dict:
    """GPT-2 small trained for warmup + measured steps; tokens/s, MFU and the energy counter's
    joules over the measured steps only."""
    from profiler.system import SystemSampler

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
    CheckSpec("torchao", "torchao int8 / int4 (tinygemm) weight-only through the technique: "
              "every layer converted, logits near bf16, decode speed",
              check_torchao, cuda_only=True),
    CheckSpec("sparse_2to4", "2:4 sparsity through the technique: every layer a sparse "
              "semi-structured tensor, logits match dense, forward speed", check_sparse_2to4,
              cuda_only=True),
    CheckSpec("fsdp", "FSDP2 with bf16 mixed precision in one process (gloo on CPU, NCCL on "
              "CUDA)", check_fsdp),
    CheckSpec("gpt2_throughput", "GPT-2 small bf16 + compile + SDPA: tokens/s and MFU",
              check_gpt2_throughput, cuda_only=True),
    CheckSpec("energy_per_token", "energy per trained token (NVML energy counter)",
              check_energy_per_token, cuda_only=True),
]
