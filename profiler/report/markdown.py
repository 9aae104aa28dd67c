"""Markdown for pull requests: headline figures, techniques, and deltas against a baseline.

GitHub renders inline HTML in Markdown, so user strings are escaped (`<`, `>`, `&`) and table
cells have their pipes escaped; nothing a run says can turn into markup.
"""

from __future__ import annotations

from profiler.figures import busy, significance
from profiler.figures.metrics import (
    format_change,
    format_delta,
    format_summary_figure,
    format_value,
    metric,
)
from profiler.figures.segments import table as segment_table
from profiler.report import compare
from profiler.report.html import display_names
from profiler.report.load import RunData
from profiler.report.recommend import compression_cells, compression_rows, recommendations
from profiler.report.sections import params_text, problems


def md(text: object) -> str:
    """Escape a user string for a Markdown table cell or line."""
    value = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    value = value.replace("|", "\\|").replace("\n", " ").replace("`", "'")
    return value


def _table(headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> list[str]:
    right = right or set()
    out = ["| " + " | ".join(headers) + " |",
           "|" + "|".join("---:" if i in right else "---" for i in range(len(headers))) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out + [""]


def _environment_line(run: RunData) -> str:
    env = run.environment
    versions = env["versions"]
    gpus = [g.get("name", "?") for g in env["host"].get("gpus") or [] if isinstance(g, dict)]
    hw = ", ".join(gpus) or env["host"].get("cpu") or "n/a"
    return (f"{run.device} ({hw}); torch {versions.get('torch', 'n/a')}, "
            f"Python {versions.get('python', 'n/a')}")


def _run_section(run: RunData, level: str = "##") -> list[str]:
    out = [f"{level} {md(run.name)}", "",
           f"Run `{md(run.run_id)}` · **{md(run.status)}** ({md(run.end or 'n/a')}) · "
           f"{md(_environment_line(run))}", ""]
    if busy.sentence(run.summary):  # beside the speed figures: measured alone or not
        out += [f"**Contended machine:** {md(busy.sentence(run.summary))}", ""]
    if busy.load_text(run.summary):
        out += [f"Machine load during the run: {md(busy.load_text(run.summary))}", ""]
    comp = compression_rows(run)
    if comp:
        if run.summary.get("quality_loss"):
            out += [f"**Quality cost:** {md(run.summary['quality_loss'])}", ""]
        out += _table(["Measure", "Original", "Compressed", "Ratio"],
                      [[md(cell) for cell in compression_cells(k, r)] for k, r in comp.items()],
                      {1, 2, 3})
    if run.figures:
        rows = [[md(metric(k).label), md(format_summary_figure(k, f)),
                 md(f.get("how", ""))] for k, f in run.figures.items()]
        out += _table(["Figure", "Value", "How it was measured"], rows, {1})
    else:
        out += [f"No summary figures: {md(run.no_figures_reason)}.", ""]
    found = segment_table(run.summary.get("segments"))
    if found:
        out += ["**Segments** (the configurations the run went through; the headline figures "
                "are the last segment's)", ""]
        out += _table(found[0], [[md(c) for c in row] for row in found[1]],
                      set(range(3, len(found[0]))))
    if run.techniques:
        out += ["**Techniques**", ""]
        out += [f"- **{md(t.get('label') or t.get('name'))}** ({md(params_text(t.get('params')))}):"
                f" {md(t.get('report') or '')}" for t in run.techniques]
        out.append("")
    toggles = run.events_of("toggle")
    if toggles:
        out += ["**Changed during the run**", ""]
        out += [f"- step {md(t.get('step', '?'))}: {md(t.get('technique', ''))} "
                f"({md(params_text(t.get('params')))}): {md(t.get('message', ''))}" for t in toggles]
        out.append("")
    issues = problems(run)
    if issues:
        out += ["**Warnings and errors**", ""]
        out += [f"- {md(kind)}" + (f" at step {md(step)}" if step else "") + f": {md(message)}"
                + (f" (hint: {md(hint)})" if hint else "") for kind, step, message, hint in issues]
        out.append("")
    recs = recommendations(run)
    if recs:
        out += ["**Recommendations**", ""]
        out += [f"- {md(r['severity'])}: **{md(r['title'])}**. {md(r['detail'])}" for r in recs]
        out.append("")
    return out


def render_run(run: RunData) -> str:
    return "\n".join(["# EffiScope report", ""] + _run_section(run)).rstrip() + "\n"


def render_comparison(runs: list[RunData], baseline: RunData) -> str:
    names = display_names(runs)
    ordered = [baseline] + [r for r in runs if r is not baseline]
    found = compare.comparison(ordered, baseline)
    out = [f"# EffiScope comparison of {len(runs)} runs", "",
           f"Baseline: **{md(names[baseline.run_id])}** (`{md(baseline.run_id)}`). "
           "Δ = run − baseline; % = Δ / baseline; \"significant\" only outside the noise of "
           f"both runs and beyond the {significance.NOISE_FLOOR_PCT:g} % noise floor, else "
           "\"within noise\"; no verdict on a speed measured on a busy machine, and \"not "
           "comparable\" with its reason where the figures are not like with like (\"no "
           "spread\" where a figure has neither per-step samples nor an interval to judge by).",
           ""]
    out += ["**Machine during each run**", ""]
    out += [f"- {md(names[r.run_id])}: {md(found['machine'][r.run_id]['text'])}" for r in ordered]
    out.append("")
    headers = ["Figure", f"{md(names[baseline.run_id])} (baseline)"]
    for run in ordered[1:]:
        headers += [md(names[run.run_id]), "Δ", "%"]
    rows = []
    notes: list[str] = []
    for row in found["deltas"]:
        cells = row["cells"]
        if all(c["value"] is None for c in cells):
            continue
        line = [md(row["label"]), md(format_value(cells[0]["value"], row["unit"]))]
        for cell in cells[1:]:
            change = format_change(cell["change_pct"])
            if cell["verdict"] is not None:
                change += f" — {cell['text']}"
            value = format_value(cell["value"], row["unit"])
            if cell["base_value"] != row["baseline"] and cell["base_value"] is not None:
                value += f" (vs {format_value(cell['base_value'], row['unit'])})"
            line += [md(value), md(format_delta(cell["delta"], row["unit"])), md(change)]
            if cell["scope"] and cell["scope"] not in notes:
                notes.append(cell["scope"])
        rows.append(line)
    out += _table(headers, rows, set(range(1, len(headers))))
    if notes:
        out += ["Compared like with like, segment against segment: " + "; ".join(
            md(n) for n in notes) + ".", ""]
    diff = found["config_diff"]
    out += ["## Config differences", "",
            "Only the settings the runs' workloads read; names as the runs are called now."
            + ("" if diff["keys"] or diff["segments"] else " They are identical."), ""]
    if diff["keys"]:
        out += _table(["Key"] + [md(names[r.run_id]) for r in ordered],
                      [[md(item["key"])] + [md("(absent)" if c["value"] is None else c["value"])
                                            for c in item["values"]] for item in diff["keys"]])
    for item in diff["segments"]:
        out += [f"**Segments of {md(names[item['run']])}**", ""]
        out += [f"- {md(line)}" for line in item["segments"]] + [""]
    for run in ordered:
        out += _run_section(run, "##")
    return "\n".join(out).rstrip() + "\n"
