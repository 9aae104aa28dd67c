"""`effiscope bench overhead`: the reference loop does exactly the worker's work (the same loss
at every step and every validation), and each cost is reported as a ratio with its verdict."""

from __future__ import annotations

import json

import pytest

from profiler.bench import overhead
from tests.helpers import nano_config


@pytest.mark.slow
def test_reference_loop_and_worker_train_the_same_curve(tmp_path, capsys):
    from profiler.cli import main

    config = nano_config(steps=6, batch_size=2, seq_len=16, eval_interval=3)
    config.techniques = {"grad_clip": {"max_norm": 1.0}}  # a technique: the engine is shared too
    path = tmp_path / "tiny.toml"
    config.save(path)
    code = main(["bench", "overhead", str(path), "--steps", "6", "--warmup", "2", "--repeats", "1",
                 "--profile-steps", "2", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    candidates = report["comparison"]["candidates"]
    reference = candidates["reference loop"]["measurements"][0]
    worker = candidates["EffiScope worker"]["measurements"][0]
    assert len(reference["losses"]) == 6 and reference["losses"] == worker["losses"]
    assert [s for s, _ in reference["val_losses"]] == [0, 3, 6]
    assert reference["val_losses"] == worker["val_losses"]
    assert report["loss_curves"]["equal"] is True and report["loss_curves"]["compared"] == 5
    assert report["threads"]["worker"] == report["threads"]["reference"]
    for key in ("worker_vs_reference", "sampler_default_vs_reference",
                "sampler_10hz_vs_reference", "profile_capture_window_vs_reference"):
        assert report[key]["ratio"] > 0
        assert report[key]["verdict"].startswith("n/a")  # one round: no interval claimed
    assert "0.2 s, default" in " ".join(candidates)


def test_a_different_curve_is_reported_as_unequal():
    first = {"losses": [3.0, 2.9], "val_losses": [[0, 3.1]]}
    other = {"losses": [3.0, 2.8], "val_losses": [[0, 3.1]]}
    result = {"baseline": "reference loop", "candidates": {
        "reference loop": {"measurements": [first]},
        "EffiScope worker": {"measurements": [other]}}}
    check = overhead.loss_check(result)
    assert check["equal"] is False and check["unequal"] == ["EffiScope worker #1"]
