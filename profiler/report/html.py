"""Self-contained HTML reports: one file, inline CSS and SVG, no script, no external URL.

Every string that came from a run (names, messages, config, operator names) is escaped, so a
run named `<script>…</script>` shows as text. Links are in-page anchors only.
"""

from __future__ import annotations

import time

from profiler import __version__
from profiler.figures import significance
from profiler.figures.metrics import format_change, format_delta, format_value
from profiler.report import charts, compare, sections
from profiler.report.load import RunData
from profiler.report.recommend import recommendations
from profiler.report.sections import badge, e, table
from profiler.report.svg import render

RUN_SECTIONS = ("How the run ended", "Headline figures", "Recommendations", "Charts",
                "Techniques", "Predicted and measured", "Operator profile", "Warnings and errors",
                "Environment", "Configuration")
COMPARISON_SECTIONS = ("Runs", "Deltas against the baseline", "Charts", "Configuration diff",
                       "Techniques", "Recommendations", "Warnings and errors", "Environment")

CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f3f4f6;color:#111827;font:14px/1.5 system-ui,-apple-system,"Segoe UI",
Roboto,"Helvetica Neue",Arial,"Noto Sans","Liberation Sans",sans-serif}
main{max-width:1160px;margin:0 auto;padding:28px 36px 64px;background:#fff;min-height:100vh}
header{border-bottom:2px solid #111827;padding-bottom:14px;margin-bottom:8px}
h1{font-size:24px;margin:0 0 4px;word-break:break-word}
h2{font-size:18px;margin:36px 0 12px;padding-bottom:5px;border-bottom:1px solid #e5e7eb}
h3{font-size:14px;margin:20px 0 8px;color:#374151}
.sub{color:#4b5563;font-size:13px}.sub code{font-size:12px}
nav{margin:10px 0 0;font-size:12.5px}nav a{color:#2563eb;text-decoration:none;margin-right:14px;white-space:nowrap;
display:inline-block}
table{border-collapse:collapse;width:100%;font-size:13px;margin:4px 0 8px}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #e5e7eb;vertical-align:top}
thead th{background:#f9fafb;color:#374151;font-weight:600;border-bottom:1px solid #d1d5db}
table.kv th{width:210px;color:#4b5563;font-weight:500;background:none}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.figures td:first-child{width:27%}
.how{color:#6b7280;font-size:12px}.muted{color:#6b7280}.lead{margin:0 0 8px}
.badge{display:inline-block;padding:1px 10px;border-radius:10px;font-weight:600;font-size:12px;
background:#fef3c7;color:#92400e}
.badge.completed{background:#dcfce7;color:#166534}.badge.stopped{background:#e0e7ff;color:#3730a3}
.badge.failed,.badge.killed,.badge.crashed{background:#fee2e2;color:#991b1b}
.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:12px;margin:18px 0 4px}
.card{border:1px solid #e5e7eb;border-radius:8px;padding:10px 14px}
.card-label{font-size:12px;color:#6b7280}.card-value{font-size:20px;font-weight:600;
font-variant-numeric:tabular-nums}
.charts{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:18px 22px}
figure{margin:0}figcaption{font-size:12px;color:#6b7280}
svg.chart{width:100%;height:auto;font-family:inherit}
svg .tick{font-size:10px;fill:#6b7280}svg .axis-label{font-size:10.5px;fill:#4b5563}
svg .chart-title{font-size:13px;font-weight:600;fill:#111827}svg .legend{font-size:11px;fill:#374151}
svg .grid{stroke:#eef0f3}svg .frame{fill:none;stroke:#d1d5db}svg .axis{stroke:#9ca3af}
svg .band{fill:#f3f4f6}svg .band-label{font-size:10px;fill:#9ca3af}
svg .marker{stroke-dasharray:4 3;stroke-width:1.3}svg .marker-label{font-size:10px}
svg .empty{font-size:12px;fill:#9ca3af}
pre{background:#f9fafb;border:1px solid #e5e7eb;border-radius:6px;padding:10px 12px;
font-size:12px;overflow:auto;white-space:pre-wrap;word-break:break-word}
.diff .add{color:#166534;background:#f0fdf4;display:block}
.diff .del{color:#991b1b;background:#fef2f2;display:block}.diff .hunk{color:#6b7280;display:block}
.rec{border-left:4px solid #2563eb;background:#eff6ff;padding:8px 12px;margin:8px 0;border-radius:4px}
.rec.warning{border-left-color:#d97706;background:#fffbeb}.rec-title{font-weight:600}
.better{color:#166534}.worse{color:#991b1b}.noise{color:#6b7280}.busy{color:#b45309}
footer{margin-top:40px;color:#9ca3af;font-size:12px}
@media print{body{background:#fff}main{padding:0}}
"""


def _page(title: str, header: str, body: list[tuple[str, str]]) -> str:
    nav = "".join(f'<a href="#{_anchor(t)}">{e(t)}</a>' for t, _ in body)
    content = "".join(f'<section id="{_anchor(t)}"><h2>{e(t)}</h2>{html}</section>'
                      for t, html in body)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{e(title)}</title><style>{CSS}</style></head><body><main>"
            f"<header>{header}<nav>{nav}</nav></header>{content}"
            f"<footer>Generated by EffiScope {e(__version__)} on {e(stamp)} from the run store; "
            "the JSON report (effiscope report --format json) holds every reading.</footer>"
            "</main></body></html>\n")


def _anchor(title: str) -> str:
    return title.lower().replace(" ", "-")


def _chart_grid(figures: list[tuple[str, str]]) -> str:
    cells = "".join(f"<figure>{svg}<figcaption>{caption}</figcaption></figure>"
                    for svg, caption in figures)
    return f'<div class="charts">{cells}</div>'


def _run_charts(run: RunData) -> str:
    figures = []
    for spec in charts.chart_specs([run]):
        chart = charts.run_chart(run, spec)
        missing = [run.series[k].label for k in charts.missing_keys(run, spec)]
        if not chart.lines and not missing:
            continue
        caption = e(f"n/a (no readings): {', '.join(missing)}") if missing else ""
        figures.append((render(chart), caption))
    legend = ('<p class="how">Shaded: warmup and compile steps, left out of the summary figures. '
              "Dashed vertical lines: techniques changed mid-run. A gap in a line is a missing "
              "reading.</p>")
    return legend + _chart_grid(figures)


def render_run(run: RunData) -> str:
    """The one-run report."""
    sub = (f'<div class="sub">run <code>{e(run.run_id)}</code> · {e(run.meta.get("created", ""))} '
           f"· {e(run.config.get('workload', 'n/a'))} on {e(run.device)} · {badge(run.status)}</div>")
    header = f"<h1>{e(run.name)}</h1>{sub}{sections.headline_cards(run)}"
    body = [
        ("How the run ended", sections.how_it_ended(run)),
        ("Headline figures", sections.contention_html(run) + sections.compression_html(run)
         + sections.headline_figures(run) + sections.segments_html(run)),
        ("Recommendations", sections.recommendations_html(recommendations(run))),
        ("Charts", _run_charts(run)),
        ("Techniques", sections.techniques_html(run)),
        ("Predicted and measured", sections.theory_html(run)),
        ("Operator profile", sections.profile_html(run)),
        ("Warnings and errors", sections.problems_html(run)),
        ("Environment", sections.environment_html(run)),
        ("Configuration", sections.config_html(run)),
    ]
    return _page(f"EffiScope report: {run.name}", header, body)


# --- comparison ------------------------------------------------------------------------------
def display_names(runs: list[RunData]) -> dict[str, str]:
    """Run names, with the id's tail added where two runs share a name."""
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.name] = counts.get(run.name, 0) + 1
    return {run.run_id: run.name if counts[run.name] == 1 else f"{run.name} [{run.run_id[-4:]}]"
            for run in runs}


def _delta_table(found: dict, baseline: RunData, others: list[RunData],
                 names: dict[str, str]) -> str:
    headers = ["Figure", f"{e(names[baseline.run_id])} (baseline)"]
    for run in others:
        headers += [e(names[run.run_id]), "Δ", "%"]
    rows = []
    notes: list[str] = []
    for row in found["deltas"]:
        cells = row["cells"]
        if all(c["value"] is None for c in cells):
            continue
        line = [e(row["label"]) + f'<div class="how">{e(row["better"])} is better</div>',
                e(format_value(cells[0]["value"], row["unit"]))]
        for cell in cells[1:]:
            cls = VERDICT_CLASS.get(cell["verdict"], "")
            tip = f' title="{e(cell["text"])}"' if cell["text"] else ""
            change = format_change(cell["change_pct"])
            if cell["verdict"] in significance.SHORT and cell["change_pct"] is not None:
                change += f" ({significance.SHORT[cell['verdict']]})"
            value = e(format_value(cell["value"], row["unit"]))
            if cell["base_value"] != row["baseline"] and cell["base_value"] is not None:
                against = format_value(cell["base_value"], row["unit"])
                value += f'<div class="how">against {e(against)}</div>'
            why = (f'<div class="how">{e(cell["text"])}</div>'
                   if cell["verdict"] in significance.SHORT else "")
            line += [value,
                     f'<span class="{cls}"{tip}>{e(format_delta(cell["delta"], row["unit"]))}</span>',
                     f'<span class="{cls}"{tip}>{e(change)}</span>{why}']
            if cell["scope"] and cell["scope"] not in notes:
                notes.append(cell["scope"])
        rows.append(line)
    scope = ("<p class=\"how\">Compared like with like, segment against segment: "
             + "; ".join(e(n) for n in notes) + ".</p>") if notes else ""
    return ('<p class="how">Each run\'s own summary figures; Δ = run − baseline, % = Δ / baseline. '
            "Green is better, red is worse, only where the difference is significant: outside the "
            "noise of both runs (Mann-Whitney U on the per-step samples and the bootstrap interval "
            "of the ratio of medians, or the figures' 95 % intervals apart) and beyond the "
            f"{significance.NOISE_FLOOR_PCT:g} % noise floor. Grey is within noise or not "
            "comparable (the reason is said); amber is a speed measured while other processes "
            "used the machine, which gets no verdict.</p>"
            + table(headers, rows, set(range(1, len(headers)))) + scope)


VERDICT_CLASS = {"better": "better", "worse": "worse", "within noise": "noise",
                 "not comparable": "noise", "machine busy": "busy"}
"""The class of a delta cell by profiler.figures.significance's verdict."""


def _diff_html(text: str) -> str:
    out = []
    for line in text.splitlines():
        cls = ("hunk" if line.startswith("@@") else "add" if line.startswith("+")
               else "del" if line.startswith("-") else "")
        out.append(f'<span class="{cls}">{e(line)}</span>' if cls else e(line) + "\n")
    return "".join(out)


def _config_diff(diff: dict, runs: list[RunData], baseline: RunData,
                 names: dict[str, str]) -> str:
    if not diff["keys"] and not diff["segments"]:
        return '<p class="muted">The settings the runs\' workloads read are identical.</p>'
    out = ('<p class="how">Only the settings the runs\' workloads read; the runs by the names '
           "they have now.</p>")
    if diff["keys"]:
        headers = ["Key"] + [e(names[r.run_id]) + (" (baseline)" if r is baseline else "")
                             for r in runs]
        rows = [[f"<code>{e(item['key'])}</code>"]
                + [e("(absent)" if c["value"] is None else c["value"]) for c in item["values"]]
                for item in diff["keys"]]
        out += table(headers, rows)
    for item in diff["segments"]:
        out += (f"<h3>Segments of {e(names[item['run']])}</h3><ul>"
                + "".join(f"<li>{e(line)}</li>" for line in item["segments"]) + "</ul>")
    unified = "".join(f"<h3>{e(names[u['run']])} against the baseline</h3>"
                      f'<pre class="diff">{_diff_html(u["diff"]) or "(no difference)"}</pre>'
                      for u in diff["unified"])
    return out + unified


def _per_run(runs: list[RunData], names: dict[str, str], render_one) -> str:
    return "".join(f"<h3>{e(names[r.run_id])}</h3>{render_one(r)}" for r in runs)


def render_comparison(runs: list[RunData], baseline: RunData) -> str:
    """Several runs: who they are, deltas against the baseline, overlaid charts, config diff."""
    names = display_names(runs)
    ordered = [baseline] + [r for r in runs if r is not baseline]
    found = compare.comparison(ordered, baseline)
    found["config_diff"] = compare.config_diff(ordered, baseline, names)

    def machine(run: RunData) -> str:
        state = found["machine"][run.run_id]
        return f'<span class="busy">{e(state["text"])}</span>' if state["busy"] else \
            e(state["text"])

    run_rows = [[e(names[r.run_id]) + (" <b>(baseline)</b>" if r is baseline else ""),
                 f"<code>{e(r.run_id)}</code>", badge(r.status), e(r.end or "n/a"), e(r.device),
                 e(r.summary.get("steps_completed", r.summary.get("last_step", "n/a"))),
                 machine(r)]
                for r in ordered]
    overlay = []
    for spec in charts.overlay_specs(ordered):
        chart = charts.overlay_chart(ordered, names, spec)
        if chart.lines or spec.name in charts.CORE_CHARTS:
            overlay.append((render(chart), ""))
    env_keys = [k for k, _ in sections.environment_rows(ordered[0])]
    env_values = {r.run_id: dict(sections.environment_rows(r)) for r in ordered}
    env_rows = [[e(k)] + [e(env_values[r.run_id].get(k, "n/a")) for r in ordered]
                for k in env_keys]
    body = [
        ("Runs", table(["Run", "Run id", "Status", "How it ended", "Device", "Steps",
                        "Machine during the run"], run_rows)),
        ("Deltas against the baseline", _delta_table(found, baseline, ordered[1:], names)),
        ("Charts", '<p class="how">One colour per run; validation loss dashed. Dashed vertical '
                   "lines: mid-run technique changes, in the run's colour.</p>"
         + _chart_grid(overlay)),
        ("Configuration diff", _config_diff(found["config_diff"], ordered, baseline, names)),
        ("Techniques", _per_run(ordered, names, sections.techniques_html)),
        ("Recommendations", _per_run(ordered, names,
                                     lambda r: sections.recommendations_html(recommendations(r)))),
        ("Warnings and errors", _per_run(ordered, names, sections.problems_html)),
        ("Environment", table(["", *[e(names[r.run_id]) for r in ordered]], env_rows)),
    ]
    header = (f"<h1>Comparison of {len(runs)} runs</h1><div class=\"sub\">baseline "
              f"<b>{e(names[baseline.run_id])}</b> (<code>{e(baseline.run_id)}</code>)</div>")
    return _page(f"EffiScope comparison: {', '.join(names[r.run_id] for r in ordered)}", header,
                 body)
