"""A whole tune: prune by predicted memory, successive halving over jobs on every device, the
final interleaved re-measure, the tune run written; resumable from its journal.

How the parts fit (each module's doc says more):

- the candidates predicted to fit are grouped (tune.toggles): those that differ only in what a
  running worker switches share one warm run, measured as its segments (tune.warm, tune.windows);
  a candidate that needs a rebuild gets a run of its own on the device's kept worker;
- tune.rounds' successive halving plans the jobs, tune.devices' pool runs them, one per device
  at a time, and moves a lost device's job to another;
- every finished measurement goes to the tune's journal (tune.journal) the moment its job ends:
  `effiscope tune --resume RUN_ID` replays the search from it and measures nothing twice;
- the final re-measure: the best, the runner-up and the config as given, interleaved, on one
  device: as segments of one warm run (A B C, C B A, ...) when they can share one, else in
  rounds of runs; judged by the one verdict rule (runner.judge).

A caller that passes `evaluator` (a cost model, in the tests and the app's) gets the same search
with a run per candidate on this machine. Torch-free.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from profiler.config import RunConfig
from profiler.figures import metrics
from profiler.tune import devices as tdevices
from profiler.tune import journal as tjournal
from profiler.tune import report as report_of
from profiler.tune import rounds, toggles, warm
from profiler.tune import search as tsearch
from profiler.tune.runner import (
    Settings,
    TuneError,
    default_memory_limit,
    final_check,
    judge,
    objective_of,
    predicted_peak,
    write_tune_run,
)
from profiler.tune.space import Candidate, Space, build_space


def tune(base: RunConfig, settings: Settings, *, caps: dict | None = None, store=None,
         evaluator=None, log: Callable[[str], Any] = print,
         interrupt: threading.Event | None = None,
         on_trial: Callable[[tsearch.Trial, Space], Any] | None = None,
         resume: str | None = None,
         launcher_for: Callable[[tdevices.Device], Any] | None = None,
         on_estimate: Callable[[float], Any] | None = None) -> dict:
    """Search, re-measure, write the tune run; the report (also tune.json in the tune run).
    resume: the id of an interrupted tune run to go on with (its settings and config are the
    ones it was started with; `base` and `settings` are then those, see resume_settings).
    launcher_for: a device's launcher (tests pass a simulated worker). on_estimate(seconds):
    the search's time left as its runs so far predict it (rounds.halving), the final
    re-measure not included."""
    from profiler.store import RunStore

    objective, sample_key, higher = objective_of(base, settings.objective)
    if caps is None:
        from profiler.measure.system import host_capabilities

        caps = host_capabilities()
    space = build_space(base, caps, settings.dims)
    if settings.memory_limit is not None:
        limit, limit_how = settings.memory_limit, (
            f"{metrics.format_value(settings.memory_limit, 'bytes')} (--memory-limit)")
    else:
        limit, limit_how = default_memory_limit(base, caps)
    try:
        devices = (tdevices.parse_workers(settings.workers) if settings.workers
                   else [tdevices.local()])
    except ValueError as exc:
        raise TuneError(str(exc)) from None
    store = store or RunStore()
    if resume:
        tune_run = store.open_run(resume)
    else:
        tune_config = RunConfig.from_dict(base.to_dict())
        tune_config.name = f"tune: {base.run_record()['name']}"[:200]
        tune_run = store.create_run(tune_config)
        store.set_tags(tune_run.run_id, ["tune"])
        tjournal.save_settings(tune_run.path, base.to_dict(), settings)
    tag = f"tune:{tune_run.run_id}"
    journal = tjournal.Journal(tune_run.path, space)
    known = journal.load()
    started = time.monotonic()
    log(f"tune {tune_run.run_id}: {space.size()} combinations of "
        f"{', '.join(space.dimensions) or 'nothing'}; memory limit {limit_how}"
        + (f"; resumed with {known} measurement(s) from its journal" if resume else ""))
    fit, pruned, predicted = tsearch.prune(space.candidates(),
                                           lambda c: predicted_peak(space, c), limit)
    pool = tdevices.DevicePool(devices, log)
    launchers = {d.name: (launcher_for or warm.Launcher)(d) for d in devices}
    should_stop = interrupt.is_set if interrupt is not None else None
    if evaluator is None:
        group = warm.GroupEvaluator(space, store, tag, objective, sample_key, log, interrupt)
        single = group.single

        def measure(launcher, candidates: list[Candidate], steps: int) -> dict:
            return group.measure(launcher, candidates, steps)
    else:
        single = evaluator

        def measure(launcher, candidates: list[Candidate], steps: int) -> dict:
            return {c: evaluator(c, steps) for c in candidates}

    def work(device: tdevices.Device, job: rounds.Job) -> Any:
        candidates, steps, rung = job
        out = {c: journal.take("search", c, rung, steps) for c in candidates}
        out = {c: m for c, m in out.items() if m is not None}
        rest = [c for c in candidates if c not in out]
        if rest:
            try:
                measured = measure(launchers[device.name], rest, steps)
            except tdevices.DeviceLost:
                raise
            except Exception as exc:  # noqa: BLE001 - a failing job never stops the search
                measured = {c: tsearch.Measurement(error=f"{type(exc).__name__}: {exc}")
                            for c in rest}
            for candidate, m in measured.items():
                journal.add("search", candidate, rung, steps, m)
            out.update(measured)
        return out

    grouping = (lambda cs: toggles.groups(space, cs)) if evaluator is None and settings.segments \
        else (lambda cs: [[c] for c in cs])
    try:
        found = rounds.halving(
            fit, grouping, lambda jobs: pool.run(jobs, work, should_stop),
            budget_s=settings.budget_s, devices=len(pool.live), min_steps=settings.min_steps,
            eta=settings.eta, max_steps=settings.max_steps, higher_is_better=higher,
            baseline=space.baseline, on_trial=(lambda t: on_trial(t, space)) if on_trial else None,
            should_stop=should_stop, on_estimate=on_estimate)
        result = tsearch.SearchResult(found["trials"], pruned, found["not_tried"],
                                      found["ranking"], found["failed"], found["spent_s"],
                                      settings.budget_s, predicted, found["stop_reason"])
        log(f"search: {len(result.trials)} trials, {len(result.pruned)} predicted not to fit, "
            f"{result.stop_reason}")
        final = None
        finalists = report_of.finalists(result, space)
        if finalists and not (interrupt is not None and interrupt.is_set()) and pool.live:
            launcher = launchers[pool.live[0].name]
            final = _final(space, settings, result, finalists, higher, journal, log,
                           launcher, single if evaluator is not None else None,
                           group if evaluator is None else None)
    finally:
        for launcher in launchers.values():
            release = getattr(launcher, "release", None)
            if release is not None:
                release()
        journal.close()
    stopped = interrupt is not None and interrupt.is_set()
    report = report_of.build_report(base, space, settings, objective, higher, limit, limit_how,
                                    result, final, tune_run, time.monotonic() - started,
                                    stopped=stopped)
    report["devices"] = [{"name": d.name, "lost": d.lost} for d in devices]
    report["device_s"] = found["device_s"]
    report["resumed"] = {"from_journal": journal.reused, "skipped_lines": journal.skipped} \
        if resume else None
    write_tune_run(store, tune_run, base, space, report, stopped)
    return report


def _final(space: Space, settings: Settings, result: tsearch.SearchResult,
           finalists: dict[str, Candidate], higher: bool, journal: tjournal.Journal,
           log: Callable[[str], Any], launcher, evaluator, group) -> dict:
    """The final re-measure on one device (see the module doc); journaled like the search."""
    steps = settings.max_steps  # the last rung's length, whichever rung the search reached
    reached = result.ranking[0]
    costs = [e["trial"].measurement.cost_s for e in result.ranking[:2]]
    per_run = (sum(costs) / len(costs) if any(costs) else 1.0) * max(1.0, steps / reached["steps"])
    left = settings.budget_s - result.spent_s
    count = max(1, min(settings.final_rounds, int(left // (per_run * len(finalists)))))
    candidates = list(finalists.values())
    together = group is not None and settings.segments and len(candidates) >= 2 and len(
        toggles.groups(space, candidates)) == 1
    if together:
        # One warm run: each finalist measured steps x rounds in all, over 2 x rounds windows
        # interleaved forward and back; its samples pooled, as the rounds of runs would be.
        log(f"final re-measure: {', '.join(finalists)} as segments of one warm run, "
            f"{count * 2} interleaved windows, {steps * count} steps each")
        total = steps * count
        stored = {c: journal.take("final", c, 0, total) for c in candidates}
        if any(m is None for m in stored.values()):
            final_group = warm.GroupEvaluator(space, group.store, group.tag, group.objective,
                                              group.sample_key, log, group.interrupt,
                                              rounds=2 * count)
            stored = final_group.measure(launcher, candidates, total, final=True)
            for candidate, m in stored.items():
                journal.add("final", candidate, 0, total, m)
        measured = {role: [stored[c]] for role, c in finalists.items()}
        return judge(finalists, measured, steps, count, higher)
    log(f"final re-measure: {', '.join(finalists)}, {count} interleaved round(s) of "
        f"{steps} steps")
    rounds_done: dict[Candidate, int] = {}

    def evaluate(candidate: Candidate, steps: int, final: bool = True) -> tsearch.Measurement:
        index = rounds_done.get(candidate, 0)
        rounds_done[candidate] = index + 1
        m = journal.take("final", candidate, index, steps)
        if m is None:
            m = (evaluator(candidate, steps, final=True) if evaluator is not None
                 else group.single(candidate, steps, True, launcher=launcher))
            journal.add("final", candidate, index, steps, m)
        return m

    return final_check(evaluate, finalists, steps, count, higher, log)


def resume_settings(store, run_id: str) -> tuple[RunConfig, Settings]:
    """The config and settings an interrupted tune run was started with; JournalError (a
    ValueError) with what to do when it is not one to resume."""
    from profiler.config import validate

    run = store.open_run(run_id)
    meta = run.meta()
    if meta.get("status") == "completed":
        raise tjournal.JournalError(f"tune {run.run_id} finished; its answer is in "
                                    f"{run.path / 'tune.md'} (nothing to resume)")
    base, settings = tjournal.load_settings(run.path, Settings)
    try:
        config = validate(RunConfig.from_dict(base))
    except ValueError as exc:
        raise tjournal.JournalError(f"tune {run.run_id}: its config is no longer valid ({exc}); "
                                    "start a new tune") from None
    return config, settings


__all__ = ["resume_settings", "tune"]
