"""The one verdict on a difference between two runs: "better", "worse", "within noise" or
"no spread" ("equal" for a figure counted from the tensors that did not change). The app's Compare, `effiscope compare` and the reports all ask this module.

A speed figure with per-step samples (a run's measured steps in stream.jsonl) is judged on the
samples: Mann-Whitney U (normal approximation, tie-corrected) and the bootstrap interval of the
ratio of medians (stats.ratio_interval). The delta is called significant only when both agree:
p < ALPHA and the ratio's interval excludes 1. A figure without samples (memory, loss) is judged
on its summary interval (stats.figure_interval): intervals apart is a verdict, overlapping is
"within noise", a bare number is "no spread" (shown neutral, never as a verdict). A figure
counted from the tensors (bytes saved for backward, gradients, optimizer state: Metric.exact)
has no noise: any difference is a verdict.
"""

from __future__ import annotations

import math

from profiler import stats
from profiler.metrics import metric
from profiler.segments import headline_span

ALPHA = 0.05
SAMPLE_KEYS = {"tokens_per_s": "tokens_per_s", "step_time_p50_s": "step_time_s"}
"""Summary figure -> the per-step sample whose median it is."""


def _clean(values) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)]


def mann_whitney(a: list[float], b: list[float]) -> tuple[float, float] | None:
    """Two-sided Mann-Whitney U test: (U of a, p-value), normal approximation with tie and
    continuity correction; None when either side is empty or every value is tied."""
    a, b = _clean(a), _clean(b)
    n1, n2 = len(a), len(b)
    if not n1 or not n2:
        return None
    pooled = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    ranks_a = 0.0
    tie_term = 0.0
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        rank = (i + j) / 2 + 1  # mean rank of the tied block
        ranks_a += rank * sum(1 for k in range(i, j + 1) if pooled[k][1] == 0)
        t = j - i + 1
        tie_term += t**3 - t
        i = j + 1
    u = ranks_a - n1 * (n1 + 1) / 2
    n = n1 + n2
    variance = n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))) if n > 1 else 0.0
    if variance <= 0:
        return None
    z = (abs(u - n1 * n2 / 2) - 0.5) / math.sqrt(variance)
    p = math.erfc(max(z, 0.0) / math.sqrt(2))
    return u, min(p, 1.0)


def _direction(delta_pct: float, better: str | None) -> str:
    if better not in ("higher", "lower"):
        return "apart"
    return "better" if (delta_pct > 0) == (better == "higher") else "worse"


def compare_samples(base: list[float], other: list[float], better: str | None) -> dict:
    """other against base from per-step samples: {delta_pct, verdict, p_value, ci_low, ci_high,
    method}; ci_* are the ratio's (other / base) 95 % interval."""
    base, other = _clean(base), _clean(other)
    method = "Mann-Whitney U and bootstrap ratio of medians, both must agree"
    ratio = stats.ratio_interval(other, base)
    out = {"delta_pct": None, "verdict": "no spread", "p_value": None,
           "ci_low": ratio["ci_low"], "ci_high": ratio["ci_high"], "method": method,
           "n": (len(base), len(other))}
    if ratio["ratio"] is not None:
        out["delta_pct"] = (ratio["ratio"] - 1) * 100
    if min(len(base), len(other)) < stats.MIN_BOOTSTRAP_N or ratio["ci_low"] is None:
        return out
    test = mann_whitney(other, base)
    out["p_value"] = test[1] if test else 1.0
    if ratio["significant"] and out["p_value"] < ALPHA and out["delta_pct"]:
        out["verdict"] = _direction(out["delta_pct"], better)
    else:
        out["verdict"] = "within noise"
    return out


def compare_figures(base: dict | None, other: dict | None, better: str | None) -> dict:
    """other against base from summary figures: intervals apart is a verdict, overlap is "within
    noise", a figure without an interval is "no spread"."""
    def value(fig):
        found = (fig or {}).get("value")
        return float(found) if _clean([found]) else None

    b, o = value(base), value(other)
    delta = (o - b) / abs(b) * 100 if b not in (None, 0) and o is not None else None
    low_high = stats.figure_interval(base), stats.figure_interval(other)
    out = {"delta_pct": delta, "verdict": "no spread", "p_value": None, "ci_low": None,
           "ci_high": None, "method": "95 % intervals of the summary figures (overlap = noise)"}
    if None in low_high or delta is None:
        return out
    (bl, bh), (ol, oh) = low_high
    apart = oh < bl or bh < ol
    out["verdict"] = _direction(delta, better) if apart and delta else "within noise"
    return out


def compare_exact(base: dict | None, other: dict | None, better: str | None) -> dict:
    """other against base for a figure counted from the tensors (metrics.Metric.exact): there is
    no noise to exceed, so any difference is a verdict and none is "equal"."""
    def value(fig):
        found = (fig or {}).get("value")
        return float(found) if _clean([found]) else None

    b, o = value(base), value(other)
    out = {"delta_pct": None, "verdict": "no spread", "p_value": None, "ci_low": None,
           "ci_high": None, "method": "counted from the tensors: no measurement noise"}
    if b is None or o is None:
        return out
    out["delta_pct"] = (o - b) / abs(b) * 100 if b else None
    if o == b:
        out["verdict"] = "equal"
    elif b:
        out["verdict"] = _direction(out["delta_pct"], better)
    return out


def judge(key: str, better: str | None, base_summary: dict, other_summary: dict,
          base_samples: dict | None = None, other_samples: dict | None = None) -> dict:
    """The verdict on summary figure `key`: from the per-step samples when both runs have them
    (samples: {sample key: values}), else from the summary figures' intervals."""
    figures = lambda s: (s or {}).get("figures") or {}  # noqa: E731
    if metric(key).exact:
        return compare_exact(figures(base_summary).get(key), figures(other_summary).get(key),
                             better)
    sample = SAMPLE_KEYS.get(key)
    if sample and base_samples and other_samples:
        a, b = base_samples.get(sample) or [], other_samples.get(sample) or []
        if a and b:
            return compare_samples(a, b, better)
    return compare_figures(figures(base_summary).get(key), figures(other_summary).get(key), better)


def run_samples(run, keys: tuple[str, ...] | None = None) -> dict:
    """{sample key: measured values} for every sample key a verdict reads (or `keys`): from a stored run's
    stream (profiler.store.StoredRun, one scan) or from a loaded one (profiler.report.load.RunData,
    which keeps every reading with its phase). Warmup and compile steps are left out, and in a
    run that changed techniques mid-run every step outside its headline's last segment: the
    samples are the ones the headline figure is the median of."""
    wanted = set(keys or SAMPLE_KEYS.values())
    out: dict[str, list[float]] = {k: [] for k in wanted}
    series = getattr(run, "series", None)
    # A loaded run whose long series were reduced for drawing is read from its stream again.
    loaded = isinstance(series, dict) and getattr(run, "complete", True)
    summary = run.summary if isinstance(getattr(run, "summary", None), dict) else run.summary()
    window = headline_span((summary or {}).get("segments"))

    def counts(step, phase) -> bool:
        return phase == "measure" and (window is None or (
            isinstance(step, int) and window[0] <= step <= window[1]))

    if loaded:
        for k in wanted:
            found = series.get(k)
            if found is not None:
                out[k] = _clean(v for v, step, phase in zip(found.values, found.steps,
                                                             found.phases, strict=True)
                                if counts(step, phase))
        return out
    for message in run.messages(warnings=[]):
        if message.get("type") != "sample" or not counts(message.get("step"),
                                                         message.get("phase")):
            continue
        metrics = message.get("metrics") or {}
        for k in wanted:
            out[k].extend(_clean([metrics.get(k)]))
    return out


def judge_runs(key: str, better: str | None, base, other, samples: dict | None = None) -> dict:
    """judge() for two runs (StoredRun summaries are read, RunData carries its own): `samples`
    caches run_samples per run id so that a table of many figures scans each stream once."""
    cache = samples if samples is not None else {}

    def parts(run):
        run_id = getattr(run, "run_id", id(run))
        if run_id not in cache:
            cache[run_id] = run_samples(run)
        summary = run.summary if isinstance(getattr(run, "summary", None), dict) else \
            (run.summary() or {})
        return summary, cache[run_id]

    (base_summary, base_samples), (other_summary, other_samples) = parts(base), parts(other)
    return judge(key, better, base_summary, other_summary, base_samples, other_samples)


WORDS = {"better": "significant: better", "worse": "significant: worse",
         "apart": "significant", "within noise": "within noise", "no spread": "no spread",
         "equal": "equal (counted)"}
"""A verdict as the CLI and the reports write it (the app colours the same verdicts)."""


TOOLTIPS = {
    "within noise": "The difference is inside the noise of both runs (not significant): no "
                    "better / worse verdict.",
    "no spread": "No per-step samples or interval for this figure: no better / worse verdict.",
    "better": "Significant: outside the noise of both runs.",
    "worse": "Significant: outside the noise of both runs.",
    "apart": "Significant difference (this figure has no better direction).",
    "equal": "The same in both runs (counted from the tensors: no measurement noise).",
    "counted": "Counted from the tensors, not timed: no measurement noise, so the difference "
               "is real.",
}
"""By verdict; "counted" replaces "better" / "worse" for a figure counted from the tensors."""


def describe(result: dict) -> str:
    """"within noise (p=0.41)", "worse (p<0.001)", "no spread"."""
    text = result["verdict"]
    p = result.get("p_value")
    if p is not None:
        text += " (p<0.001)" if p < 0.001 else f" (p={p:.3g})"
    return text
