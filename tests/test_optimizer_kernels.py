"""The optimizer's kernel choice: implementation = "auto" (the README's promise) picks the kernel
measured faster on this machine, on a bounded share of a big model, and says why; where it
cannot measure (no fused kernel, a multi-rank job) it says what it took instead."""

from __future__ import annotations

import pytest

from profiler.config import RunConfig


def _optimizer_state(caps_fused: list[str], dist_enabled: bool = False):
    import torch

    from profiler.models.gpt import GPT
    from profiler.models.presets import GPT_PRESETS
    from techniques import runtime

    state = runtime.TrainState(config=RunConfig(), device=torch.device("cpu"),
                               caps={"fused": caps_fused}, warn=lambda text: None,
                               model=GPT(GPT_PRESETS["gpt-nano"]))
    if dist_enabled:
        state.dist = type("Job", (), {"enabled": True})()
    return state


@pytest.mark.parametrize("timed, chosen", [({"foreach": 2e-3, "fused": 1e-3}, "fused"),
                                           ({"foreach": 1e-3, "fused": 3e-3}, "foreach")])
def test_auto_takes_the_kernel_measured_faster_on_a_cpu_and_says_why(timed, chosen, monkeypatch):
    from techniques import optimizer

    monkeypatch.setattr(optimizer, "_time_kernels", lambda state, algorithm, kernels:
                        (timed, 858_880))
    kwargs, picked, why = optimizer._kernel_options(_optimizer_state(["adamw"]), "adamw", "auto")
    assert picked == chosen and kwargs == optimizer.KERNELS[chosen]
    other = "foreach" if chosen == "fused" else "fused"
    assert why.startswith(f"auto: {chosen} took ") and f"against {other} " in why
    assert "858,880 parameters" in why


def test_auto_measures_real_updates_and_explains_what_it_cannot_measure():
    from techniques import optimizer

    times, elements = optimizer._time_kernels(_optimizer_state(["adamw"]), "adamw",
                                              ("foreach", "fused"))
    assert set(times) == {"foreach", "fused"} and all(t > 0 for t in times.values())
    assert elements == 858_880 <= optimizer.MEASURED_ELEMENTS  # all of gpt-nano
    _, kernel, why = optimizer._kernel_options(_optimizer_state([]), "adamw", "auto")
    assert kernel == "foreach" and "no fused adamw" in why
    _, kernel, why = optimizer._kernel_options(_optimizer_state(["adamw"], True), "adamw", "auto")
    assert kernel == "foreach" and "every rank" in why
    assert optimizer._kernel_options(_optimizer_state(["adamw"]), "adamw", "for-loop")[2] == ""


def test_auto_times_a_bounded_share_of_a_big_model(monkeypatch):
    from techniques import optimizer

    monkeypatch.setattr(optimizer, "MEASURED_ELEMENTS", 10_000)
    _, elements = optimizer._time_kernels(_optimizer_state(["adamw"]), "adamw",
                                          ("foreach", "fused"))
    assert elements == 10_000  # gpt-nano's first tensor alone has 32,768
