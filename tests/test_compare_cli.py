"""`effiscope compare` and the reports give the app's verdict: a delta is "significant" only
outside the noise of both runs (profiler.significance), "within noise" otherwise."""

from __future__ import annotations

import json

from profiler import cli, significance
from profiler.report import render
from profiler.report.load import load_run
from profiler.store import RunStore
from tests.helpers import noisy_run


def throughput_line(out: str) -> str:
    return next(line for line in out.splitlines() if line.strip().startswith("Throughput"))


def test_compare_prints_within_noise_for_the_same_distribution(capsys):
    store = RunStore()
    base, again = noisy_run(store, "base", 1000, 1), noisy_run(store, "again", 1000, 2)
    assert cli.main(["compare", again, "--baseline", base]) == 0
    out = capsys.readouterr().out
    line = throughput_line(out)
    assert "within noise" in line and "significant" not in line
    assert f"baseline: base ({base})" in out


def test_compare_prints_worse_for_a_slowed_run(capsys):
    store = RunStore()
    base, slow = noisy_run(store, "base", 1000, 3), noisy_run(store, "slow", 800, 4)
    assert cli.main(["compare", base, slow]) == 0  # the first run is the baseline
    out = capsys.readouterr().out
    line = throughput_line(out)
    assert "significant: worse" in line and "%" in line
    step = next(x for x in out.splitlines() if x.strip().startswith("Step time"))
    assert "significant: worse" in step  # longer steps are worse too
    assert cli.main(["compare", base, slow, "--json"]) == 0
    rows = {r["key"]: r for r in json.loads(capsys.readouterr().out)["deltas"]}
    assert [c["verdict"] for c in rows["tokens_per_s"]["cells"]] == [None, "worse"]
    assert rows["tokens_per_s"]["cells"][1]["change_pct"] < -10


def test_compare_needs_two_runs_and_known_ids(capsys):
    store = RunStore()
    base = noisy_run(store, "base", 1000, 5)
    assert cli.main(["compare", base]) == 2
    assert "two or more different runs" in capsys.readouterr().err
    assert cli.main(["compare", base, "--baseline", "no-such-run"]) == 2
    assert "no-such-run" in capsys.readouterr().err


def test_reports_and_app_share_one_verdict():
    """The app judges a StoredRun, the reports a loaded RunData: the same verdict either way."""
    store = RunStore()
    base, slow = noisy_run(store, "base", 1000, 6), noisy_run(store, "slow", 900, 7)
    stored = [store.open_run(r) for r in (base, slow)]
    loaded = [load_run(r) for r in stored]
    for key in ("tokens_per_s", "step_time_p50_s"):
        better = "higher" if key == "tokens_per_s" else "lower"
        app = significance.judge_runs(key, better, *stored)
        report = significance.judge_runs(key, better, *loaded)
        assert app["verdict"] == report["verdict"] == "worse"  # a planted 10 % slowdown
        assert app["p_value"] == report["p_value"]


def test_html_and_markdown_grey_within_noise_and_colour_significant_deltas():
    store = RunStore()
    base, again = noisy_run(store, "base", 1000, 8), noisy_run(store, "again", 1000, 9)
    slow = noisy_run(store, "slow", 800, 10)
    html = render([base, again], "html", store)
    table = html[html.index("Deltas against the baseline"):]
    throughput = table[table.index("Throughput"):table.index("</tr>", table.index("Throughput"))]
    assert 'class="noise"' in throughput and "(within noise)" in throughput
    assert 'class="better"' not in throughput and 'class="worse"' not in throughput
    html = render([base, slow], "html", store)
    table = html[html.index("Deltas against the baseline"):]
    throughput = table[table.index("Throughput"):table.index("</tr>", table.index("Throughput"))]
    assert 'class="worse"' in throughput and "within noise" not in throughput
    md = render([base, again], "md", store)
    assert "(within noise)" in next(x for x in md.splitlines() if x.startswith("| Throughput"))
    md = render([base, slow], "md", store)
    assert "(significant: worse)" in next(x for x in md.splitlines()
                                          if x.startswith("| Throughput"))


def toggled_run(store, name: str, before: float, after: float, seed: int) -> str:
    """40 measured steps: `before` tokens/s until a toggle at step 21, `after` from there; the
    summary's segments say so (its headline is the last segment)."""
    import random

    from tests.helpers import stored_run

    rng = random.Random(seed)
    messages = [{"type": "hello", "protocol": 1, "versions": {}, "device": {}, "environment": {}},
                {"type": "started", "run": {"workload": "train", "device": "cpu", "steps": 40}}]
    late = []
    for step in range(1, 41):
        value = (before if step < 21 else after) * rng.lognormvariate(0, 0.05)
        if step >= 22:
            late.append(value)
        messages.append({"type": "sample", "step": step, "time": step * 0.1, "phase": "measure",
                         "metrics": {"tokens_per_s": value, "step_time_s": 256 / value}})
    median = sorted(late)[len(late) // 2]
    messages.append({"type": "done", "status": "completed", "summary": {
        "figures": {"tokens_per_s": {"value": median, "unit": "tokens/s", "how": "median"}},
        "segments": [{"index": 0, "start_step": 1, "end_step": 20, "timed_from": 1},
                     {"index": 1, "start_step": 21, "end_step": 40, "timed_from": 22}]}})
    return stored_run(store, name, messages)


def test_a_toggled_run_is_judged_on_its_headline_segment_only():
    """A run that went 1,000 -> 1,500 tokens/s mid-run has the headline 1,500: against a plain
    1,500 run that is within noise, not a slowdown from mixing in the first configuration."""
    store = RunStore()
    plain, toggled = noisy_run(store, "plain", 1500, 11), toggled_run(store, "t", 1000, 1500, 12)
    samples = significance.run_samples(store.open_run(toggled))["tokens_per_s"]
    assert len(samples) == 19 and min(samples) > 1200  # steps 22..40 only
    loaded = significance.run_samples(load_run(store.open_run(toggled)))["tokens_per_s"]
    assert sorted(loaded) == sorted(samples)
    verdict = significance.judge_runs("tokens_per_s", "higher", store.open_run(plain),
                                      store.open_run(toggled))
    assert verdict["verdict"] == "within noise"
