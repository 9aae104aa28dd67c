"""The doctor's CUDA checks of the compression techniques through the engine: torchao int8 /
int4 weight-only and 2:4 semi-structured sparsity on the built-in GPT (every layer converted,
logits close to the reference, decode or forward speed)."""

from __future__ import annotations

import copy
import importlib.util

import torch

from profiler.cli.doctor.base import (
    CheckFailed,
    CheckSpec,
    Context,
    Skip,
    distribution,
    free,
    make_batches,
    needs_ampere,
    run_config,
    time_calls,
)
from profiler.models.gpt import build_gpt


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
    needs_ampere(ctx, "2:4 sparse tensor cores")
    from torch.sparse import SparseSemiStructuredTensor

    from techniques import runtime
    from techniques.compress_common import target_linears
    from techniques.registry import INFER_STAGES

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


CHECKS = [
    CheckSpec("torchao", "torchao int8 / int4 (tinygemm) weight-only through the technique: "
              "every layer converted, logits near bf16, decode speed",
              check_torchao, cuda_only=True),
    CheckSpec("sparse_2to4", "2:4 sparsity through the technique: every layer a sparse "
              "semi-structured tensor, logits match dense, forward speed", check_sparse_2to4,
              cuda_only=True),
]
