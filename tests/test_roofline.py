"""The measured roofline: its figures, its cache, MFU against it, and `effiscope roofline`."""

from __future__ import annotations

import copy
import json

import pytest

from profiler import cli
from profiler.figures.metrics import metric
from profiler.measure import roofline
from profiler.report import render
from profiler.store import RunStore
from tests.faults import write_config
from tests.helpers import run_config

TINY = {"sizes": (32, 64), "repeats": 3, "warmup": 1, "copy_bytes": 1 << 20}
"""Measurement small enough for a test (the real one saturates the machine for seconds)."""


@pytest.fixture(scope="module")
def tiny_result():
    return roofline.measure("cpu", **TINY)


@pytest.fixture
def counted(monkeypatch, tiny_result):
    """roofline.measure replaced by one that counts its calls and returns a tiny measurement
    under this machine's (possibly monkeypatched) fingerprint."""
    calls = []

    def fake(device="cpu", **kwargs):
        calls.append(device)
        result = copy.deepcopy(tiny_result)
        result["fingerprint"] = roofline.fingerprint(device)
        result["matmul"]["fp32"]["value"] = 1e9 * len(calls)  # each measurement tells itself apart
        return result

    monkeypatch.setattr(roofline, "measure", fake)
    return calls


def test_the_measured_fp32_peak_is_positive_and_a_bigger_matmul_is_in_its_range(tiny_result):
    peak = tiny_result["matmul"]["fp32"]
    assert peak["value"] > 0 and peak["unit"] == "FLOP/s"
    assert peak["distribution"]["n"] == 3
    assert peak["how"].startswith("median of 3 timed ") and "after 1 warmup," in peak["how"]
    assert "best of sizes 32, 64" in peak["how"] and peak["size"] in (32, 64)
    assert set(tiny_result["matmul"]) == {"fp32", "bf16"}
    # A bigger matmul's achieved FLOP/s: the same order of magnitude as the measured peak (a
    # unit or FLOP-count mistake would be off by 1e3 or more), never a wall-clock threshold.
    bigger = roofline._matmul_rates("cpu", "cpu", "fp32", 128, 3, 1)
    achieved = sorted(bigger)[1]
    assert peak["value"] / 30 < achieved < peak["value"] * 30
    band = tiny_result["bandwidth"]
    assert band["value"] > 0 and band["unit"] == "B/s" and "copies of a 1 MiB" in band["how"]
    assert roofline.validate(tiny_result) is None


def test_the_cache_is_written_and_read_back_without_measuring(counted, effiscope_home):
    first = roofline.get("cpu")
    assert counted == ["cpu"] and (effiscope_home / "roofline.json").is_file()
    again = roofline.get("cpu")
    assert counted == ["cpu"]  # read from the cache
    assert again == first
    stored = json.loads((effiscope_home / "roofline.json").read_text())
    assert list(stored["machines"]) == [roofline.fingerprint_key(roofline.fingerprint("cpu"))]
    assert first["matmul"]["fp32"]["value"] == 1e9
    fresh = roofline.get("cpu", remeasure=True)
    assert counted == ["cpu", "cpu"] and fresh["matmul"]["fp32"]["value"] == 2e9
    assert roofline.load("cpu")[0]["matmul"]["fp32"]["value"] == 2e9  # the cache was replaced
    assert len(json.loads((effiscope_home / "roofline.json").read_text())["machines"]) == 1
    value, how, peak = roofline.mfu_vs_measured(1000.0, 1e6, "cpu", "fp32")
    assert peak["value"] == 2e9 and value == pytest.approx(1000.0 * 1e6 / 2e9)


def test_another_fingerprint_is_measured_again_with_a_sentence(counted, monkeypatch):
    roofline.get("cpu")
    real = roofline.fingerprint
    monkeypatch.setattr(roofline, "fingerprint", lambda device="cpu": {**real(device),
                                                                       "torch": "9.9.9"})
    said = []
    roofline.get("cpu", say=said.append)
    assert len(counted) == 2
    assert "another device, torch or thread count" in said[0]
    entries = json.loads(roofline.cache_path().read_text())["machines"]
    assert len(entries) == 2  # the other machine's entry is kept
    assert roofline.load("cpu")[0]["matmul"]["fp32"]["value"] == 2e9  # not the first machine's
    roofline.get("cpu")
    assert len(counted) == 2


@pytest.mark.parametrize("damage", ["{not json", "[1, 2]", "bad-entry", "negative-peak"])
def test_a_damaged_cache_is_measured_again_never_a_crash(counted, damage):
    roofline.get("cpu")
    path = roofline.cache_path()
    if damage in ("bad-entry", "negative-peak"):
        data = json.loads(path.read_text())
        key = next(iter(data["machines"]))
        if damage == "bad-entry":
            data["machines"][key] = {"schema": 1, "matmul": "fast"}
        else:
            data["machines"][key]["matmul"]["fp32"]["value"] = -5
        path.write_text(json.dumps(data))
    else:
        path.write_text(damage)
    value, how, _ = roofline.mfu_vs_measured(1000.0, 1e6, "cpu", "fp32")
    assert value is None and "damaged" in how and "effiscope roofline" in how
    said = []
    result = roofline.get("cpu", say=said.append)
    assert len(counted) == 2 and "damaged" in said[0] and "measuring again" in said[0]
    assert roofline.validate(result) is None
    assert roofline.load("cpu")[0] == result  # the file is whole again


def test_mfu_without_a_measured_peak_says_how_to_get_one():
    value, how, peak = roofline.mfu_vs_measured(1000.0, 1e6, "cpu", "fp32")
    assert value is None and peak is None
    assert how == ("n/a — no measured roofline for this machine yet: run `effiscope roofline` "
                   "to measure this machine's peak")


def test_a_cpu_run_gets_mfu_against_the_measured_peak(tiny_result, tmp_path, capsys):
    planted = copy.deepcopy(tiny_result)
    planted["matmul"]["fp32"]["value"] = 2.5e10  # a peak the test knows
    roofline.save(planted)
    code = cli.main(["run", str(write_config(tmp_path / "run.toml", run_config(steps=8, data="random")))])
    out = capsys.readouterr().out
    assert code == 0
    store = RunStore()
    run_id = store.list_runs()[0]["id"]
    summary = store.open_run(run_id).summary()
    figures = summary["figures"]
    achieved = figures["tokens_per_s"]["value"] * figures["flops_per_token"]["value"]
    assert figures["mfu_measured"]["value"] == pytest.approx(achieved / 2.5e10, rel=1e-9)
    assert figures["mfu"]["value"] is None  # no datasheet peak for a CPU
    assert "measured fp32 peak of this machine: median of 3 timed" in figures["mfu_measured"]["how"]
    assert figures["measured_peak_flops"]["value"] == 2.5e10
    assert "mfu_measured" in out and "measured fp32 peak" in out  # the CLI summary
    assert metric("mfu_measured").label == "MFU (vs measured peak)"
    html = render([run_id], "html", store)
    assert "MFU (vs measured peak)" in html and "MFU (vs datasheet peak)" in html


def test_the_cli_prints_the_peaks_with_their_method(counted, capsys):
    assert cli.main(["roofline", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "fp32 matmul" in out and "bf16 matmul" in out and "bandwidth" in out
    assert "median of 3 timed" in out and "FLOP/s (" in out and "measured now" in out
    assert cli.main(["roofline", "--device", "cpu", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cached"] is True and data["matmul"]["fp32"]["value"] > 0
    assert counted == ["cpu"]
    assert cli.main(["roofline", "--device", "tpu"]) == 2
    assert "cpu or cuda" in capsys.readouterr().err


def test_the_method_sentence_counts_in_the_right_number():
    one = roofline.measure("cpu", sizes=(16,), repeats=1, warmup=1, copy_bytes=1 << 16,
                           dtypes=("fp32",))
    assert "median of 1 timed 16x16 fp32 matmul after 1 warmup," in one["matmul"]["fp32"]["how"]
    assert "median of 1 timed copy of a" in one["bandwidth"]["how"]
    assert "after 1 warmup (" in one["bandwidth"]["how"]
    two = roofline.measure("cpu", sizes=(16,), repeats=2, warmup=2, copy_bytes=1 << 16,
                           dtypes=("fp32",))
    assert "median of 2 timed 16x16 fp32 matmuls after 2 warmups," in two["matmul"]["fp32"]["how"]
    assert "2 timed copies" in two["bandwidth"]["how"]
