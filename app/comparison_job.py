"""The Compare tab's work, off the GUI thread: read the ticked runs from the store, judge every
figure (profiler.report.compare, profiler.figures.significance: per-step Mann-Whitney and the bootstrap)
and build each settings diff, then hand the plain result back through a queued Qt signal.

The view starts one job per request on a one-thread pool and keeps only the newest answer
(jobs carry a generation number). A job never touches a widget.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QRunnable, Signal


class JobSignals(QObject):
    """Lives on the GUI thread; a job emits from its worker thread and Qt queues the call."""

    done = Signal(int, object)
    """(generation, result): result is {"run_ids", "deltas", "machine", "diffs"} or {"error"}."""


class ComparisonJob(QRunnable):
    """One comparison: the runs (baseline first) read, judged and diffed.

    loaded / evidence: caches (run id -> profiler.report.load.RunData / significance.Evidence)
    that the view hands from one job to the next while the ticked runs stay the same; only jobs
    touch them, one at a time."""

    def __init__(self, generation: int, store, run_ids: list[str], baseline_id: str,
                 names: dict[str, str], loaded: dict, evidence: dict, signals: JobSignals):
        super().__init__()
        self.generation, self.store = generation, store
        self.run_ids, self.baseline_id, self.names = run_ids, baseline_id, names
        self.loaded, self.evidence, self.signals = loaded, evidence, signals

    def run(self) -> None:
        try:
            result = self.compute()
        except Exception as exc:  # noqa: BLE001 - said in the view, never a dead thread
            result = {"error": f"{type(exc).__name__}: {exc}"}
        self.signals.done.emit(self.generation, result)

    def compute(self) -> dict:
        from profiler.report.compare import comparison, config_diff
        from profiler.report.load import load_run
        from profiler.store import StoreError

        for run_id in self.run_ids:
            if run_id not in self.loaded:
                try:
                    self.loaded[run_id] = load_run(self.store.open_run(run_id))
                except StoreError:
                    continue  # deleted meanwhile: compared without it
        runs = [self.loaded[r] for r in self.run_ids if r in self.loaded]
        base = next((r for r in runs if r.run_id == self.baseline_id), None)
        if base is None or len(runs) < 2:
            return {"run_ids": [r.run_id for r in runs], "deltas": [], "machine": {},
                    "diffs": {}}
        for run in runs:
            run.name = self.names.get(run.run_id, run.name)  # as the history calls it now
        ordered = [base] + [r for r in runs if r is not base]
        found = comparison(ordered, base, self.evidence)
        diffs = {other.run_id: config_diff([base, other], base, self.names)
                 for other in ordered[1:]}
        return {"run_ids": [r.run_id for r in ordered], "deltas": found["deltas"],
                "machine": found["machine"], "diffs": diffs}
