"""Reports: every format written and read back, comparisons, escaping, broken runs, Chromium.

Most runs are synthesized through RunStore + RunRecorder.handle_line with hand-written protocol
lines (cheap and exact); one real nano run checks the whole path end to end.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from profiler import cli
from profiler.figures.stats import figure
from profiler.report import ReportError, compare, export, render
from profiler.report.html import COMPARISON_SECTIONS, RUN_SECTIONS
from profiler.report.svg import Chart, Line, decimate, nice_ticks
from profiler.report.svg import render as render_svg
from profiler.report.tidy import CSV_COLUMNS, SCHEMA_ID, SCHEMA_PATH
from profiler.store import RunStore
from profiler.wire.client import worker_env
from tests.helpers import run_config, synth_run

GPU_KEYS = ("gpu_memory_used_bytes", "gpu_process_memory_bytes", "torch_allocated_bytes")


def stream_points(store: RunStore, run_id: str) -> int:
    run = store.open_run(run_id)
    return sum(len(m["metrics"]) for m in run.messages() if m["type"] == "sample")


def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


# --- formats written and read back -------------------------------------------------------------
def test_json_validates_and_keeps_every_reading(tmp_path):
    import jsonschema

    store = RunStore()
    run_id = synth_run(store, toggle_at=12, profile=True)
    out = export([run_id], "json", tmp_path / "r.json", store=store)
    doc = json.loads(out.read_text(encoding="utf-8"))
    jsonschema.validate(doc, schema())
    assert doc["schema"] == SCHEMA_ID and doc["comparison"] is None
    run = doc["runs"][0]
    assert run["points"] == stream_points(store, run_id)
    assert sum(len(s["value"]) for s in run["series"].values()) == run["points"]
    loss = run["series"]["loss_train"]
    assert loss["step"] == list(range(1, 31)) and len(loss["value"]) == 30  # nothing decimated
    assert run["series"]["gpu_memory_used_bytes"]["value"][0] is None  # a gap stays a gap
    assert run["profiles"][0]["operators"][0]["name"] == "aten::mm"
    assert [e["kind"] for e in run["events"] if e["kind"] == "toggle"] == ["toggle"]


def test_csv_is_tidy_with_one_row_per_reading(tmp_path):
    store = RunStore()
    run_id = synth_run(store)
    out = export([run_id], "csv", tmp_path / "r.csv", store=store)
    with out.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    assert len(rows) == stream_points(store, run_id)
    first = next(r for r in rows if r["metric"] == "tokens_per_s")
    assert first["unit"] == "tokens/s" and float(first["value"]) > 0 and first["phase"] == "warmup"
    missing = [r for r in rows if r["metric"] == "grad_norm"]
    assert missing and all(r["value"] == "" for r in missing)  # pandas reads these as NaN
    assert {r["run"] for r in rows} == {run_id}


def test_html_has_every_section_and_no_external_reference(tmp_path):
    store = RunStore()
    run_id = synth_run(store, device="cuda:0", toggle_at=12, profile=True, val_gap_growth=0.2,
                       stall_at=20)
    text = export([run_id], "html", tmp_path / "r.html", store=store).read_text(encoding="utf-8")
    for title in RUN_SECTIONS:
        assert f">{title}</h2>" in text, title
    assert "<script" not in text.lower()
    assert "http://" not in text and "https://" not in text
    assert all(ref.startswith("#") for ref in re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', text))
    assert text.count("<svg") >= 4 and "NVIDIA H100" in text and "driver 550.54" in text
    assert "precision dtype=bf16" in text          # the toggle marker on the charts
    assert "aten::&lt;lambda&gt;&amp;co" in text    # operator names escaped
    assert "&lt;b&gt;check&lt;/b&gt;" in text      # warning text escaped
    # Recommendations drawn from the data: a widening gap, a stall; bf16 was switched on at
    # step 12, so no advice to use it. A run that stays in fp32 on a bf16 GPU gets that advice.
    assert "overfitting risk" in text and "long tail (stalls)" in text
    assert "bf16 mixed precision is available but unused" not in text
    fp32 = render([synth_run(store, device="cuda:0", steps=12)], "html", store)
    assert "bf16 mixed precision is available but unused" in fp32
    assert "overfitting risk" not in fp32 and "long tail" not in fp32


def test_markdown_has_headline_table_and_techniques(tmp_path):
    store = RunStore()
    run_id = synth_run(store, name="pipe|name")
    text = export([run_id], "md", tmp_path / "r.md", store=store).read_text(encoding="utf-8")
    assert "| Throughput |" in text and "tokens/s" in text
    assert "**Optimizer**" in text and "pipe\\|name" in text
    assert "&lt;b&gt;check&lt;/b&gt;" in text


def test_script_name_is_text_never_markup(tmp_path):
    store = RunStore()
    evil = "<script>alert(1)</script>"
    base = synth_run(store, name=evil)
    other = synth_run(store, name="other")
    for run_ids in ([base], [base, other]):
        text = render(run_ids, "html", store)
        assert "<script" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<script" not in render([base, other], "md", store)


def test_prediction_mfu_and_compression_are_shown_when_present():
    store = RunStore()
    extra = {"predicted_memory": {"weights": 3_435_520, "optimizer_states": 6_000_000,
                                  "total": 20_000_000, "traced_peak": 25_000_000,
                                  "traced_peak_phase": "backward"},
             "comparison": [{"key": "perplexity", "label": "Perplexity", "unit": "",
                             "baseline": 100.0, "compressed": 112.0, "ratio": 1.12, "how": "x"},
                            {"key": "model_bytes", "label": "Weights in memory", "unit": "bytes",
                             "baseline": 4e6, "compressed": 1e6, "ratio": 0.25, "how": "y"}],
             "quality_loss": "Perplexity rose from 100 to 112 (+12.0 %)."}
    run_id = synth_run(store, steps=8, extra_summary=extra)
    summary_path = store.open_run(run_id).path / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["figures"]["mfu"] = figure(0.4213, "", "tokens/s × FLOPs ÷ 989 TFLOP/s (H100 bf16)")
    summary_path.write_text(json.dumps(summary))
    html = render([run_id], "html", store)
    assert "+14.5 %" in html  # measured optimizer state 6,871,040 B against 6,000,000 predicted
    assert "peak of the step (memory trace)" in html  # an HF model's traced peak has its row
    assert "42.1 %" in html and "989 TFLOP/s" in html
    assert "Original against compressed" in html and "Perplexity rose from 100 to 112" in html
    assert "Quality cost of the compression" in html and "+12.0 %" in html
    assert "Quality cost" in render([run_id], "md", store)


# --- comparisons -----------------------------------------------------------------------------
def test_comparison_deltas_equal_the_summaries(tmp_path):
    import jsonschema

    store = RunStore()
    base = synth_run(store, name="fp32", tokens_per_s=1000.0)
    fast = synth_run(store, name="bf16", tokens_per_s=1500.0, precision="bf16")
    doc = json.loads(export([fast], "json", tmp_path / "c.json", store=store,
                            baseline=base).read_text(encoding="utf-8"))
    jsonschema.validate(doc, schema())
    assert [r["run_id"] for r in doc["runs"]] == [base, fast]  # the baseline joins the runs
    comp = doc["comparison"]
    assert comp["baseline"] == base
    figures = {r["run_id"]: r["summary"]["figures"] for r in doc["runs"]}
    rows = {row["key"]: row for row in comp["deltas"]}
    for key in ("tokens_per_s", "step_time_p50_s", "peak_rss_bytes", "loss_train_final",
                "loss_val_final"):
        b, f = figures[base][key]["value"], figures[fast][key]["value"]
        cell = next(c for c in rows[key]["cells"] if c["run"] == fast)
        assert rows[key]["baseline"] == b and cell["value"] == f
        assert cell["delta"] == pytest.approx(f - b)
        assert cell["change_pct"] == pytest.approx((f - b) / abs(b) * 100)
    assert rows["tokens_per_s"]["cells"][1]["change_pct"] == pytest.approx(50.0, rel=1e-3)
    ppl = next(c for c in rows["perplexity"]["cells"] if c["run"] == fast)
    assert ppl["value"] == pytest.approx(math.exp(figures[fast]["loss_val_final"]["value"]))
    # A run's name is no setting (the runs are shown by their current names): nothing differs.
    assert comp["config_diff"]["keys"] == [] and comp["config_diff"]["unified"][0]["diff"] == ""
    assert comp["machine"][base] == {"busy": False, "text": compare.machine({})["text"]}

    html = render([base, fast], "html", store)
    for title in COMPARISON_SECTIONS:
        assert f">{title}</h2>" in html, title
    assert "+50.0 %" in html and "fp32 · Validation loss" in html
    md = render([base, fast], "md", store)
    assert "| Throughput |" in md and "+50.0 %" in md and "## Config differences" in md


# --- broken runs still render ------------------------------------------------------------------
@pytest.mark.parametrize("end, status, words", [
    ("killed", "killed", "killed (exit code -9) before it finished"),
    ("failed", "failed", "CUDA out of memory at step 30"),
])
def test_killed_and_failed_runs_render_how_they_ended(tmp_path, end, status, words):
    import jsonschema

    store = RunStore()
    run_id = synth_run(store, end=end, steps=12)
    html = render([run_id], "html", store)
    assert f'class="badge {status}"' in html and words in html
    for title in RUN_SECTIONS:
        assert f">{title}</h2>" in html
    jsonschema.validate(json.loads(render([run_id], "json", store)), schema())
    assert status in render([run_id], "md", store)


def test_a_run_without_figures_says_why():
    """A run stopped within its warmup sent a summary without figures: the report says so, and
    says "never sent" only of a run whose worker sent no summary."""
    store = RunStore()
    stopped = render([synth_run(store, steps=2)], "md", store)
    assert ("No summary figures: it ended after 2 steps, all within its 2 warmup steps, so no "
            "step was measured.") in stopped and "never sent" not in stopped
    html = render([synth_run(store, steps=2)], "html", store)
    assert "no summary figures (it ended after 2 steps, all within its 2 warmup" in html
    killed = render([synth_run(store, steps=2, end="killed")], "md", store)
    assert "No summary figures: the worker never sent its summary." in killed


def test_damaged_stream_and_missing_summary_still_render():
    store = RunStore()
    run = store.create_run(run_config(5))
    with run.stream_path.open("a", encoding="utf-8") as fh:
        fh.write('{"type":"sample","step":1,"time":0.1,"metrics":{"loss_train":4.0}}\n{broken\n')
    html = render([run.run_id], "html", store)
    assert "line 2 is damaged" in html and "no summary.json" in html


# --- traces, CLI, API boundaries -----------------------------------------------------------------
def test_trace_is_exported_gzipped_or_explained(tmp_path):
    store = RunStore()
    run_id = synth_run(store, steps=5)
    with pytest.raises(ReportError, match="no torch.profiler trace; capture one"):
        export([run_id], "trace", tmp_path, store=store)
    trace = {"traceEvents": [{"name": "aten::mm", "ph": "X", "ts": 1, "dur": 2, "pid": 1, "tid": 1}]}
    (store.open_run(run_id).path / "trace.json").write_text(json.dumps(trace), encoding="utf-8")
    out = export([run_id], "trace", tmp_path, store=store)
    assert out.name.endswith(".trace.json.gz")
    with gzip.open(out, "rt", encoding="utf-8") as fh:
        assert json.load(fh) == trace


def test_cli_report_writes_each_format(tmp_path, capsys, monkeypatch):
    store = RunStore()
    a, b = synth_run(store, name="a", steps=8), synth_run(store, name="b", steps=8)
    for fmt in ("html", "json", "csv", "md"):
        assert cli.main(["report", a, "--format", fmt, "--out", str(tmp_path / f"a.{fmt}")]) == 0
        assert (tmp_path / f"a.{fmt}").stat().st_size > 0
    assert cli.main(["report", a, b, "--baseline", b, "--out", str(tmp_path / "ab.html")]) == 0
    assert ">Deltas against the baseline</h2>" in (tmp_path / "ab.html").read_text()
    monkeypatch.chdir(tmp_path)
    assert cli.main(["report", a[:17], "--format", "json"]) == 0  # a prefix; default file name
    assert (tmp_path / f"{a}.json").exists()
    assert cli.main(["report", a, "--format", "md", "--out", "-"]) == 0
    assert "# EffiScope report" in capsys.readouterr().out
    assert cli.main(["report", "no-such-run", "--out", str(tmp_path / "x.html")]) == 2
    assert "no run 'no-such-run'" in capsys.readouterr().err
    assert cli.main(["report", a, "--format", "trace", "--out", str(tmp_path / "t.gz")]) == 2


def test_report_package_imports_neither_torch_nor_qt(tmp_path):
    store = RunStore()
    run_id = synth_run(store, steps=5)
    code = ("import sys; from profiler.report import export; from profiler.store import RunStore; "
            f"export([{run_id!r}], 'html', {str(tmp_path / 'r.html')!r}, store=RunStore()); "
            "bad = [m for m in ('torch', 'PySide6', 'pyqtgraph') if m in sys.modules]; "
            "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ}, timeout=60)
    assert result.returncode == 0, result.stderr


# --- the SVG renderer ----------------------------------------------------------------------------
def test_svg_draws_gaps_bands_and_escapes():
    chart = Chart("Loss <x>", "nats/token",
                  [Line("train", [(1, 3.0), (2, 2.5), (3, None), (4, 2.0), (5, 1.8)])])
    svg = render_svg(chart)
    assert svg.count("<polyline") == 2 and "Loss &lt;x&gt;" in svg
    assert "no readings" in render_svg(Chart("Empty", "s", [Line("x", [(1, None)])]))
    points = [(i, float(i % 7)) for i in range(10_000)]
    reduced = decimate(points, 100)
    assert len(reduced) <= 200 and max(y for _, y in reduced) == 6.0
    assert nice_ticks(0, 15, 6, integer=True) == [0, 5, 10, 15]


# --- Chromium and one real run -------------------------------------------------------------------
def chromium() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium")
                                         else None)
    if found:
        return found
    message = ("Debian's chromium is not installed: test.sh installs it as root "
               "(scripts/install_chromium.sh); otherwise run `apt-get install chromium`")
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def open_in_chromium(page: Path, work: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-extensions", f"--user-data-dir={work / 'profile'}",
            # Nothing leaves this machine even if a request were made; the net log still shows it.
            "--host-resolver-rules=MAP * ~NOTFOUND", *extra, page.as_uri()]
    return subprocess.run(args, capture_output=True, text=True, timeout=90)


def page_requests(net_log: Path) -> list[str]:
    """URLs the page itself asked for (the browser's own update checks are not the page's)."""
    log = json.loads(net_log.read_text(encoding="utf-8"))
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [e["params"]["url"] for e in log["events"]
            if e["type"] == start and "file://" in e["params"].get("network_isolation_key", "")
            and not e["params"]["url"].startswith("file:")]


def chromium_findings(page: Path, work: Path) -> tuple[list[str], list[str]]:
    """Open the page twice: a screenshot, then the DOM with console logging and a net log.
    Returns (console lines, URLs the page requested)."""
    work.mkdir(exist_ok=True)
    shot = work / "shot.png"
    result = open_in_chromium(page, work, f"--screenshot={shot}", "--window-size=1200,3000")
    assert shot.exists() and shot.stat().st_size > 5_000, result.stderr[-2000:]
    net = work / "net.json"
    result = open_in_chromium(page, work, "--enable-logging=stderr", "--v=0", "--dump-dom",
                              f"--log-net-log={net}")
    assert "</section>" in result.stdout, result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return console, page_requests(net)


@pytest.mark.slow
def test_real_run_report_opens_in_headless_chromium(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "profiler.cli", "run", "nano", "--steps", "15", "--batch-size", "4",
         "--seq-len", "64", "--warmup", "2", "--name", "<script>alert(1)</script>"],
        capture_output=True, text=True, env={**worker_env(), **os.environ}, timeout=240)
    assert result.returncode == 0, result.stderr
    store = RunStore()
    run_id = store.run_ids()[0]
    (tmp_path / "out").mkdir()
    paths = {fmt: export([run_id], fmt, tmp_path / "out", store=store)  # a folder: default names
             for fmt in ("html", "json", "csv", "md")}
    assert paths["html"].name == f"{run_id}.html"
    html = paths["html"].read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script" not in html
    for title in RUN_SECTIONS:
        assert f">{title}</h2>" in html
    with paths["csv"].open(newline="", encoding="utf-8") as fh:
        assert sum(1 for _ in csv.DictReader(fh)) == stream_points(store, run_id)
    import jsonschema

    doc = json.loads(paths["json"].read_text(encoding="utf-8"))
    jsonschema.validate(doc, schema())
    assert len(doc["runs"][0]["series"]["loss_train"]["value"]) == 15
    assert chromium_findings(paths["html"], tmp_path / "chromium") == ([], [])

    # The checks can fail: a page with a console error and an outside request is caught.
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img src="https://example.invalid/x.png"><section></section>'
                   "<script>console.error('boom')</script></body></html>", encoding="utf-8")
    console, requests = chromium_findings(bad, tmp_path / "bad")
    assert any("boom" in line for line in console)
    assert requests == ["https://example.invalid/x.png"]
