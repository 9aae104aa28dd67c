"""Will it fit, in figures and on the command line: the margin band, the verdict, the largest
micro-batch, the GPUs' memory sizes, `effiscope estimate` and its cache."""

from __future__ import annotations

import json

import pytest

from profiler.cli.parser import main
from profiler.figures import memory_fit, peaks
from profiler.figures.memory_fit import GIB


def test_the_catalogue_has_memory_sizes_beside_the_rates():
    sizes = dict(memory_fit.catalogue())
    assert sizes["H100 SXM 80 GB"] > 79 * GIB
    assert sizes["H200 SXM 141 GB"] > 140 * GIB
    assert sizes["A100 40 GB"] < sizes["A100 80 GB"]
    assert sizes["RTX 4090 24 GB"] < 24 * GIB
    assert dict(memory_fit.catalogue(["4090"])) == {"RTX 4090 24 GB": sizes["RTX 4090 24 GB"]}
    assert memory_fit.catalogue(["NVIDIA A100-SXM4-40GB"])[0][0] == "A100 40 GB"
    with pytest.raises(ValueError, match="no memory size known for GPU 'Z9'"):
        memory_fit.catalogue(["Z9"])
    assert all(p.memory for p in peaks.PEAKS)


def test_the_band_is_beside_the_peak_and_decides_the_verdict():
    band = memory_fit.margin_band(10 * GIB, "cuda")
    assert band["low"] == int(0.3 * GIB) and band["high"] == int(1.0 * GIB) + GIB
    job = memory_fit.margin_band(10 * GIB, "cuda", world_size=8)
    assert job["high"] > band["high"]  # NCCL's buffers in a job
    assert memory_fit.verdict(10 * GIB, 12 * GIB, band) == "fits"
    assert memory_fit.verdict(10 * GIB, int(10.2 * GIB), band) == "does not fit"
    assert memory_fit.verdict(10 * GIB, int(11 * GIB), band) == "may fit"


def test_largest_micro_batch_from_each_phases_two_traced_peaks():
    # backward: 20 GiB fixed + 0.1 GiB per sequence; forward: 4 GiB fixed + 1 GiB per sequence.
    # At batch 2 the backward is the peak, so a line through the peaks alone would say
    # 0.1 GiB per sequence; the forward overtakes it from batch 18 on.
    points = {2: {"forward": 6 * GIB, "backward": int(20.2 * GIB)},
              4: {"forward": 8 * GIB, "backward": int(20.4 * GIB)}}
    capacity = 40 * GIB
    largest = memory_fit.largest_micro_batch(points, capacity, "cuda")

    def needs(batch: int) -> float:
        peak = max(4 * GIB + batch * GIB, 20 * GIB + batch * 0.1 * GIB)
        return peak + memory_fit.margin_band(int(peak), "cuda")["high"]

    assert needs(largest) <= capacity < needs(largest + 1)
    assert 25 < largest < 40
    assert memory_fit.largest_micro_batch(points, 20 * GIB, "cuda") == 0
    assert memory_fit.largest_micro_batch({2: points[2]}, capacity, "cuda") is None


def test_estimate_answers_and_caches(capsys):
    assert main(["estimate", "nano", "--gpu", "H100", "--gpu", "A100 40GB", "--batch-size", "1",
                 "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["cached"] is False and first["batch_size"] == 1
    assert set(first["peak_by_batch"]) == {"1", "2"}
    assert first["peak_by_batch"]["2"]["forward"] > first["peak_by_batch"]["1"]["forward"]
    assert [row["gpu"] for row in first["fits"]] == ["H100 SXM 80 GB", "A100 40 GB"]
    assert all(row["verdict"] == "fits" and row["largest_micro_batch"] > 1
               for row in first["fits"])
    assert first["peak_phase"] in ("forward", "backward", "optimizer step")
    assert main(["estimate", "nano", "--gpu", "H100", "--batch-size", "1"]) == 0
    text = capsys.readouterr().out
    assert "read from the cache" in text and "H100 SXM 80 GB" in text and "margin band" in text


@pytest.mark.parametrize("argv, says", [
    (["estimate", "nano", "--gpu", "Z9"], "no memory size known"),
    (["estimate", "nano", "--world", "0"], "--world 0"),
    (["estimate", "/nonexistent/x.toml"], "x.toml"),
])
def test_bad_input_exits_2_with_a_sentence(argv, says, capsys):
    assert main(argv) == 2
    assert says in capsys.readouterr().err


def test_a_workload_the_trace_does_not_run_exits_2(tmp_path, capsys):
    from profiler.config import resolve

    config = resolve("nano")
    config.workload = "compress"
    config.techniques["prune_magnitude"] = {}
    path = tmp_path / "c.toml"
    config.save(path)
    assert main(["estimate", str(path)]) == 2
    assert "workload = compress is not estimated" in capsys.readouterr().err


def test_this_machines_gpu_comes_first_when_no_gpu_is_named(monkeypatch, capsys):
    from profiler.measure import system

    monkeypatch.setattr(system, "gpus", lambda: [{"index": 0, "name": "NVIDIA L4",
                                                  "memory_total_bytes": 23 * GIB}])
    assert main(["estimate", "nano", "--batch-size", "1", "--peak-only", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["fits"]
    assert rows[0]["gpu"] == "here: GPU 0 NVIDIA L4" and rows[0]["memory"] == 23 * GIB
    assert rows[0]["largest_micro_batch"] is None  # --peak-only: one point, no line
    assert len(rows) == 1 + len(memory_fit.catalogue())


def test_a_runs_summary_reads_the_trace_the_estimate_made_before_it(monkeypatch):
    """The app's estimate traces a config before its run; the run's summary fills the
    activations the theory cannot give from that same trace (the cache), not a second one."""
    from profiler.config import validate
    from profiler.engine import memory_estimate, memory_trace
    from tests.hf_fixtures import hf_config

    config = validate(hf_config("llama"))
    before = memory_estimate.estimate(config, target="cpu", world_size=1, largest=False)
    traced = []
    real = memory_trace.trace
    monkeypatch.setattr(memory_trace, "trace", lambda *a, **k: traced.append(1) or real(*a, **k))
    filled = memory_estimate.fill_prediction(config, {"activations": None}, 1, "cpu")
    assert traced == []  # read from the cache
    assert filled["activations"] == before["resident"]["saved_for_backward"] > 0
