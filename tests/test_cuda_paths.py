"""The host-side logic of every CUDA path, proven on a CPU with fakes (issue 32): which GPU NVML
reads, bf16 gating, the loss scaler under FSDP, the whole-job gradient norm, per-segment
allocator peaks, energy over the timed steps summed over ranks, the roofline's synchronised
device and datasheet ceiling, and the profile's device-time breakdown. What only a GPU can tell
is a doctor check (profiler/cli/doctor/checks_gpu.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from profiler.config import validate
from profiler.engine.workloads import setup, steps, train
from profiler.figures import energy
from profiler.measure import capabilities, roofline, system
from techniques import precision, registry, runtime
from tests.fake_nvml import FakeGpu, FakeNvml, install
from tests.helpers import SetAt, run_config

UUID_A = "1c7a0f9e-0000-4000-8000-00000000000a"
UUID_B = "1c7a0f9e-0000-4000-8000-00000000000b"
UUID_MIG = "5d7b1c7e-0000-4000-8000-0000000000c1"


# --- the GPU is found by UUID, never by index -------------------------------------------------
def test_the_sampler_reads_the_gpu_torch_runs_on_when_nvml_numbers_them_otherwise(monkeypatch):
    # NVML's index 0 is GPU B; torch's cuda:0 (CUDA_VISIBLE_DEVICES=1, say) is GPU A.
    busy_b = FakeGpu("GPU-" + UUID_B, memory_used=70 * 2**30, power_mw=650_000)
    mine_a = FakeGpu("GPU-" + UUID_A, memory_used=3 * 2**30, power_mw=120_000)
    fake = install(monkeypatch, FakeNvml([busy_b, mine_a]))
    sampler = system.SystemSampler(gpu_uuid=UUID_A)  # torch prints the UUID bare
    snap = sampler.read_now()
    assert snap["gpu_memory_used_bytes"] == 3 * 2**30
    assert snap["gpu_power_w"] == pytest.approx(120.0)
    assert snap["gpu_energy_j"] == pytest.approx(1000.0)
    assert {uuid for _, uuid in fake.calls} == {"GPU-" + UUID_A}  # never GPU B
    # An index-based reading (the old way) would have read GPU B.
    assert fake.nvmlDeviceGetHandleByIndex(0) is busy_b


def test_a_mig_slice_is_found_by_its_own_uuid_and_its_card_wide_figures_are_na(monkeypatch):
    card = FakeGpu("GPU-" + UUID_B)
    slice_ = FakeGpu("MIG-" + UUID_MIG, memory_used=2**30, memory_total=10 * 2**30)
    install(monkeypatch, FakeNvml([card], mig=[slice_]))
    sampler = system.SystemSampler(gpu_uuid=UUID_MIG)
    assert sampler.gpu is not None and sampler.gpu.mig and sampler.gpu.uuid == "MIG-" + UUID_MIG
    snap = sampler.read_now()
    assert snap["gpu_memory_used_bytes"] == 2**30  # the slice's own memory
    assert snap["gpu_power_w"] is None and snap["gpu_energy_j"] is None
    assert snap["gpu_util_percent"] is None
    assert sampler.energy_now() is None
    assert "MIG" in sampler.gpu_note
    assert energy.EnergyMeter(sampler).why_not() == f"n/a: {sampler.gpu_note}"


def test_an_unknown_uuid_reads_no_gpu_and_says_why(monkeypatch):
    install(monkeypatch, FakeNvml([FakeGpu("GPU-" + UUID_B)]))
    sampler = system.SystemSampler(gpu_uuid=UUID_A)
    assert sampler.gpu is None and UUID_A in sampler.gpu_note
    assert sampler.read_now()["gpu_memory_used_bytes"] is None


def test_the_panel_gates_on_the_gpu_a_run_would_get(monkeypatch):
    volta = FakeGpu("GPU-" + UUID_A, name="Tesla V100", capability=(7, 0))
    hopper = FakeGpu("GPU-" + UUID_B, capability=(9, 0))
    install(monkeypatch, FakeNvml([volta, hopper]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-" + UUID_B)  # exact: by UUID
    caps = system.host_capabilities()
    assert caps["cuda_capability"] == 9.0 and caps["bf16"] is True
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # CUDA counts fastest first: unknown
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    handles, exact = system.visible_gpus()
    assert not exact and len(handles) == 2
    caps = system.host_capabilities()  # the weakest candidate, so nothing is over-offered
    assert caps["cuda_capability"] == 7.0 and caps["bf16"] is False
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # now integers are NVML's order
    assert system.host_capabilities()["cuda_capability"] == 9.0


# --- bf16 only where the hardware has it ------------------------------------------------------
def _fake_cuda(monkeypatch, capability: tuple[int, int], emulated_bf16: bool = True) -> None:
    props = SimpleNamespace(uuid=UUID_A, name="Tesla V100", major=capability[0],
                            minor=capability[1])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: emulated_bf16)
    monkeypatch.setattr(capabilities, "_fused_optimizers", lambda device: [])


def test_bf16_is_refused_on_a_gpu_that_only_emulates_it(monkeypatch):
    _fake_cuda(monkeypatch, (7, 0))  # torch.cuda.is_bf16_supported() says yes on a V100
    caps = capabilities.detect("cuda:0")
    assert caps["cuda_capability"] == 7.0 and caps["bf16"] is False
    assert caps["gpu_uuid"] == UUID_A
    why = registry.unavailable_reason(registry.get("precision"), {"dtype": "bf16"}, caps)
    assert "compute capability 7" in why and "fp16" in why
    _fake_cuda(monkeypatch, (8, 0))
    assert capabilities.detect("cuda:0")["bf16"] is True


def test_the_panel_and_the_worker_share_one_bf16_rule():
    assert system.bf16_native("cuda", 7.5) is False and system.bf16_native("cuda", 8.0) is True
    assert system.bf16_native("cpu", None) is True


# --- fp16 under FSDP gets the sharded scaler --------------------------------------------------
def _state(active: dict | None = None) -> runtime.TrainState:
    state = runtime.TrainState.plain(torch.nn.Linear(4, 4))
    state.active.update({name: registry.validate_params(name, params)
                         for name, params in (active or {}).items()})
    return state


def test_fp16_with_fsdp_scales_with_the_sharded_scaler_also_after_a_mid_run_change():
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

    state = _state({"fsdp": {"mixed_precision": "none"}})
    fp16, bf16 = (registry.validate_params("precision", {"dtype": d}) for d in ("fp16", "bf16"))
    report = precision.apply(state, fp16)
    assert isinstance(state.scaler, ShardedGradScaler) and state.scaler.is_enabled()
    assert "ShardedGradScaler" in report
    precision.change(state, bf16)  # mid-run: scaling off (a disabled scaler)
    assert not state.scaler.is_enabled()
    precision.change(state, fp16)
    assert isinstance(state.scaler, ShardedGradScaler) and state.scaler.is_enabled()
    plain = _state()
    precision.apply(plain, fp16)
    assert not isinstance(plain.scaler, ShardedGradScaler) and plain.scaler.is_enabled()


def test_fsdp_fp16_parameters_keep_loss_scaling_whatever_the_autocast():
    state = _state({"fsdp": {"mixed_precision": "fp16"}})
    precision.apply(state, registry.validate_params("precision", {"dtype": "fp32"}))
    assert state.scaler.is_enabled()  # fp16 gradients underflow without it


# --- the gradient norm is the whole model's ---------------------------------------------------
class _Partial(torch.Tensor):
    """A stand-in for a DTensor norm: its local value is one rank's part."""

    whole = None

    def full_tensor(self) -> torch.Tensor:
        return self.whole


def test_a_sharded_norm_is_reduced_before_it_clips_or_is_reported(monkeypatch):
    model = torch.nn.Linear(4, 4, bias=False)
    model.weight.grad = torch.full((4, 4), 1.0)  # norm 4
    state = runtime.TrainState.plain(model)
    state.grad_clip_norm = 1.0
    state.optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    local = torch.tensor(4.0).as_subclass(_Partial)
    local.whole = torch.tensor(8.0)  # the other rank's shard doubles the norm
    monkeypatch.setattr(torch.nn.utils, "get_total_norm", lambda grads, p: local)
    norm = state.clip_gradients()
    assert norm == pytest.approx(8.0)
    # Clipped by the whole norm: 1/8 of each gradient entry is left, not 1/4.
    assert model.weight.grad[0, 0].item() == pytest.approx(1.0 / 8.0, rel=1e-4)


# --- each segment's allocator peak is its own -------------------------------------------------
class FakeAllocator:
    """A CUDA allocator stand-in: `level` is what a step holds at its peak (set by the test's
    step); the peak counter keeps the highest since its last reset."""

    def __init__(self) -> None:
        self.level = 0
        self.peak = 0
        self.resets = 0

    def note(self, level: int) -> None:
        self.level = level
        self.peak = max(self.peak, level)

    def read(self) -> dict:
        return {"torch_allocated_bytes": 100, "torch_reserved_bytes": 200,
                "torch_peak_allocated_bytes": self.peak}

    def reset_peak(self) -> None:
        self.resets += 1
        self.peak = 100  # what stays allocated between steps


@pytest.mark.slow
def test_switching_checkpointing_on_mid_run_shows_its_lower_peak_and_keeps_the_runs(monkeypatch):
    fake = FakeAllocator()
    monkeypatch.setattr(setup, "allocator_for", lambda device: fake)
    real_step = steps.train_step

    def step(state, batches, number):
        out = real_step(state, batches, number)
        # Checkpointing holds fewer activations: 400 bytes at the peak instead of 1000.
        fake.note(400 if "activation_checkpointing" in state.active else 1000)
        return out

    monkeypatch.setattr(steps, "train_step", step)
    config = run_config(steps=8, eval_interval=0, batch_size=2, seq_len=16)
    config.limits.warmup_steps = 2
    validate(config)
    summary = train.run(config, lambda m: None, SetAt(5, "activation_checkpointing", {"every": 1}))
    first, second = summary["segments"]
    assert first["figures"]["peak_torch_allocated_bytes"]["value"] == 1000
    assert second["figures"]["peak_torch_allocated_bytes"]["value"] == 400
    assert summary["figures"]["peak_torch_allocated_bytes"]["value"] == 1000  # the run's
    assert fake.resets == 3  # after set-up, after warmup, at the change


# --- energy over the timed steps, summed over the job's GPUs ----------------------------------
class ClockCounter:
    """An energy counter that advances at `watts` with the clock, like a GPU at constant power."""

    def __init__(self, watts: float) -> None:
        import time

        self.watts, self.clock = watts, time.perf_counter

    def energy_now(self) -> float:
        return self.watts * self.clock()


class _Quiet:
    should_stop = False
    dist = None

    def poll(self) -> list:
        return []


@pytest.mark.slow
def test_energy_counts_the_timed_steps_only_not_validation(monkeypatch):
    counter = ClockCounter(100.0)
    monkeypatch.setattr(system.SystemSampler, "energy_now", lambda self: counter.energy_now())
    monkeypatch.setattr(energy, "ENERGY_MIN_S", 0.0)
    config = run_config(steps=8, eval_interval=2, batch_size=2, seq_len=16)
    config.limits.warmup_steps = 2
    validate(config)
    messages: list[dict] = []
    summary = train.run(config, messages.append, _Quiet())
    figures = summary["figures"]
    timed = [m["metrics"] for m in messages if m["type"] == "sample" and m["step"] > 2
             and m.get("phase") == "measure"]
    assert len(timed) == 6
    joules = figures["energy_j"]["value"]
    assert "validation passes" in figures["energy_j"]["how"]
    # 100 W over exactly the timed steps; validation (every 2 steps) and the time between
    # steps would add their own seconds.
    assert joules == pytest.approx(100.0 * sum(m["step_time_s"] for m in timed), rel=0.01)
    tokens = sum(m["tokens_per_s"] * m["step_time_s"] for m in timed)
    assert figures["energy_per_token_j"]["value"] == pytest.approx(joules / tokens, rel=1e-6)
    assert figures["eval_time_s"]["value"] > 0  # there was validation to leave out


def test_energy_is_summed_over_the_jobs_gpus_and_na_below_two_seconds():
    two_gpus = energy.energy_figures([3.0, 3.0, 3.0], [1.0, 1.0, 1.0], 600, 2, "counter",
                                     "n/a", "steps 3..5")
    assert two_gpus["energy_j"]["value"] == 9.0
    assert two_gpus["energy_per_token_j"]["value"] == pytest.approx(9.0 / 600)
    assert "summed over 2 GPUs" in two_gpus["energy_j"]["how"]
    short = energy.energy_figures([3.0], [0.5], 600, 1, "counter", "n/a", "steps 3..3")
    assert short["energy_j"]["value"] is None and "2 s" in short["energy_j"]["how"]
    missing = energy.energy_figures([3.0, None], [2.0, 2.0], 600, 2, "counter",
                                    "n/a: no energy counter for CPUs", "steps 3..4")
    assert missing["energy_j"]["value"] is None
    assert energy.job_joules([[0.1, 2.0], [0.1, 3.0]], 1) == 5.0
    assert energy.job_joules([[0.1, 2.0], [0.1, None]], 1) is None


# --- the roofline times the measured device and never believes the impossible -----------------
def test_the_roofline_synchronises_the_device_it_measures(monkeypatch):
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    roofline._sync("cuda:1")
    roofline._sync("cpu")
    assert synced == [torch.device("cuda:1")]


def test_a_measured_peak_above_the_datasheet_is_refused():
    h100 = "NVIDIA H100 80GB HBM3"
    assert roofline.above_datasheet(h100, "bf16", 700e12) is None  # 71 % of 989: plausible
    why = roofline.above_datasheet(h100, "bf16", 3000e12)
    assert why and "datasheet" in why and "nothing was cached" in why
    assert roofline.above_datasheet("cpu", "fp32", 1e18) is None  # no datasheet: no ceiling
    entry = {"schema": roofline.SCHEMA, "measured_at": "x",
             "fingerprint": {"device": "cuda", "name": h100, "torch": "2.13", "threads": 1},
             "matmul": {"bf16": {"value": 3000e12, "unit": "FLOP/s", "how": "",
                                 "distribution": {"n": 7}}},
             "bandwidth": {"value": 3e12, "unit": "B/s", "how": "", "distribution": {"n": 7}}}
    assert "datasheet" in roofline.validate(entry)  # an old cache's impossible peak is dropped


# --- the profile's breakdown on CUDA is GPU time ----------------------------------------------
class _Event(SimpleNamespace):
    pass


def test_on_cuda_the_step_breakdown_is_the_gpu_time_of_each_parts_kernels():
    from profiler.measure.capture import FORWARD_LABEL, step_breakdown

    def ev(name, start, end, device_us, parent=None):
        return _Event(name=name, time_range=SimpleNamespace(start=start, end=end),
                      device_time_total=device_us, cpu_parent=parent)

    # The host launches forward in 1 ms of CPU time; its kernels run 30 ms on the GPU.
    forward = ev(FORWARD_LABEL, 0, 1_000, 30_000)
    outer = ev("autograd::engine::evaluate_function: AddmmBackward0", 1_000, 2_000, 50_000)
    inner = ev("autograd::engine::evaluate_function: MmBackward0", 1_200, 1_500, 20_000, outer)
    optimizer = ev("Optimizer.step#AdamW.step", 2_000, 2_500, 5_000)
    prof = SimpleNamespace(events=lambda: [forward, outer, inner, optimizer])
    on_gpu = step_breakdown(prof, [0.1], device_time=True)
    assert on_gpu["forward_s"] == pytest.approx(0.030)
    assert on_gpu["backward_s"] == pytest.approx(0.050)  # the nested span counted once
    assert on_gpu["optimizer_s"] == pytest.approx(0.005)
    assert on_gpu["other_s"] == pytest.approx(0.015)
    on_host = step_breakdown(prof, [0.1], device_time=False)
    assert on_host["forward_s"] == pytest.approx(0.001)  # launch time, what CUDA would mislead
