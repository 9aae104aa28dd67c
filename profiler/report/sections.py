"""HTML fragments for the report sections; every value from a run goes through `e()`.

Each function returns a string of HTML for one run. Missing data is stated in words ("n/a",
"no operator profile was captured") rather than leaving a section out, so a reader always knows
whether something was zero, absent, or not measured.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from profiler.figures.metrics import (
    format_change,
    format_figure,
    format_summary_figure,
    format_value,
    metric,
)
from profiler.report.load import RunData

PROFILE_ROWS = 30
OPERATOR_COLUMNS = (("calls", ""), ("self_cpu_s", "s"), ("total_cpu_s", "s"),
                    ("self_cuda_s", "s"), ("total_cuda_s", "s"), ("cpu_memory_bytes", "bytes"),
                    ("cuda_memory_bytes", "bytes"), ("flops", "FLOP"))
OPERATOR_HEADERS = {"calls": "Calls", "self_cpu_s": "Self CPU", "total_cpu_s": "Total CPU",
                    "self_cuda_s": "Self CUDA", "total_cuda_s": "Total CUDA",
                    "cpu_memory_bytes": "CPU memory", "cuda_memory_bytes": "CUDA memory",
                    "flops": "FLOPs"}


def e(value: object) -> str:
    return escape(str(value), quote=True)


def table(headers: list[str], rows: list[list[str]], numeric: set[int] | None = None,
          cls: str = "") -> str:
    """A table from cells that are already HTML; columns in `numeric` align right."""
    numeric = numeric or set()
    head = "".join(f'<th class="num">{h}</th>' if i in numeric else f"<th>{h}</th>"
                   for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def kv_table(rows: list[tuple[str, str]]) -> str:
    """Two columns, label and already-escaped HTML value."""
    body = "".join(f"<tr><th>{e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def badge(status: str) -> str:
    return f'<span class="badge {e(status)}">{e(status)}</span>'


def params_text(params: Any) -> str:
    if not isinstance(params, dict) or not params:
        return "—"
    return ", ".join(f"{k} = {v}" for k, v in params.items())


# --- sections --------------------------------------------------------------------------------
END_EXPLAINED = {
    "completed": "The worker finished the run and sent its summary.",
    "stopped": "The run was stopped before its last step (how it ended says by whom); the "
               "summary covers the steps done.",
    "failed": "The worker reported an error; the figures cover what was measured before it.",
    "diverged": "The loss stopped being a number and the run stopped at that step; the figures "
                "cover the steps before it.",
    "killed": "The worker was killed before it finished: no summary figures were sent, the "
              "charts show every step received before it died.",
    "crashed": "The worker exited without finishing: no summary figures were sent, the charts "
               "show every step received before it died.",
}


def how_it_ended(run: RunData) -> str:
    s = run.summary
    rows = [("Status", badge(run.status)), ("How it ended", e(run.end or "n/a"))]
    if s.get("stop_reason"):
        rows.append(("Stop reason", e(s["stop_reason"])))
    steps = s.get("steps_completed", s.get("last_step"))
    rows.append(("Steps completed", e(steps if steps is not None else "n/a")))
    if s.get("measured_steps") is not None:
        rows.append(("Measured steps", e(f"{s['measured_steps']} (after warmup)")))
    rows.append(("Samples received", e(run.samples)))
    error = s.get("error") if isinstance(s.get("error"), dict) else None
    if error:
        rows.append(("Error", f"<b>{e(error.get('kind'))}</b>: {e(error.get('message'))}"
                              f'<div class="how">hint: {e(error.get("hint"))}</div>'))
    note = END_EXPLAINED.get(run.status, "The run has no summary: it may still be running, or "
                                         "its front end stopped before recording the end.")
    return f'<p class="lead">{e(note)}</p>' + kv_table(rows)


def headline_keys(figures: dict) -> list[str]:
    """The four figures a run opens with (the report's cards, the app's headline): speed, step
    time or time to first token, quality, and the memory that matters here."""
    allocated = (figures.get("peak_torch_allocated_bytes") or {}).get("value")
    measured = isinstance(allocated, (int, float)) and not isinstance(allocated, bool) \
        and math.isfinite(allocated)
    memory = "peak_torch_allocated_bytes" if measured else "peak_rss_bytes"
    slots = (("tokens_per_s", "decode_tokens_per_s"), ("step_time_p50_s", "ttft_p50_s"),
             ("loss_val_final", "perplexity"), (memory,))  # train keys, else infer / compress
    return [next(k for k in slot if k in figures) for slot in slots
            if any(k in figures for k in slot)]


def headline_cards(run: RunData) -> str:
    """Four figures at the top: speed, step time, quality, and the memory that matters here."""
    figures = run.figures
    cards = "".join(
        f'<div class="card"><div class="card-label">{e(metric(k).label)}</div>'
        f'<div class="card-value">{e(format_summary_figure(k, figures[k]))}</div></div>'
        for k in headline_keys(figures))
    return f'<div class="cards">{cards}</div>' if cards else ""


def headline_figures(run: RunData) -> str:
    figures = run.figures
    if not figures:
        return (f'<p class="muted">n/a: this run has no summary figures '
                f"({e(run.no_figures_reason)}). The charts below show what was received.</p>")
    rows = [[e(metric(k).label), e(format_summary_figure(k, f)),
             f'<span class="how">{e(f.get("how", ""))}</span>'] for k, f in figures.items()]
    return table(["Figure", "Value", "How it was measured"], rows, {1}, "figures")


def segments_html(run: RunData) -> str:
    """A run whose techniques changed mid-run: each configuration's figures, one row each (the
    headline figures above are the last segment's)."""
    from profiler.figures.segments import table as segment_table

    found = segment_table(run.summary.get("segments"))
    if found is None:
        return ""
    headers, rows = found
    return ("<h3>Segments: the configurations the run went through</h3>"
            '<p class="muted">The headline figures are the last segment\'s; the step right after '
            "each change and the warmup steps are left out of each segment's timing.</p>"
            + table(headers, [[e(c) for c in row] for row in rows],
                    set(range(3, len(headers))), "segments"))


def contention_html(run: RunData) -> str:
    """Beside the speed figures: whether other processes shared the machine while they were
    measured (profiler.measure.contention); "" for a run recorded without the readings."""
    from profiler.figures import busy

    load, warning = busy.load_text(run.summary), busy.sentence(run.summary)
    if not load and not warning:
        return ""
    lead = (f'<p class="lead rec warning"><b>Contended machine:</b> {e(warning)}</p>'
            if warning else "")
    return lead + (f'<p class="how">Machine load during the run: {e(load)}</p>' if load else "")


def compression_html(run: RunData) -> str:
    """The compress workload's side-by-side table: original, compressed, ratio."""
    from profiler.report.recommend import compression_cells, compression_rows

    rows = compression_rows(run)
    if not rows:
        return ""
    body = []
    for key, r in rows.items():
        label, *values = compression_cells(key, r)
        body.append([e(label) + f'<div class="how">{e(r.get("how", ""))}</div>']
                    + [e(v) for v in values])
    sentence = run.summary.get("quality_loss")
    lead = f'<p class="lead"><b>Quality cost:</b> {e(sentence)}</p>' if sentence else ""
    return ("<h3>Original against compressed</h3>" + lead
            + table(["Measure", "Original", "Compressed", "Ratio"], body, {1, 2, 3})
            + "<h3>All figures</h3>")


def recommendations_html(recs: list[dict]) -> str:
    if not recs:
        return '<p class="muted">Nothing in this run\'s data called for a recommendation.</p>'
    return "".join(f'<div class="rec {e(r["severity"])}"><div class="rec-title">'
                   f'{e(r["severity"].upper())} · {e(r["title"])}</div><div>{e(r["detail"])}</div></div>'
                   for r in recs)


def techniques_html(run: RunData) -> str:
    items = run.techniques
    parts = []
    if items:
        rows = [[f'<b>{e(t.get("label") or t.get("name"))}</b><div class="how">{e(t.get("name"))}</div>',
                 e(params_text(t.get("params"))), e(t.get("report") or "")] for t in items]
        parts.append(table(["Technique", "Parameters", "What it did"], rows))
    else:
        parts.append('<p class="muted">No technique report recorded (the run did not start, or '
                     "used no technique).</p>")
    toggles = run.events_of("toggle")
    if toggles:
        rows = [[e(t.get("step", "n/a")), e(t.get("technique", "")),
                 e(params_text(t.get("params"))), e(t.get("message", ""))] for t in toggles]
        parts.append("<h3>Changed during the run</h3>"
                     + table(["Step", "Technique", "Parameters", "What it did"], rows, {0}))
    return "".join(parts)


def _prediction(run: RunData) -> dict[str, float]:
    """A predicted-memory breakdown ({part: bytes}) wherever the workload put one."""
    theory = run.summary.get("theory") if isinstance(run.summary.get("theory"), dict) else {}
    started_theory = run.run_info.get("theory") if isinstance(run.run_info.get("theory"), dict) else {}
    for candidate in (run.summary.get("predicted_memory"), run.summary.get("memory_prediction"),
                      theory.get("predicted_memory"), theory.get("memory"),
                      started_theory.get("predicted_memory"),
                      started_theory.get("predicted_memory_bytes"), started_theory.get("memory")):
        if isinstance(candidate, dict) and candidate:
            return {str(k): v for k, v in candidate.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)}
    # or as figures named predicted_<part>_bytes
    return {k[len("predicted_"):-len("_bytes")]: v for k in run.figures
            if k.startswith("predicted_") and k.endswith("_bytes")
            and (v := run.figure(k)) is not None}


PREDICTION_ORDER = ("weights", "buffers", "gradients", "optimizer_states", "activations",
                    "activations_autograd_saved", "checkpoint_inputs", "total", "traced_peak")

PREDICTION_LABELS = {"optimizer_states": "optimizer states",
                     "activations": "activations saved for backward",
                     "activations_autograd_saved": "activations (autograd saved)",
                     "checkpoint_inputs": "of which checkpoint inputs",
                     "traced_peak": "peak of the step (memory trace)"}


def theory_html(run: RunData) -> str:
    pred = _prediction(run)
    on_cuda = run.device.startswith("cuda")
    measured = {"optimizer_states": ("optimizer_state_bytes", "optimizer state tensors"),
                "gradients": ("gradient_bytes", "gradient tensors after a backward"),
                "activations": ("saved_for_backward_bytes", "saved-tensor hooks on an untimed "
                                "probe of one micro-batch"),
                "total": ("peak_torch_allocated_bytes", "peak torch allocated") if on_cuda else
                ("peak_rss_growth_bytes", "RSS added by training (approximate on CPU)")}
    measured["traced_peak"] = measured["total"]  # the trace's peak: what the allocator peaks at
    parts = [p for p in PREDICTION_ORDER if p in pred] + [p for p in pred if p not in
                                                         PREDICTION_ORDER]
    if pred.get("activations_autograd_saved") == pred.get("activations"):
        parts = [p for p in parts if p != "activations_autograd_saved"]  # the same bytes twice
    rows = []
    for part in parts or ["optimizer_states", "total"]:
        key, what = measured.get(part, (None, ""))
        value = run.figure(key) if key else None
        predicted = pred.get(part)
        diff = format_change((value - predicted) / predicted * 100
                       if value is not None and predicted else None)
        rows.append([e(PREDICTION_LABELS.get(part, part.replace("_", " "))), e(format_value(predicted, "bytes")),
                     e(format_value(value, "bytes")) + (f'<div class="how">{e(what)}</div>' if key else ""),
                     e(diff)])
    note = "" if pred else ('<p class="muted">This run\'s summary carries no memory prediction: '
                            "predicted values are n/a.</p>")
    memory = note + table(["Part", "Predicted", "Measured", "Measured vs predicted"], rows,
                          {1, 2, 3})
    flops = run.figure("flops_per_token") or (run.run_info.get("theory") or {}).get("flops_per_token")
    tps = run.figure("tokens_per_s")
    achieved = flops * tps if isinstance(flops, (int, float)) and tps is not None else None
    mfu = run.figures.get("mfu") or {}
    mfu_how = mfu.get("how") or ("n/a: no MFU in this run's summary (it has no meaning on CPU or "
                                 "for int8 / fp8)")
    flop_rows = [("FLOPs per token", e(format_value(flops, "FLOP"))),
                 ("Achieved", e(format_value(achieved, "FLOP/s")) + '<div class="how">FLOPs per token × '
                  "tokens/s over the measured steps</div>"),
                 (metric("mfu").label, e(format_figure("mfu", run.figure("mfu")))
                  + f'<div class="how">{e(mfu_how)}</div>')]
    measured_mfu = run.figures.get("mfu_measured")
    if isinstance(measured_mfu, dict):  # runs recorded before the roofline have none
        flop_rows.append((metric("mfu_measured").label,
                          e(format_figure("mfu_measured", run.figure("mfu_measured")))
                          + f'<div class="how">{e(measured_mfu.get("how") or "")}</div>'))
    return "<h3>Memory</h3>" + memory + "<h3>FLOPs</h3>" + kv_table(flop_rows)


def profile_html(run: RunData) -> str:
    if not run.profiles:
        return ('<p class="muted">No operator profile was captured in this run. Capture one with '
                "the app's Profile button, or send a <code>profile</code> command (steps: N) to "
                "the worker during a run.</p>")
    parts = []
    for prof in run.profiles:
        ops = [o for o in prof.get("operators") or [] if isinstance(o, dict)]
        cols = [(k, u) for k, u in OPERATOR_COLUMNS if any(k in o for o in ops)]
        extra = sorted({k for o in ops for k, v in o.items()
                        if k != "name" and k not in dict(OPERATOR_COLUMNS)
                        and isinstance(v, (int, float)) and not isinstance(v, bool)})
        cols += [(k, "") for k in extra]
        sort_key = next((k for k in ("self_cuda_s", "self_cpu_s") if any(o.get(k) for o in ops)),
                        None)
        if sort_key:
            ops.sort(key=lambda o: o.get(sort_key) or 0, reverse=True)
        rows = [[e(o.get("name", "?"))] + [e(format_value(o.get(k), u)) for k, u in cols]
                for o in ops[:PROFILE_ROWS]]
        more = (f'<p class="how">{len(ops) - PROFILE_ROWS} more operators are in the JSON '
                "report.</p>") if len(ops) > PROFILE_ROWS else ""
        headers = ["Operator"] + [e(OPERATOR_HEADERS.get(k) or metric(k).label) for k, _ in cols]
        order = (f"{OPERATOR_HEADERS[sort_key]} time" if sort_key else "the order recorded")
        parts.append(f"<h3>Step {e(prof.get('step', '?'))}: {len(ops)} operators, sorted by "
                     f"{e(order)}</h3>"
                     + table(headers, rows, set(range(1, len(headers)))) + more
                     + memory_snapshot_html(prof))
    return "".join(parts)


def memory_snapshot_html(prof: dict) -> str:
    """The capture's CUDA memory snapshot (its file, for pytorch.org/memory_viz) or why it has
    none; nothing when none was asked for."""
    path, note = prof.get("memory_snapshot_path"), prof.get("memory_snapshot_note")
    if isinstance(path, str) and path:
        return (f'<p class="how">CUDA memory snapshot of these steps: <code>{e(path)}</code> '
                "(drag it onto pytorch.org/memory_viz)</p>")
    if isinstance(note, str) and note:
        return f'<p class="how">{e(note)}</p>'
    return ""


def problems(run: RunData) -> list[tuple[str, str, str, str]]:
    """(kind, step, message, hint) for every warning and error the run recorded."""
    out = [(f"error: {m.get('kind', '?')}", "", str(m.get("message", "")), str(m.get("hint", "")))
           for m in run.errors]
    summary_error = run.summary.get("error")
    if isinstance(summary_error, dict) and not run.errors:
        out.append((f"error: {summary_error.get('kind')}", "", str(summary_error.get("message")),
                    str(summary_error.get("hint") or "")))
    for event in run.events_of("warning", "refused"):
        origin = " (front end)" if event.get("origin") == "front" else ""
        out.append((f"{event.get('kind')}{origin}", str(event.get("step", "")),
                    str(event.get("message", "")), ""))
    out += [("stored data", "", w, "") for w in run.load_warnings]
    return out


def problems_html(run: RunData) -> str:
    rows = problems(run)
    if not rows:
        return '<p class="muted">No warnings or errors were recorded.</p>'
    return table(["Kind", "Step", "Message", "Hint"],
                 [[e(k), e(s), e(m), e(h)] for k, s, m, h in rows], {1}, "problems")


def environment_rows(run: RunData) -> list[tuple[str, str]]:
    env = run.environment
    host, device, versions = env["host"], env["device"], env["versions"]
    gpus = [g for g in host.get("gpus") or [] if isinstance(g, dict)]
    gpu_text = "; ".join(f"{g.get('name', '?')} ({format_value(g.get('memory_total_bytes'), 'bytes')}), "
                         f"driver {g.get('driver') or 'n/a'}" for g in gpus)
    caps = run.capabilities
    rows = [
        ("Host", f"{host.get('hostname', 'n/a')} · {host.get('os', 'n/a')}"),
        ("CPU", f"{host.get('cpu', 'n/a')} ({host.get('cpu_cores_physical', '?')} cores, "
                f"{host.get('cpu_cores_logical', '?')} threads)"),
        ("Memory", format_value(host.get("memory_total_bytes"), "bytes")),
        ("GPU", gpu_text or f"none ({host.get('gpu_note') or 'n/a'})"),
        ("Device used", f"{run.device} ({device.get('name', 'n/a')})"),
    ]
    rows += [(f"{name} version", str(value if value is not None else "n/a"))
             for name, value in versions.items()]
    if "torch_threads" in device:
        rows.append(("Torch threads", str(device["torch_threads"])))
    if caps:
        rows.append(("bf16", "yes" if caps.get("bf16") else "no"))
        rows.append(("Fused optimizers", ", ".join(caps.get("fused") or []) or "none"))
        rows.append(("Optional packages", ", ".join(caps.get("packages") or []) or "none"))
    return rows


def environment_html(run: RunData) -> str:
    if not any(run.environment.values()):
        return '<p class="muted">n/a: the worker never said hello (it did not start).</p>'
    return kv_table([(k, e(v)) for k, v in environment_rows(run)])


def config_html(run: RunData) -> str:
    info = run.run_info
    model = info.get("model") or {}
    rows = [("Workload", e(run.config.get("workload") or info.get("workload") or "n/a")),
            ("Model", e(f"{model.get('preset', (run.config.get('model') or {}).get('preset', 'n/a'))}"
                        + (f", {model['parameters']:,} parameters" if isinstance(
                            model.get("parameters"), int) else ""))),
            ("Data", e(info.get("data", "n/a")))]
    if info:
        rows.append(("Batch", e(f"{info.get('batch_size')} sequences × {info.get('seq_len')} "
                                f"tokens × {info.get('micro_batches', 1)} micro-batch(es) = "
                                f"{info.get('tokens_per_step', 'n/a')} tokens per step")))
        rows.append(("Steps", e(f"{info.get('steps')} ({info.get('warmup_steps')} warmup)")))
        rows.append(("Set-up time", e(format_value(info.get("setup_time_s"), "s"))))
    text = run.config_text or "(config.toml is missing)"
    return kv_table(rows) + f'<h3>config.toml</h3><pre class="config">{e(text)}</pre>'
