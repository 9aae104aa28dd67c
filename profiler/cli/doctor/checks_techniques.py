"""Checks of `effiscope doctor` that prove a technique's CUDA path through the technique itself
(issue 32): the run's own engine applies it to a model, the run's own workload code drives it,
and the check verifies what only the GPU can show. Where the host-side part means something on
a CPU it runs there too, and the summary says which part needs a GPU."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from profiler.cli.doctor.base import (
    CheckFailed,
    CheckSpec,
    Context,
    finite,
    free,
    make_batches,
    make_state,
    max_rel_diff,
    run_config,
    train,
    train_config,
)


@contextlib.contextmanager
def recording_sdpa() -> Iterator[list[dict]]:
    """F.scaled_dot_product_attention wrapped: each call's query / key lengths, whether a mask
    was passed, and is_causal, recorded; the real function still runs."""
    real = F.scaled_dot_product_attention
    calls: list[dict] = []

    def sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kwargs):
        calls.append({"queries": q.size(2), "keys": k.size(2), "mask": attn_mask,
                      "is_causal": is_causal})
        return real(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                    **kwargs)

    F.scaled_dot_product_attention = sdpa
    try:
        yield calls
    finally:
        F.scaled_dot_product_attention = real


@torch.no_grad()
def _cached_greedy(state, prompt: torch.Tensor, gen: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(every token, the logits that chose each new one) of a greedy generation with the KV
    cache, in the state's step context (its autocast and SDPA backend)."""
    model = state.model
    cache = model.new_kv_cache(prompt.size(1) + gen)
    tokens, chosen = prompt, []
    with state.step_context():
        logits = model(prompt, kv_cache=cache)[0][:, -1]
        for step in range(gen):
            chosen.append(logits.float())
            token = logits.argmax(-1, keepdim=True)
            tokens = torch.cat([tokens, token], dim=1)
            if step < gen - 1:
                logits = model(token, kv_cache=cache)[0][:, -1]
    return tokens, torch.stack(chosen, dim=1)


def check_flash_generation(ctx: Context) -> dict:
    """A generation through the infer workload's own path (generation.generate_once) with the
    attention technique's backend = flash on a bf16 weight cast: it runs, which proves the KV
    cache passes flash no mask (flash refuses any attn_mask, and the backend is forced), and
    its logits agree with the uncached model on the math backend. On a CPU the host side runs
    with the default backend in fp32: the cached path passes SDPA no mask (prefill is_causal,
    decode steps plain) and equals the uncached model; the flash kernel itself needs CUDA."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from profiler.engine.workloads.generation import generate_once
    from techniques import runtime
    from techniques.registry import INFER_STAGES

    techniques = ({"weight_cast": {"dtype": "bf16"}, "attention": {"backend": "flash"}}
                  if ctx.cuda else {})
    config = run_config(ctx, "gpt-mini" if ctx.cuda else "gpt-nano", 4, 64, techniques)
    config.workload = "infer"
    runtime.plan(config, ctx.caps, INFER_STAGES)  # the run's own refusal rules accept it
    state = make_state(ctx, config)
    state.model.eval()
    prompt = ctx.tokens()[:4 * 48].long().view(4, 48).to(ctx.device)
    gen = 16
    with recording_sdpa() as calls:
        timing = generate_once(state, prompt, gen)
    masked = [c for c in calls if c["mask"] is not None]
    tokens, cached = _cached_greedy(state, prompt, gen)
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]):
        full = state.model(tokens[:, :-1])[0][:, prompt.size(1) - 1:].float()
    error = float((cached - full).norm() / full.norm())
    agreement = float((cached.argmax(-1) == full.argmax(-1)).float().mean())
    limit = 5e-2 if ctx.cuda else 1e-4
    figures = {"model": config.model.preset, "techniques": techniques or "none (fp32, auto)",
               "prompt_tokens": prompt.size(1), "generated_tokens": gen,
               "sdpa_calls": len(calls), "sdpa_calls_with_mask": len(masked),
               "logits_rel_error_vs_uncached_math": error, "limit": limit,
               "top1_agreement": agreement, "report": state.reports.get("attention"),
               "decode_tokens_per_s": timing["decode_tokens_per_s"]}
    del state
    free(ctx)
    if masked:
        raise CheckFailed(f"{len(masked)} of {len(calls)} SDPA calls of the cached generation "
                          "passed a mask, which flash refuses", figures)
    if not error <= limit:
        raise CheckFailed(f"cached generation's logits differ from the uncached model by "
                          f"{error:.3g} (allowed {limit})", figures)
    where = ("flash backend forced, bf16" if ctx.cuda else
             "host side only, fp32 on the default backend; the flash kernel needs CUDA")
    figures["summary"] = (f"{gen} tokens generated, no SDPA mask in {len(calls)} calls, logits "
                          f"within {error:.1e} of the uncached model ({where})")
    return figures


def check_cudagraph_accumulation(ctx: Context) -> dict:
    """torch.compile in mode reduce-overhead (CUDA graphs) with 2 accumulated micro-batches per
    step, through the compile and grad_accumulation techniques and the train loop's step, on
    gpt-mini in bf16: every step's loss and the losses after several optimizer steps match
    eager within 2 % — proof that no micro-step's loss or gradient was read after a later graph
    replay overwrote it (the compile technique marks each call, clones the loss and, while
    steps accumulate, copies each gradient out of the graph's memory: PyTorch issues 96693 and
    169545 show the accumulated gradient losing micro-steps, or the run failing, without)."""
    techniques = {"precision": {"dtype": "bf16"}, "grad_accumulation": {"micro_batches": 2}}
    config = train_config(ctx, techniques)
    batches = make_batches(ctx, config, 8)
    n = 6 if ctx.quick else 10
    eager = train(make_state(ctx, config), batches, n)["losses"]
    graphed_config = train_config(ctx, {**techniques, "compile": {"mode": "reduce-overhead"}})
    state = make_state(ctx, graphed_config)
    graphed = train(state, batches, n)["losses"]
    report = state.reports.get("compile")
    del state
    torch._dynamo.reset()
    free(ctx)
    diff = max_rel_diff(graphed, eager) if finite(graphed) else None
    figures = {"model": config.model.preset, "steps": n, "micro_batches": 2,
               "losses": graphed, "eager_losses": eager, "max_rel_diff": diff, "report": report}
    if diff is None or diff > 0.02:
        raise CheckFailed(f"CUDA-graph losses with accumulation differ from eager by {diff}",
                          figures)
    figures["summary"] = (f"{n} steps of 2 micro-batches under reduce-overhead within "
                          f"{diff:.1%} of eager")
    return figures


CHECKS = [
    CheckSpec("flash_generation", "generation with the KV cache on the flash SDPA backend "
              "(bf16): no mask reaches SDPA, logits match the uncached model",
              check_flash_generation),
    CheckSpec("cudagraph_accumulation", "torch.compile reduce-overhead (CUDA graphs) with 2 "
              "accumulated micro-batches: losses match eager", check_cudagraph_accumulation,
              cuda_only=True),
]
