"""The app's repeats: Run with "Repeats" at N starts the same config N times, one run after the
other, then shows the spread across them (profiler.cli.repeats, the same as `effiscope run
--repeats N`). Each repeat is a normal run in the history, named "NAME repeat i/N" and tagged
with its group. Stopping a repeat, a failed one, or a restart ends the series; the spread counts
the repeats that completed. Plain Python: the window calls it from start_run and _on_ended."""

from __future__ import annotations

from profiler.cli import repeats


class RepeatPlan:
    """Where a series of repeats stands."""

    def __init__(self) -> None:
        self.group: str | None = None
        self.of = 1
        self.index = 0
        self.base = ""
        self.run_ids: list[str] = []
        self.continuing = False
        """Set by the window just before it starts the next repeat (not a new series)."""

    @property
    def active(self) -> bool:
        return self.group is not None

    def name_for(self, of: int, base: str) -> str:
        """The next run's name: a new series (or a single run) unless `continuing`."""
        if not self.continuing:
            self.group = repeats.new_group() if of > 1 else None
            self.of, self.index, self.base, self.run_ids = max(of, 1), 0, base, []
        self.continuing = False
        if not self.active:
            return base
        self.index += 1
        return repeats.repeat_name(self.base, self.index, self.of)

    def started(self, store, run) -> None:
        """The run was created: mark its place in the series (StoreError when it cannot)."""
        if self.active:
            self.run_ids.append(run.run_id)
            repeats.mark(store, run, self.group, self.index, self.of)

    def ended(self, status: str, store) -> tuple[bool, list[str]]:
        """A run of the series ended: (start the next repeat?, the spread's lines when the series
        is over, else [])."""
        if not self.active:
            return False, []
        if status == "completed" and self.index < self.of:
            return True, []
        lines = repeats.report_lines(store, self.group, self.run_ids, self.of)
        self.group = None
        return False, lines

    def cancel(self, store) -> list[str]:
        """End the series now (a restart): the spread of what completed."""
        if not self.active:
            return []
        lines = repeats.report_lines(store, self.group, self.run_ids, self.of)
        self.group = None
        return lines
