"""The one engine under every workload: each test here failed on the build that set each workload
up in its own copy (issue "One engine for every workload").

- accumulation under DDP / FSDP synchronises gradients once per optimizer step (collectives
  counted) and equals one process with the same global batch;
- torch.compile's mode survives the DDP wrapper;
- the attention technique's SDPA backend is in force in compress and encoder runs (the kernel
  that ran is read from the profiler), and compress samples carry memory readings;
- pruning's `permanent` is honoured by train runs; a distilled Hugging Face student is saved.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from profiler.config import ModelConfig, RunConfig, validate
from profiler.models.gpt import GPT
from profiler.models.presets import GPTShape
from techniques import runtime
from tests.helpers import NullControl, free_port, run_config

TINY = GPTShape(2, 2, 32, 32, 64, "engine-test")
BATCH, SEQ, MICRO = 2, 16, 4


class ListBatches:
    def __init__(self, items):
        self.items = list(items)

    def next(self):
        return self.items.pop(0)


def global_micro_batches(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """MICRO micro-batches of 2 x BATCH sequences: the job's global batch of one step."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(MICRO):
        window = torch.randint(0, TINY.vocab_size, (2 * BATCH, SEQ + 1), generator=g)
        out.append((window[:, :-1], window[:, 1:]))
    return out


def engine_state(techniques: dict, world_size: int = 1, micro: int = MICRO) -> runtime.TrainState:
    config = RunConfig(device="cpu", techniques={
        "optimizer": {"algorithm": "sgd", "momentum": 0.0},
        "grad_accumulation": {"micro_batches": micro}, **techniques})
    config.train.batch_size, config.train.seq_len = BATCH, SEQ
    config.train.learning_rate = 0.5
    torch.manual_seed(0)
    caps = {"world_size": world_size, "dist_backend": "gloo", "distributed": True}
    state = runtime.TrainState(config=config, device=torch.device("cpu"), caps=caps,
                               model=GPT(TINY, 0.0), warn=lambda text: None)
    runtime.apply_all(state, {n: runtime.registry.validate_params(n, p)
                              for n, p in config.techniques.items()})
    return state


def full_parameters(model) -> dict[str, list]:
    out = {}
    for name, param in model.named_parameters():
        full = param.full_tensor() if hasattr(param, "full_tensor") else param
        out[name] = full.detach().reshape(-1).tolist()
    return out


def _rank_main(rank: int, strategy: str, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    from profiler.engine.workloads.steps import train_step

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    counts: list[int] = []

    def counting(state: runtime.TrainState) -> None:
        if strategy == "ddp":
            from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

            def hook(_, bucket):
                counts.append(1)
                return allreduce_hook(None, bucket)

            state.forward_model.register_comm_hook(None, hook)
        else:
            from torch.distributed.fsdp._fully_shard import _fsdp_param_group as group

            original = group.foreach_reduce

            def wrapper(*args, **kwargs):
                counts.append(1)
                return original(*args, **kwargs)

            group.foreach_reduce = wrapper

    result = {}
    for micro in (1, MICRO):
        state = engine_state({strategy: {}}, world_size=2, micro=micro)
        if micro == 1 or strategy == "ddp":
            counting(state)
        batches = [(x[rank * BATCH:(rank + 1) * BATCH], y[rank * BATCH:(rank + 1) * BATCH])
                   for x, y in global_micro_batches()]
        # Two steps: DDP may rebuild its buckets in the first; count the second.
        train_step(state, ListBatches(batches[:micro]), step=100)
        before = len(counts)
        train_step(state, ListBatches(batches[:micro]), step=100)
        result[f"syncs_micro{micro}"] = len(counts) - before
        if micro == MICRO:
            result["parameters"] = full_parameters(state.model)
    if rank == 0:
        Path(out_dir, f"{strategy}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_accumulation_synchronises_once_per_step_and_matches_one_process(strategy, tmp_path):
    import subprocess
    import sys

    from profiler.engine.workloads.steps import train_step

    port = free_port()
    code = ("import sys; from tests.test_engine import _rank_main; "
            "_rank_main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4])")
    ranks = [subprocess.Popen([sys.executable, "-c", code, str(rank), strategy, str(port),
                               str(tmp_path)], cwd=Path(__file__).resolve().parent.parent)
             for rank in range(2)]
    try:
        codes = [rank.wait(timeout=240) for rank in ranks]  # a hang guard, not a timing
    finally:
        for rank in ranks:
            rank.kill()
    assert codes == [0, 0]
    job = json.loads((tmp_path / f"{strategy}.json").read_text())
    assert job["syncs_micro1"] >= 1  # the counter sees the collectives at all
    # k micro-batches, one reduction per optimizer step: the same count as one micro-batch.
    assert job[f"syncs_micro{MICRO}"] == job["syncs_micro1"]

    # One process, the same global batch (2 x BATCH sequences per micro-batch), two steps.
    state = engine_state({}, micro=MICRO)
    initial = full_parameters(state.model)
    for _ in range(2):
        train_step(state, ListBatches(global_micro_batches()), step=100)
    single = full_parameters(state.model)
    moved = max(abs(a - b) for name in single for a, b in zip(single[name], initial[name],
                                                               strict=True))
    assert moved > 1e-4  # the step really changed the weights
    for name, values in single.items():
        assert job["parameters"][name] == pytest.approx(values, abs=2e-6, rel=1e-4), name


def test_compile_mode_is_kept_when_ddp_wraps_the_model(monkeypatch):
    import torch.distributed as dist

    calls: list[dict] = []
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: calls.append(kwargs) or model)
    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        state = engine_state({"compile": {"mode": "max-autotune"}, "ddp": {}}, world_size=2)
    finally:
        dist.destroy_process_group()
    assert calls and all(call.get("mode") == "max-autotune" for call in calls)
    # max-autotune records CUDA graphs: the compiled wrapper sits behind the step marks
    assert type(state.forward_model).__name__ == "CudaGraphForward"
    assert type(state.forward_model.compiled).__name__ == "DistributedDataParallel"


def _ran_attention_kernels(run) -> set[str]:
    """The attention operators that ran inside `run`, as the profiler saw them."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    return {e.key for e in prof.key_averages() if "attention" in e.key or "softmax" in e.key}


@pytest.mark.parametrize("backend", ["math", "auto"])
def test_the_sdpa_backend_is_in_force_while_compress_measures(tmp_path, backend):
    from profiler.engine import weights
    from profiler.engine.workloads import compress

    torch.manual_seed(0)
    weights.save_model(GPT(GPTShape(2, 2, 32, 64, 256, "tiny")), tmp_path / "model.safetensors",
                       "tiny")
    config = run_config(workload="compress", max_train_bytes=30_000, validated=True,
                        model={"source": "checkpoint", "path": str(tmp_path)},
                        infer={"prompt_len": 8, "gen_len": 3, "repeats": 2, "warmup_runs": 0,
                               "eval_tokens": 64, "eval_seq_len": 16},
                        techniques={"quantize_int8_dynamic": {},
                                    "attention": {"implementation": "sdpa", "backend": backend}})
    messages: list[dict] = []
    kernels = _ran_attention_kernels(lambda: compress.run(config, messages.append, NullControl()))
    if backend == "math":  # sdpa_kernel([MATH]) was entered around the measured passes
        assert "aten::_scaled_dot_product_attention_math" in kernels, kernels
        assert not any("flash" in k for k in kernels), kernels
    else:  # PyTorch's own pick on this CPU: the fused kernel, not the math fallback
        assert any("flash" in k for k in kernels), kernels
    samples = [m for m in messages if m["type"] == "sample" and m["phase"] == "measure"]
    # Memory readings in every sample, as in the other workloads (the system sampler runs).
    assert samples and all(m["metrics"]["rss_bytes"] > 0 for m in samples)
    assert "compressed_decode_tokens_per_s" in samples[0]["metrics"]


@pytest.mark.parametrize("permanent", [True, False])
def test_train_honours_pruning_permanent(tmp_path, permanent):
    from profiler.engine.workloads import train

    config = RunConfig(device="cpu", techniques={
        "prune_magnitude": {"amount": 0.5, "permanent": permanent}})
    config.model.preset = "gpt-nano"
    config.limits.steps, config.limits.warmup_steps = 2, 0
    config.train.batch_size, config.train.seq_len = 2, 16
    config.train.eval_interval = 0
    config.data.max_train_bytes = 30_000
    config.train.save_checkpoint = True
    config.output_dir = str(tmp_path)
    validate(config)
    messages: list[dict] = []
    summary = train.run(config, messages.append, NullControl())
    names = [t["name"] for t in summary["techniques"]]
    assert names.count("prune_magnitude") == 2  # applied, then finalized at the end
    final = [t for t in summary["techniques"] if t["name"] == "prune_magnitude"][-1]["report"]
    assert ("made permanent" in final) == permanent
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as fh:
        saved = list(fh.keys())
        weight = fh.get_tensor("blocks.0.mlp.fc.weight")
    assert not any(k.endswith(("_orig", "_mask")) for k in saved)
    # Trained with the masks on: the pruned half is still exactly zero after the steps.
    assert float((weight == 0).float().mean()) == pytest.approx(0.5, abs=0.01)


def test_a_train_run_continues_from_saved_weights(tmp_path):
    """Training may start from a saved model (a past run's, a checkpoint): one AdamW step of
    learning rate lr moves each weight by about lr at most, so the weights the second run saves
    sit within 2 lr of the loaded ones, while a fresh model of another seed is far from them."""
    from safetensors.torch import load_file

    from profiler.engine.workloads import train

    lr = 1e-4

    def config_for(out: Path, model: dict, seed: int) -> RunConfig:
        config = run_config(1, seed=seed, warmup_steps=0, batch_size=2, seq_len=16,
                            eval_interval=0, max_train_bytes=30_000, learning_rate=lr,
                            save_checkpoint=True, model=model)
        config.output_dir = str(out)
        return validate(config)

    train.run(config_for(tmp_path / "first", {}, 1), [].append, NullControl())
    saved = tmp_path / "first" / "model.safetensors"
    again = config_for(tmp_path / "again", {"source": "checkpoint", "path": str(saved)}, 2)
    train.run(again, [].append, NullControl())
    before, after = load_file(str(saved)), load_file(str(tmp_path / "again" / "model.safetensors"))
    assert before.keys() == after.keys()
    moved = max(float((after[k] - before[k]).abs().max()) for k in before)
    assert 0 < moved <= 2 * lr
    fresh = config_for(tmp_path / "fresh", {}, 2)
    train.run(fresh, [].append, NullControl())
    other = load_file(str(tmp_path / "fresh" / "model.safetensors"))
    assert max(float((other[k] - before[k]).abs().max()) for k in before) > 20 * lr


@pytest.mark.slow
def test_a_distilled_hugging_face_student_is_saved(tmp_path):
    from profiler.engine.workloads import distill
    from tests.hf_fixtures import bpe_tokenizer, save_gpt2

    tokenizer = bpe_tokenizer()
    student = save_gpt2(tmp_path / "student", tokenizer, seed=1)
    teacher = save_gpt2(tmp_path / "teacher", tokenizer, seed=2)
    config = RunConfig(workload="distill", device="cpu")
    config.model = ModelConfig(source="hf", path=str(student))
    config.distill.teacher = ModelConfig(source="hf", path=str(teacher))
    config.limits.steps, config.limits.warmup_steps = 2, 0
    config.train.batch_size, config.train.seq_len = 2, 16
    config.train.eval_interval = 0
    config.data.max_train_bytes = 30_000
    config.train.save_checkpoint = True
    config.output_dir = str(tmp_path / "run")
    validate(config)
    messages: list[dict] = []
    summary = distill.run(config, messages.append, NullControl())
    assert summary["steps_completed"] == 2
    saved = Path(summary["checkpoint"])
    assert (saved / "config.json").exists() and list(saved.glob("*.safetensors"))
    # The saved student loads as a model source of its own.
    from profiler.engine import weights

    model, _ = weights.load_model(ModelConfig(source="hf", path=str(saved)))
    assert model.parameter_count() > 0


def test_only_a_refusal_reads_as_unsupported_a_bug_is_a_crash():
    from profiler import errors

    assert errors.classify(errors.Unsupported("fp16 needs CUDA"))[0] == "unsupported"
    # torch raises NotImplementedError for a missing kernel: a bug or an environment problem,
    # not the user's mistake.
    kind, hint = errors.classify(NotImplementedError("aten::foo has no CPU kernel"))
    assert kind == "crash" and "traceback" in hint
    assert errors.user_facing(NotImplementedError("x"), kind) == "NotImplementedError: x"
