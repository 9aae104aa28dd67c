"""Knowledge distillation: the KL term, the refusal of mismatched vocabularies, and a teacher
that measurably helps a student (in-process, tiny models, fixed seeds)."""

from __future__ import annotations

import math

import pytest
import torch

from profiler.config import ConfigError, ModelConfig, RunConfig, validate
from profiler.engine import weights
from profiler.engine.data import BatchSampler, load_corpus
from profiler.engine.workloads import distill
from profiler.models import source as model_source
from profiler.models.gpt import GPT
from techniques import runtime
from tests.helpers import STUDENT, TEACHER, NullControl, distill_settings, run_config


def test_kd_kl_is_the_kl_of_the_softened_distributions():
    student, teacher = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    for temperature in (1.0, 3.0):
        p = torch.softmax(teacher / temperature, -1)
        q = torch.softmax(student / temperature, -1)
        expected = (p * (p.log() - q.log())).sum(-1).mean()
        got = distill.kd_kl(student, teacher, temperature)
        assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert distill.kd_kl(teacher, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-6)


def test_a_teacher_with_another_vocabulary_is_refused_with_the_reason():
    config = RunConfig(workload="distill")
    config.distill.teacher.preset = "gpt2-small"  # GPT-2's 50304-token vocabulary
    with pytest.raises(ConfigError, match="distill.teacher: the teacher's vocabulary has 50304 "
                                          "tokens and the student's 256"):
        validate(config)


@pytest.mark.slow
def test_the_student_learns_from_the_teacher(tmp_path, one_thread):
    """The classic setting: a teacher trained on 200 kB of text teaches a 1-layer student that
    sees only 20 kB. Measured here: after 100 steps the student's held-out loss is ~0.14
    nats/token below the same student trained on its 20 kB alone (same seed, same batches) and
    its KL to the teacher ~0.2 lower (after 150 steps: -0.20 and -0.32). With plenty of text
    (200 kB) and only 60 steps the teacher did not help (+0.01 to +0.05 nats/token): in the
    first steps both objectives teach the same byte statistics."""
    torch.manual_seed(0)
    teacher = GPT(TEACHER)
    corpus = load_corpus("stdlib", "", 200_000, 0.1, 256, 0)
    batches = BatchSampler(corpus.train, 16, 64, 0, torch.device("cpu"))
    distill.pretrain_teacher(runtime.TrainState.plain(teacher), batches, 300, 3e-3, lambda m: None, NullControl())
    weights.save_model(teacher, tmp_path / "teacher.safetensors", "tiny-teacher")
    torch.manual_seed(1)
    weights.save_model(GPT(STUDENT), tmp_path / "student.safetensors", "tiny-student")

    runs = {}
    for alpha in (0.9, 0.0):
        config = run_config(100, **distill_settings(tmp_path, alpha))
        config.output_dir = str(tmp_path / f"run-{alpha}")
        config.train.save_checkpoint = alpha > 0
        messages: list[dict] = []
        runs[alpha] = (distill.run(config, messages.append, NullControl()), messages)
        assert runs[alpha][0]["steps_completed"] == 100

    summary, messages = runs[0.9]
    figures = summary["figures"]
    evals = [m["metrics"] for m in messages if m["type"] == "sample" and "loss_val" in m["metrics"]]
    kls = [e["kl_to_teacher_val"] for e in evals]
    assert kls[-1] < 0.5 * kls[0]  # the student's KL to the teacher falls
    assert all(b < a for a, b in zip(kls, kls[1:], strict=False))
    train_samples = [m for m in messages if m["type"] == "sample" and m["phase"] == "measure"]
    assert {"loss_train", "loss_distill", "kl_to_teacher"} <= set(train_samples[0]["metrics"])
    # loss_train is the student's cross-entropy, the blend has its own key: with alpha = 0 the
    # objective is the cross-entropy, with alpha = 0.9 it is not.
    plain = [m["metrics"] for m in runs[0.0][1] if m["type"] == "sample" and m["phase"] == "measure"]
    assert all(s["loss_distill"] == pytest.approx(s["loss_train"]) for s in plain)
    assert all(abs(m["metrics"]["loss_distill"] - m["metrics"]["loss_train"]) > 1e-3
               for m in train_samples)
    last = [m["metrics"]["loss_train"] for m in train_samples[-10:]]
    assert figures["loss_train_final"]["value"] == pytest.approx(sum(last) / len(last))
    assert "loss_distill_final" in figures and "cross-entropy" in figures["loss_train_final"]["how"]
    alone = runs[0.0][0]["figures"]
    gap = figures["loss_val_final"]["value"] - alone["loss_val_final"]["value"]
    kl_gap = figures["kl_to_teacher_val_final"]["value"] - alone["kl_to_teacher_val_final"]["value"]
    print(f"val loss with teacher - without: {gap:+.4f} nats/token; KL gap {kl_gap:+.4f}")
    assert kl_gap < 0
    assert gap < 0, f"the teacher did not help this time: {gap:+.4f} nats/token"
    assert figures["compression_ratio"]["value"] == pytest.approx(
        TEACHER.parameter_count() / STUDENT.parameter_count())
    assert math.isfinite(figures["teacher_loss_val"]["value"])
    saved = tmp_path / "run-0.9" / "model.safetensors"
    assert summary["checkpoint"] == str(saved)
    saved_shape = model_source.model_shape(ModelConfig(source="checkpoint", path=str(saved)))
    assert saved_shape.as_dict() == STUDENT.as_dict()
