"""What a tune says: the finalists, the answer sentence, the ranked table (plain data and text).

Torch-free and Qt-free: the CLI prints it, the app shows it, tune.json / tune.md keep it.
"""

from __future__ import annotations

from profiler.figures import metrics, stats
from profiler.tune import search as tsearch
from profiler.tune.space import Candidate, Space, global_batch


def finalists(result: tsearch.SearchResult, space: Space) -> dict[str, Candidate]:
    out: dict[str, Candidate] = {}
    if result.best is None:
        return out
    # The config as given is always called "baseline", whichever place it took.
    if result.best != space.baseline:
        out["best"] = result.best
    if result.runner_up is not None and result.runner_up != space.baseline:
        out["runner-up"] = result.runner_up
    measured = {e["candidate"] for e in result.ranking}
    if space.baseline in measured:
        out["baseline"] = space.baseline
    return out


def _pct(value: float) -> str:
    return stats.significant_digits(abs(value), 2) + " %"


def _no_verdict(comparison: dict) -> str:
    """", within noise (...)" / ", machine busy: no verdict (...)" for a comparison that is no
    verdict (profiler.figures.significance's rule, its reason said)."""
    from profiler.figures.significance import verdict_text

    if comparison["verdict"] in ("better", "worse"):
        return ""
    return f", {verdict_text(comparison)}"


def verdict_sentence(report: dict) -> str:
    """"bf16 + fused AdamW: 1.38x the baseline (±3 %), 41 % less memory; runner-up within
    noise" — or why there is no answer: a stopped tune says how many candidates it measured,
    and no answer comes from one measured candidate."""
    final = report.get("final")
    chosen = report.get("chosen")
    measured = len(report.get("ranking") or [])
    total = report.get("candidates")
    of = f" of {total}" if isinstance(total, int) else ""
    if report.get("stopped") and not final:
        head = f"stopped after measuring {measured}{of} candidate{'s' if measured != 1 else ''}"
        if measured < 2:
            return f"{head}: no answer (one measured candidate has nothing to be compared with)"
        best = (report.get("best_so_far") or {}).get("label", "n/a")
        return (f"{head}, before the final re-measure: no answer (the best so far, {best}, was "
                "not re-measured against the others)")
    if not chosen:
        if measured == 1:
            return ("no answer: only one candidate was measured, with nothing to compare it with "
                    f"({report['stop_reason'] or 'the others failed or did not fit'})")
        return "no configuration was measured: " + (report["stop_reason"] or "nothing fit")
    if not final:
        return f"{chosen['label']}: best of the search (not re-measured)"
    roles = final["roles"]
    winner = final["winner"]
    comparisons = final["comparisons"]
    label = chosen["label"]
    parts = []
    if "baseline" in comparisons:
        c = comparisons["baseline"]  # winner against the baseline
        ratio = 1 + c["delta_pct"] / 100 if c["delta_pct"] is not None else None
        if ratio is not None:
            text = f"{stats.significant_digits(ratio)}x the baseline"
            if c["ci_low"] is not None:
                spread = max(ratio - c["ci_low"], c["ci_high"] - ratio) / ratio * 100
                text += f" (±{stats.significant_digits(spread, 2)} %)"
            parts.append(text + _no_verdict(c))
        base_peak, win_peak = roles["baseline"]["peak_bytes"], roles[winner]["peak_bytes"]
        if base_peak and win_peak:
            change = (win_peak / base_peak - 1) * 100
            parts.append(f"{_pct(change)} {'less' if change < 0 else 'more'} memory "
                         f"({report['peak_label']})")
        else:
            parts.append("memory n/a")
    elif (winner == "baseline" or label == "baseline") and comparisons:
        label = "the config as given (baseline)"
        # comparisons[role]: the winner (here the baseline) judged against that candidate
        ahead = [c for c in comparisons.values() if c["verdict"] == "better"]
        parts.append("no candidate beat it" if len(ahead) == len(comparisons) else
                     "no candidate was measurably faster"
                     + "".join(_no_verdict(c) for c in comparisons.values()
                               if c["verdict"] != "better")[:400])
    elif any(p["label"] == "baseline" for p in report.get("pruned", [])):
        parts.append("no ratio: the config as given is predicted not to fit")
    elif any(f["label"] == "baseline" for f in report.get("failed", [])):
        parts.append("no ratio: the config as given failed")
    elif not comparisons:
        return ("no answer: the final re-measure measured one candidate only, with nothing to "
                "compare it with")
    for role in ("runner-up", "best"):
        if role in comparisons:
            c = comparisons[role]  # the winner judged against this one
            name = "runner-up" if role == "runner-up" else "the search's best"
            parts.append(f"{name} " + {"better": "significantly behind",
                                       "worse": "significantly ahead on the samples"}.get(
                c["verdict"], _no_verdict(c).removeprefix(", ")))
    if chosen.get("fastest_measured"):
        head = "; ".join(parts[:2])
        rest = "".join(f"; {p}" for p in parts[2:])
        return (f"the config as given (baseline): nothing was measurably faster (the fastest "
                f"measured, {chosen['fastest_measured']}: {head}){rest}")
    return f"{label}: " + "; ".join(parts)


def trial_row(trial: tsearch.Trial, space: Space, predicted: dict) -> dict:
    m = trial.measurement
    return {"number": trial.number, "label": space.label(trial.candidate),
            "candidate": trial.candidate.as_dict(), "rung": trial.rung, "steps": trial.steps,
            "run_id": m.run_id, "value": m.value, "distribution": m.extra.get("distribution")
            or {"n": 0, "median": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high},
            "peak_bytes": m.peak_bytes, "predicted_bytes": predicted.get(trial.candidate),
            "cost_s": m.cost_s, "error": m.error,
            "effective_batch": m.extra.get("effective_batch"),
            "peak_why": m.extra.get("peak_why")}


def build_report(base, space, settings, objective, higher, limit, limit_how, result, final,
                 tune_run, elapsed, stopped: bool = False) -> dict:
    """The report of a tune as plain data (tune.json): ranking, failures, pruned, final. A tune
    stopped before its final re-measure, or one that measured a single candidate, chooses
    nothing (no best.toml): one measurement is no answer."""
    keys = [t.measurement.extra.get("peak_key") for t in result.trials
            if t.measurement.peak_bytes is not None and t.measurement.extra.get("peak_key")]
    peak_label = metrics.metric(keys[0]).label if keys else "peak memory"
    chosen = None
    pick = result.best
    if final and final["winner"]:
        pick = space.baseline if final["winner"] == "baseline" else finalists(result, space)[
            final["winner"]]
    best_so_far = {"label": space.label(pick), "candidate": pick.as_dict()} if pick else None
    if (stopped and not final) or len(result.ranking) < 2:
        pick = None  # no answer from an unconfirmed search or from one candidate
    if pick is not None:
        chosen = {"label": space.label(pick), "candidate": pick.as_dict()}
        against = ((final or {}).get("comparisons") or {}).get("baseline")
        if against is not None and against["verdict"] != "better":
            # Not measurably faster than the config as given: the config as given is the answer.
            chosen = {"label": space.label(space.baseline),
                      "candidate": space.baseline.as_dict(), "fastest_measured": chosen["label"]}
    report = {
        "tune_run": tune_run.run_id, "workload": base.workload, "path": str(tune_run.path), "objective": objective,
        "higher_is_better": higher, "unit": metrics.metric(objective).unit,
        "peak_label": peak_label, "budget_s": settings.budget_s, "elapsed_s": elapsed,
        "search_spent_s": result.spent_s, "stop_reason": result.stop_reason,
        "memory_limit_bytes": limit, "memory_limit_how": limit_how,
        "global_batch": global_batch(base) if base.workload == "train" else None,
        "space": space.dimensions, "fixed": space.fixed, "left_out": space.left_out,
        "ranking": [trial_row(e["trial"], space, result.predicted) for e in result.ranking],
        "failed": [trial_row(t, space, result.predicted) for t in result.failed],
        "trials": [trial_row(t, space, result.predicted) for t in result.trials],
        "pruned": [{"label": space.label(p["candidate"]), "candidate": p["candidate"].as_dict(),
                    "predicted_bytes": p["predicted_bytes"], "limit_bytes": p["limit_bytes"]}
                   for p in result.pruned],
        "not_tried": [{"label": space.label(c), "candidate": c.as_dict()}
                      for c in result.not_tried],
        "final": final, "chosen": chosen, "stopped": stopped, "best_so_far": best_so_far,
        "candidates": space.size(),
    }
    report["sentence"] = verdict_sentence(report)
    return report


# --- the table --------------------------------------------------------------------------------------
def _bytes(value) -> str:
    return metrics.format_value(value, "bytes")


def format_report(report: dict) -> str:
    unit = report["unit"]
    lines = [f"tune {report['tune_run']}: objective {report['objective']} ({unit}, "
             f"{'higher' if report['higher_is_better'] else 'lower'} is better), "
             f"{len(report['trials'])} trials in {report['search_spent_s']:.0f} s of a "
             f"{report['budget_s']:.0f} s budget; {report['stop_reason']}",
             f"memory limit: {report['memory_limit_how']}"]
    devices = report.get("devices") or []
    if len(devices) > 1 or any(d.get("lost") for d in devices):
        lines.append("workers: " + "; ".join(
            d["name"] + (f" (left out: {d['lost']})" if d.get("lost") else "") for d in devices))
    if report.get("resumed"):
        lines.append(f"resumed: {report['resumed']['from_journal']} measurement(s) taken from "
                     "the tune's journal, none measured again")
    why = next((r.get("peak_why") for r in report["trials"] if r.get("peak_why")), None)
    if why:
        lines.append(f"peak memory of segment trials: {why}")
    if report["global_batch"]:
        lines.append(f"global batch kept at {report['global_batch']} sequences per optimizer "
                     "step (micro-batch x accumulation x processes)")
    lines += ["", f"| rank | configuration | {report['objective']} (median, 95 % interval) | "
              f"{'generations' if report['workload'] == 'infer' else 'steps'} | {report['peak_label']} | "
              "predicted peak | run |",
              "|---:|---|---|---:|---:|---:|---|"]
    for rank, row in enumerate(report["ranking"], 1):
        lines.append(f"| {rank} | {row['label']} | {stats.describe(row['distribution'], unit)} | "
                     f"{row['steps']} | {_bytes(row['peak_bytes'])} | "
                     f"{_bytes(row['predicted_bytes'])} | {row['run_id']} |")
    for row in report["failed"]:
        lines.append(f"| - | {row['label']} | failed: {row['error']} | {row['steps']} | | "
                     f"{_bytes(row['predicted_bytes'])} | {row['run_id'] or ''} |")
    for row in report["pruned"]:
        lines.append(f"| - | {row['label']} | predicted not to fit: "
                     f"{_bytes(row['predicted_bytes'])} > {_bytes(row['limit_bytes'])} | | | "
                     f"{_bytes(row['predicted_bytes'])} | never launched |")
    if report["not_tried"]:
        lines.append(f"| - | {len(report['not_tried'])} more combinations | not tried: the "
                     "budget | | | | |")
    for item in report["left_out"]:
        lines.append(f"| - | {item['dimension']} = {item['value']} | not searched: "
                     f"{item['reason']} | | | | |")
    final = report.get("final")
    if final:
        lines += ["", f"final re-measure: {final['rounds']} interleaved round(s) of "
                  f"{final['steps']} steps each, per-step samples pooled "
                  "(Mann-Whitney U and bootstrap ratio of medians must agree)"]
        for role, item in final["roles"].items():
            extra = (f", perplexity {stats.significant_digits(item['perplexity'])}"
                     if item.get("perplexity") is not None else "")
            error = f", errors: {item['errors'][0]}" if item["errors"] else ""
            lines.append(f"- {role}: {stats.describe(item['distribution'], unit)}, "
                         f"{report['peak_label']} {_bytes(item['peak_bytes'])}{extra}{error}")
    lines += ["", f"answer: {report['sentence']}"]
    if report.get("chosen", {}) and report["chosen"].get("config_file"):
        lines.append(f"chosen config: {report['chosen']['config_file']} "
                     "(effiscope run PATH runs it)")
    return "\n".join(lines)
