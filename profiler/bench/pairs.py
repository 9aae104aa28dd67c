"""Two measured processes at once, each on cores of its own: a paired measurement whose two
halves see the same moment of the machine.

Run one after the other, two measurements of the same loop on a shared VM differ by a few
percent from one round to the next (the machine's speed drifts within seconds), and the paired
ratio of a round inherits that noise. Run at the same time, both halves see the same drift, and
the ratio of a round spreads about 2.5 times less (an A/A pilot on a 2-core VM: 1.3 % against
3.2 % for 60 steps). Two things then have to hold for the ratio to be fair:

- both measured windows overlap the other's run completely: a process that runs its last steps
  alone no longer shares the machine's caches and memory bandwidth with the other (a pilot
  without the padding below saw whichever process finished last about 1 % faster in most rounds;
  a solo tail is the likely cause, not a proven one, and the padding removes it either way). Each side
  therefore runs `pad` unmeasured steps after its window, starts when the other does (the
  reference waits for a go), and a round whose windows do not overlap is not counted (`overlaps`);
- the cores are swapped every round, and within a round every `swap_s` seconds: on this VM
  one core can run a few percent slower than the other for a whole round (the host's load on
  it; a 120-step pilot saw ratios of 0.90x-1.09x, each side slow uniformly over every step),
  which a swap per round cancels only on average; swapped every few seconds, each side spends
  about as long on either core within the round.

The bench's front end (which reads the worker's messages, as the app does) shares the worker's
cores unless a core is left over: its cost then lands on the worker, never on the reference, so
the overhead measured this way is an upper bound of the worker's own.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from profiler.bench import loop
from profiler.bench.workers import available_cores, cores_text, pin_process

Clock = dict
"""A side's step clock (perf_counter, the same clock in every process on this machine):
"first" the end of its first step, "start" and "end" its measured window, "last" its last step."""


@dataclass
class PairPlacement:
    """Cores of the two sides (`first` runs the front end's candidate, the worker) and of the
    bench's own process; `round_cores(index)` swaps the sides on odd rounds."""

    threads: int
    first: set[int]
    second: set[int]
    spare: set[int]
    swap_s: float = 0.0

    def env(self) -> dict[str, str]:
        return {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}

    def round_cores(self, index: int) -> tuple[set[int], set[int], set[int]]:
        """(cores of side a, of side b, of the front end) in round `index`."""
        a, b = (self.first, self.second) if index % 2 == 0 else (self.second, self.first)
        return a, b, self.spare or a

    def apply(self, index: int, a_pid: int, b_pid: int) -> None:
        """Pin side a, side b and this process for round `index`."""
        a, b, front = self.round_cores(index)
        pin_process(a_pid, a)
        pin_process(b_pid, b)
        pin_process(os.getpid(), front)

    @contextlib.contextmanager
    def swapping(self, index: int, a_pid: int, b_pid: int):
        """While inside, swap the two sides' cores every `swap_s` seconds (starting from round
        `index`'s placement); on leaving, round `index`'s placement again. Nothing with
        `swap_s` 0."""
        if self.swap_s <= 0:
            yield
            return
        stop = threading.Event()

        def swap() -> None:
            flips = 0
            while not stop.wait(self.swap_s):
                flips += 1
                with contextlib.suppress(OSError):  # a side that has just exited
                    self.apply(index + flips, a_pid, b_pid)

        thread = threading.Thread(target=swap, name="effiscope-core-swap", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            with contextlib.suppress(OSError):
                self.apply(index, a_pid, b_pid)

    def describe(self) -> str:
        front = (f"the bench's front end on core {cores_text(self.spare)}" if self.spare else
                 "the bench's front end on the worker's core (its cost counts against the "
                 "worker)")
        return (f"{self.threads} torch thread{'s' if self.threads > 1 else ''} per measured "
                f"process, both running at once, on core {cores_text(self.first)} and core "
                f"{cores_text(self.second)}, swapped every round"
                + (f" and every {self.swap_s:g} s within it" if self.swap_s > 0 else "")
                + f"; {front}")


def pair_placement(threads: int | None = None, swap_s: float = 0.0) -> PairPlacement | str:
    """Two sides of `threads` cores each (default half the cores), swapped every `swap_s`
    seconds within a round, or why not."""
    cores = available_cores()
    if not hasattr(os, "sched_setaffinity") or not os.path.isdir("/proc/self/task"):
        return "this platform cannot pin processes to cores, which running both at once needs"
    threads = threads or len(cores) // 2
    if threads < 1 or 2 * threads > len(cores):
        return (f"running both at once needs two sets of {max(threads, 1)} cores and this "
                f"machine lets the bench use {len(cores)}: use --threads {len(cores) // 2}"
                if len(cores) > 1 else "running both at once needs 2 cores and this machine has 1")
    return PairPlacement(threads, set(cores[:threads]), set(cores[threads:2 * threads]),
                         set(cores[2 * threads:]), swap_s)


def overlaps(a: Clock, b: Clock) -> bool:
    """Whether each side's measured window lies inside the other side's run (first to last
    step), so neither measured a step while the other was not running."""
    return (b["first"] <= a["start"] and a["end"] <= b["last"]
            and a["first"] <= b["start"] and b["end"] <= a["last"])


MeasurePair = Callable[[int], tuple[loop.Measurement, loop.Measurement]]
"""Runs round `index`: both sides at once; their measurements, each with its "clock"."""


def schedule(repeats: int, warmup: int, restart_every: int = 0) -> list[tuple[str, int]]:
    """The rounds of a concurrent comparison, in order, as (kind, block): `restart_every` kept
    rounds per block (0: one block), each block run by processes of its own and opened by
    `warmup` dropped rounds."""
    per_block = restart_every or repeats
    rounds, block, left = [], 0, repeats
    while left > 0:
        kept = min(per_block, left)
        rounds += [("warmup", block)] * warmup + [("repeat", block)] * kept
        left -= kept
        block += 1
    return rounds


def compare(names: Sequence[str], measure: MeasurePair, metrics: Sequence[str], repeats: int,
            warmup: int = 0, log: Callable[[str], None] | None = None, restart_every: int = 0,
            restart: Callable[[], None] | None = None) -> dict:
    """`repeats` concurrent rounds of the two sides `names` (the first the baseline), in blocks
    of `restart_every` rounds (0: one block), `restart()` called between blocks so that each
    block runs in fresh processes, and `warmup` dropped rounds opening each block; the result has
    loop.compare()'s shape, order "concurrent", so loop.paired_ratio and the tables read it. A
    round with an error, or whose windows do not overlap, is not kept.

    Why blocks: a measured process's state (where its memory landed, how its heap has grown)
    lasts as long as the process, and on a shared VM it can favour one side for many rounds in
    a row; rounds of one process pair are then not independent, and their interval too narrow.
    Fresh processes every few rounds draw that state anew."""
    if len(names) != 2 or names[0] == names[1]:
        raise ValueError("a concurrent comparison has two sides with different names")
    if repeats < 1 or warmup < 0 or restart_every < 0:
        raise ValueError("repeats must be 1 or more, warmup and restart_every 0 or more")
    if restart_every and restart is None:
        raise ValueError("restarting every few rounds needs a restart()")
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    kept: dict[str, list[loop.Measurement]] = {name: [] for name in names}
    errors: dict[str, list[str]] = {name: [] for name in names}
    rounds = schedule(repeats, warmup, restart_every)
    apart, repeat = 0, 0
    for index, (tag, block) in enumerate(rounds):
        if index and block != rounds[index - 1][1]:
            log(f"fresh processes for rounds block {block + 1}")
            assert restart is not None
            restart()
        log(f"{tag} {index + 1}/{len(rounds)}: {names[0]} and {names[1]} at once")
        pair = measure(index)
        if tag == "repeat":
            repeat += 1
        failed = [(name, m["error"]) for name, m in zip(names, pair, strict=True) if "error" in m]
        for name, error in failed:
            errors[name].append(str(error))
        if failed:
            continue
        if not overlaps(pair[0]["clock"], pair[1]["clock"]):
            apart += 1
            for name in names:
                errors[name].append(f"round {index + 1}: the two measured windows did not overlap "
                                    "completely (raise --pad-steps)")
            continue
        if tag == "repeat":
            for name, m in zip(names, pair, strict=True):
                kept[name].append({**m, "round": repeat - 1, "block": block})
    return loop.summarise(names, kept, errors, metrics,
                          {"order": "concurrent", "repeats": repeats, "warmup_rounds": warmup,
                           "restart_every": restart_every, "blocks": rounds[-1][1] + 1,
                           "seed": 0, "rounds": [list(names)] * len(rounds),
                           "not_overlapping": apart})
