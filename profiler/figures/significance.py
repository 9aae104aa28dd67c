"""The one verdict on a difference between two runs. The app's Compare, `effiscope compare`, the
reports and the tuner all ask this module, and `verdict` is the rule they all go through:

- "not comparable: <reason>" when the two figures do not describe like things: a run that
  changed techniques mid-run has no segment with the other's configuration, final losses were
  taken at different steps, a distill run's blended objective against a train run's loss;
- "machine busy: no verdict" for a timed figure (metrics.Metric.timed) when other processes
  used the machine during either run's measured steps (profiler.measure.contention): its speed says
  what the machine was doing, not what the technique does;
- "better" / "worse" (or "apart" where neither direction is better) only when the difference is
  outside both runs' noise AND beyond the noise floor (NOISE_FLOOR_PCT): per-step samples need
  Mann-Whitney's p < ALPHA and the bootstrap interval of the ratio of medians excluding 1;
  summary figures need their 95 % intervals apart;
- "within noise" otherwise, with the reason (p, overlapping intervals, or under the floor), and
  "not comparable: no spread" for bare numbers (one value a run, nothing to judge by);
- a figure counted from the tensors (Metric.exact: bytes saved for backward, gradients,
  optimizer state) has no noise: any difference is real, none is "equal".

The reason is always said (result["reason"], verdict_text). What a run offers a comparison
(summary, per-step samples, machine state) is a profiler.figures.evidence.Evidence, read once per run.
"""

from __future__ import annotations

import math

from profiler.figures import segment_pairing, stats
from profiler.figures.evidence import Evidence, evidence_of
from profiler.figures.metrics import metric

ALPHA = 0.05
NOISE_FLOOR_PCT = 1.0
"""A difference under this many percent is within noise whatever its p: a step-to-step rhythm,
a page-cache or clock-frequency state shifts a run's median by about this much (docs/benchmarks:
the worker against its reference loop resolves about 1 %)."""
SAMPLE_KEYS = {"tokens_per_s": "tokens_per_s", "step_time_p50_s": "step_time_s"}
"""Summary figure -> the per-step sample whose median it is."""
SEGMENT_FIGURES = {"tokens_per_s": "tokens_per_s", "step_time_p50_s": "step_time_s",
                   "step_time_p90_s": "step_time_p90_s", "step_time_p99_s": "step_time_p99_s",
                   "peak_torch_allocated_bytes": "peak_torch_allocated_bytes"}
"""Summary figure -> the same figure in each segment of a run that changed techniques mid-run.
Every other figure describes the configuration the run ended in (its last segment)."""
STEP_LOSSES = {"loss_train_final": "loss_train", "loss_distill_final": "loss_distill",
               "loss_val_final": "loss_val", "perplexity": "loss_val"}
"""Figures taken at a run's last steps -> the sample whose last step they were taken at."""
SIGNIFICANT, WITHIN_NOISE = ("better", "worse", "apart"), "within noise"
BUSY, NOT_COMPARABLE = "machine busy", "not comparable"


def _clean(values) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)]


# --- the statistics ----------------------------------------------------------------------------
def mann_whitney(a: list[float], b: list[float]) -> tuple[float, float] | None:
    """Two-sided Mann-Whitney U test: (U of a, p-value), normal approximation with tie and
    continuity correction (scipy.stats.mannwhitneyu's method="asymptotic"); None when either
    side is empty or every value is tied."""
    import numpy as np

    a, b = _clean(a), _clean(b)
    n1, n2 = len(a), len(b)
    if not n1 or not n2:
        return None
    pooled = np.asarray(a + b, dtype=float)
    _, where, counts = np.unique(pooled, return_inverse=True, return_counts=True)
    mean_rank = np.cumsum(counts) - (counts - 1) / 2  # the mean rank of each tied block
    u = float(mean_rank[where[:n1]].sum()) - n1 * (n1 + 1) / 2
    n = n1 + n2
    tie_term = float((counts.astype(float) ** 3 - counts).sum())
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


def _pct(value: float) -> str:
    from profiler.figures.metrics import significant

    return f"{'+' if value > 0 else '−' if value < 0 else ''}{significant(abs(value), 2)} %"


# --- the rule ----------------------------------------------------------------------------------
def verdict(evidence: dict, better: str | None, *, not_comparable: str = "",
            busy: str = "") -> dict:
    """THE verdict rule, the only place one is decided. `evidence` is what the statistics found
    (compare_samples / compare_figures / compare_exact before their verdict): delta_pct, apart
    (True / False: outside / inside both runs' noise; None: nothing to judge by, with why_not),
    counted (a figure counted from the tensors). not_comparable: why the two figures do not
    describe like things; busy: which run's measured steps shared the machine (a timed figure).
    Returns the evidence with "verdict" and "reason" set."""
    out = {k: v for k, v in evidence.items() if k not in ("apart", "why_not")}
    delta = evidence.get("delta_pct")

    def said(kind: str, reason: str) -> dict:
        out.update(verdict=kind, reason=reason)
        return out

    if not_comparable:
        return said(NOT_COMPARABLE, not_comparable)
    if busy and not evidence.get("counted"):
        return said(BUSY, busy)
    if evidence.get("counted"):
        if evidence.get("apart") is None:
            return said(NOT_COMPARABLE, evidence.get("why_not") or "no value to compare")
        if not evidence["apart"]:
            return said("equal", "counted from the tensors: the same number of bytes")
        return said(_direction(delta or 0.0, better),
                    "counted from the tensors: no measurement noise, any difference is real")
    if evidence.get("apart") is None:
        return said(NOT_COMPARABLE, evidence.get("why_not") or "nothing to judge the difference by")
    p = evidence.get("p_value")
    p_text = "" if p is None else ("p<0.001" if p < 0.001 else f"p={p:.2g}")
    if not evidence["apart"]:
        if p is None:
            why = "the figures' 95 % intervals overlap"
        elif p >= ALPHA:
            why = f"Mann-Whitney {p_text}"
        else:
            why = f"{p_text}, but the bootstrap interval of the ratio of medians contains 1"
        return said(WITHIN_NOISE, f"inside the noise of both runs ({why})")
    if delta is None or abs(delta) < NOISE_FLOOR_PCT:
        shown = "n/a" if delta is None else _pct(delta)
        return said(WITHIN_NOISE, f"{shown} is under the {NOISE_FLOOR_PCT:g} % noise floor"
                    + (f" ({p_text})" if p_text else ""))
    return said(_direction(delta, better), "outside the noise of both runs and beyond the "
                f"{NOISE_FLOOR_PCT:g} % floor" + (f" ({p_text})" if p_text else ""))


def paired_verdict(interval: dict, better: str | None, busy: str = "") -> dict:
    """The one rule over a ratio measured side by side in one run (a compress run's original
    and compressed model timed interleaved, stats.ratio_interval): outside the noise when its
    95 % bootstrap interval excludes 1, then the noise floor and the machine's state as for any
    comparison. Returns the interval with "verdict", "reason" and "significant" (better or
    worse) set by `verdict`."""
    ratio = interval.get("ratio")
    evidence = {**interval, "delta_pct": (ratio - 1) * 100 if ratio is not None else None,
                "p_value": None, "method": "bootstrap ratio of medians over interleaved runs"}
    if interval.get("ci_low") is None or interval.get("ci_high") is None:
        evidence["apart"] = None
        evidence["why_not"] = str(interval.get("verdict") or "no interval")
    else:
        evidence["apart"] = not interval["ci_low"] <= 1.0 <= interval["ci_high"]
    out = verdict(evidence, better, busy=busy)
    if out["verdict"] == WITHIN_NOISE and not evidence["apart"]:
        out["reason"] = "the 95 % interval of the ratio contains 1"
    out["significant"] = out["verdict"] in ("better", "worse")
    return out


def compare_samples(base: list[float], other: list[float], better: str | None, *,
                    busy: str = "", not_comparable: str = "") -> dict:
    """other against base from per-step samples: {delta_pct, verdict, reason, p_value, ci_low,
    ci_high, method, n}; ci_* are the ratio's (other / base) 95 % interval. Outside the noise
    needs Mann-Whitney's p < ALPHA and the bootstrap interval of the ratio excluding 1."""
    base, other = _clean(base), _clean(other)
    ratio = stats.ratio_interval(other, base)
    found = {"delta_pct": None, "apart": None, "p_value": None, "ci_low": ratio["ci_low"],
             "ci_high": ratio["ci_high"], "n": (len(base), len(other)),
             "method": "Mann-Whitney U and bootstrap ratio of medians, both must agree"}
    if ratio["ratio"] is not None:
        found["delta_pct"] = (ratio["ratio"] - 1) * 100
    if min(len(base), len(other)) < stats.MIN_BOOTSTRAP_N or ratio["ci_low"] is None:
        found["why_not"] = (f"too few measured steps for an interval ({len(base)} and "
                            f"{len(other)}; {stats.MIN_BOOTSTRAP_N} or more each)")
    else:
        test = mann_whitney(other, base)
        found["p_value"] = test[1] if test else 1.0
        found["apart"] = bool(ratio["significant"] and found["p_value"] < ALPHA)
    return verdict(found, better, busy=busy, not_comparable=not_comparable)


def _value(fig) -> float | None:
    found = (fig or {}).get("value") if isinstance(fig, dict) else None
    return float(found) if _clean([found]) else None


def compare_figures(base: dict | None, other: dict | None, better: str | None, *,
                    busy: str = "", not_comparable: str = "") -> dict:
    """other against base from summary figures: intervals apart is outside the noise, overlap is
    "within noise", a figure without an interval has no spread to judge by."""
    b, o = _value(base), _value(other)
    delta = (o - b) / abs(b) * 100 if b not in (None, 0) and o is not None else None
    found = {"delta_pct": delta, "apart": None, "p_value": None, "ci_low": None,
             "ci_high": None, "method": "95 % intervals of the summary figures (overlap = noise)",
             "why_not": "no spread: one number a run, no interval to judge the difference by"}
    low_high = stats.figure_interval(base), stats.figure_interval(other)
    if None not in low_high and delta is not None:
        (bl, bh), (ol, oh) = low_high
        found["apart"] = oh < bl or bh < ol
    return verdict(found, better, busy=busy, not_comparable=not_comparable)


def compare_exact(base: dict | None, other: dict | None, better: str | None, *,
                  not_comparable: str = "") -> dict:
    """other against base for a figure counted from the tensors (metrics.Metric.exact): there is
    no noise to exceed, so any difference is a verdict and none is "equal"."""
    b, o = _value(base), _value(other)
    found = {"delta_pct": None, "apart": None, "p_value": None, "ci_low": None, "ci_high": None,
             "method": "counted from the tensors: no measurement noise", "counted": True,
             "why_not": "no value to compare"}
    if b is not None and o is not None and (b or o == b):
        found["delta_pct"] = (o - b) / abs(b) * 100 if b else 0.0
        found["apart"] = o != b
    return verdict(found, better, not_comparable=not_comparable)


# --- judging a figure of two runs --------------------------------------------------------------
def _blended_as_train_loss(summary: dict) -> bool:
    """A distill run recorded before its objective had its own key: its loss_train_final is the
    blend of KL and cross-entropy, not a train loss."""
    figures = summary.get("figures") or {}
    how = (figures.get("loss_train_final") or {}).get("how") if isinstance(
        figures.get("loss_train_final"), dict) else ""
    return summary.get("workload") == "distill" and "loss_distill_final" not in figures and \
        isinstance(how, str) and how.startswith("blended")


def _steps_apart(key: str, base: Evidence, other: Evidence) -> str:
    """"at steps 200 vs 65" when a final-loss figure was taken at different steps."""
    sample = STEP_LOSSES.get(key)
    if sample is None or (key == "perplexity" and any(
            _value((e.summary.get("figures") or {}).get("perplexity")) is not None
            for e in (base, other))):
        return ""  # measured perplexity (infer, compress) is not taken at a training step
    steps = base.last_step(sample), other.last_step(sample)
    if None in steps:
        done = [e.summary.get("steps_completed") for e in (base, other)]
        steps = tuple(d if isinstance(d, int) else None for d in done)
    if None in steps or steps[0] == steps[1]:
        return ""
    return (f"{metric(key).label.lower()} taken at steps {steps[0]} vs {steps[1]}: compare runs "
            "of the same length (or their curves at one step)")


def _scored_apart(key: str, base: Evidence, other: Evidence) -> str:
    """Why two quality figures were not scored alike: a batch-dependent technique (dynamic
    int8, metrics.BATCH_DEPENDENT) with a different number of windows per forward pass."""
    if metric(key).group != "quality":
        return ""
    found = [e.summary.get("scoring") for e in (base, other)]
    if not all(isinstance(f, dict) for f in found):
        return ""
    per_pass = [f.get("windows_per_pass") for f in found]
    named = sorted({t for f in found for t in f.get("batch_dependent") or []})
    if not named or per_pass[0] == per_pass[1]:
        return ""
    return (f"scored {per_pass[0]} vs {per_pass[1]} windows per forward pass under "
            f"{', '.join(named)}, whose figure depends on that number (one activation scale per "
            "forward input)")


def segment_value(key: str, summary: dict, part: dict | None) -> float | None:
    """A figure of a run for a comparison: the segment's own figure when the comparison reads a
    segment (SEGMENT_FIGURES), else the summary's; perplexity is exp(final validation loss)
    unless measured."""
    figures = summary.get("figures") or {}
    if part is not None and key in SEGMENT_FIGURES:
        return _value((part.get("figures") or {}).get(SEGMENT_FIGURES[key]))
    if key == "perplexity" and _value(figures.get("perplexity")) is None:
        loss = _value(figures.get("loss_val_final"))
        try:
            return math.exp(loss) if loss is not None else None
        except OverflowError:
            return None
    return _value(figures.get(key))


def _figure(key: str, summary: dict, part: dict | None) -> dict | None:
    if part is not None and key in SEGMENT_FIGURES:
        return (part.get("figures") or {}).get(SEGMENT_FIGURES[key])
    return (summary.get("figures") or {}).get(key)


def judge(key: str, better: str | None, base, other, cache: dict | None = None,
          pair: dict | None = None) -> dict:
    """The verdict on figure `key` of `other` against `base` (runs: StoredRun, RunData or
    Evidence; `cache` keeps each run's Evidence by run id). Like with like first (the matching
    segments, losses at one step), then the machine, then the statistics: from the per-step
    samples when both runs have them, else from the figures' intervals. Adds "base_value",
    "value" (the figures compared) and "scope" (which stretch of each run was read)."""
    base, other = evidence_of(base, cache), evidence_of(other, cache)
    pair = pair or segment_pairing.pairing(base.summary, other.summary)
    entry = metric(key)
    parts = pair["base"], pair["other"]
    not_comparable = pair["reason"]
    per_segment = key in SEGMENT_FIGURES
    if not not_comparable and not per_segment:
        # An end-of-run figure describes a run's last segment only.
        for part, count, which in zip(parts, pair["count"], (base, other), strict=True):
            if part is not None and part.get("index") != count:
                not_comparable = (f"the {entry.label.lower()} of {which.name!r} is its last "
                                  "segment's, not that of "
                                  f"{segment_pairing.segment_name(part, count)} (the one with the "
                                  "other run's configuration)")
    if not not_comparable and key in ("loss_train_final", "perplexity", "loss_val_final"):
        blended = [e.name for e in (base, other) if _blended_as_train_loss(e.summary)]
        if blended and key == "loss_train_final":
            not_comparable = (f"{blended[0]!r} recorded distillation's blended objective as its "
                              "train loss (before the two had their own keys)")
        else:
            not_comparable = _steps_apart(key, base, other)
    if not not_comparable and key == "loss_distill_final":
        not_comparable = _steps_apart(key, base, other)
    if not not_comparable:
        not_comparable = _scored_apart(key, base, other)
    windows = tuple(segment_pairing.timed_window(p) for p in parts)
    busy = ""
    if entry.timed:
        busy = "; ".join(b for b in (base.busy(windows[0]), other.busy(windows[1])) if b)
    if entry.exact:
        result = compare_exact(_figure(key, base.summary, parts[0]),
                               _figure(key, other.summary, parts[1]), better,
                               not_comparable=not_comparable)
    else:
        sample = SAMPLE_KEYS.get(key)
        a = base.measured(sample, windows[0]) if sample else []
        b = other.measured(sample, windows[1]) if sample else []
        if a and b:
            result = compare_samples(a, b, better, busy=busy, not_comparable=not_comparable)
        else:
            result = compare_figures(_figure(key, base.summary, parts[0]),
                                     _figure(key, other.summary, parts[1]), better, busy=busy,
                                     not_comparable=not_comparable)
    values = segment_value(key, base.summary, parts[0]), segment_value(key, other.summary,
                                                                        parts[1])
    result.update(base_value=values[0], value=values[1], scope=scope_text(pair))
    if result["delta_pct"] is None and None not in values and values[0]:
        result["delta_pct"] = (values[1] - values[0]) / abs(values[0]) * 100
    return result


def scope_text(pair: dict) -> str:
    """Which stretch of each run a comparison read ("" for two whole runs)."""
    if pair["base"] is None and pair["other"] is None:
        return ""
    return (f"baseline: {segment_pairing.segment_name(pair['base'], pair['count'][0])}; other run: "
            f"{segment_pairing.segment_name(pair['other'], pair['count'][1])}")


# --- words ---------------------------------------------------------------------------------------
WORDS = {"better": "significant: better", "worse": "significant: worse",
         "apart": "significant", "within noise": "within noise",
         "machine busy": "machine busy: no verdict", "not comparable": "not comparable",
         "equal": "equal (counted)"}
"""A verdict as the CLI and the reports write it (the app colours the same verdicts)."""

TOOLTIPS = {
    "within noise": "The difference is inside the noise of both runs or under the "
                    f"{NOISE_FLOOR_PCT:g} % floor (not significant): no better / worse verdict.",
    "machine busy": "Other processes used the machine while a run measured its steps: its speed "
                    "figures are unreliable, so no verdict is given.",
    "not comparable": "No verdict: the two figures are not like with like, or carry nothing to "
                      "judge a difference by (the reason follows).",
    "better": "Significant: outside the noise of both runs and beyond the noise floor.",
    "worse": "Significant: outside the noise of both runs and beyond the noise floor.",
    "apart": "Significant difference (this figure has no better direction).",
    "equal": "The same in both runs (counted from the tensors: no measurement noise).",
    "counted": "Counted from the tensors, not timed: no measurement noise, so the difference "
               "is real.",
}
"""By verdict; "counted" replaces "better" / "worse" for a figure counted from the tensors."""

SHORT = {"within noise": "within noise", "machine busy": "machine busy",
         "not comparable": "not comparable"}
"""What a table cell adds after its % change for a verdict that is no verdict."""


def verdict_text(result: dict | None) -> str:
    """"significant: worse (p<0.001)", "within noise (p=0.41)", "within noise: +0.6 % is under
    the 1 % noise floor (p=0.003)", "machine busy: no verdict ('slow': other processes used 1.7
    of 2 cores ...)", "not comparable: no matching segment ..."; "n/a" without a verdict."""
    kind = (result or {}).get("verdict")
    if kind is None:
        return "n/a"
    text = WORDS.get(kind, str(kind))
    reason = str(result.get("reason") or "")
    p = result.get("p_value")
    p_text = "" if p is None else ("p<0.001" if p < 0.001 else f"p={p:.2g}")
    if kind == BUSY:
        return f"{text} ({reason})" if reason else text
    if kind == NOT_COMPARABLE:
        return f"{text}: {reason}" if reason else text
    if kind == WITHIN_NOISE:
        if "noise floor" in reason:
            return f"{text}: {reason}"
        return f"{text} ({p_text or 'the 95 % intervals overlap'})"
    if kind in SIGNIFICANT and p_text:
        return f"{text} ({p_text})"
    return text


def describe(result: dict) -> str:
    """The verdict in words (verdict_text)."""
    return verdict_text(result)
