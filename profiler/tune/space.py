"""The search space of a run config on this machine: each dimension's values (only those this
machine can run, checked against the technique registry with the machine's capabilities; see
profiler.tune.dimensions), and their combinations as candidates. Torch-free: the app's "Find the
fastest" builds it too.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from profiler.config import ConfigError, RunConfig, validate
from profiler.tune.dimensions import (
    ALL_VALUES_HELP,
    INFER_DIMENSIONS,
    TRAIN_DIMENSIONS,
    Candidate,
    SpaceError,
    apply,
    base_value,
    default_values,
    dimensions_of,
    global_batch,
    label,
    micro_batches,
    parse_pair,
    unavailable,
    world_size,
)

__all__ = ["MAX_CANDIDATES", "Candidate", "Space", "SpaceError", "build_space", "checked_config",
           "global_batch", "micro_batches", "parse_pair", "parse_space", "world_size"]

MAX_CANDIDATES = 5000
"""More combinations than this is a space to restrict (--space), not to enumerate."""


@dataclass
class Space:
    base: RunConfig
    dimensions: dict[str, list[str]]
    """Each searched dimension's values; the first is the config's own."""
    fixed: dict[str, str]
    """Dimensions not searched, at the config's value."""
    left_out: list[dict] = field(default_factory=list)
    """{"dimension", "value", "reason"} for each value this machine or this config cannot run."""

    @property
    def baseline(self) -> Candidate:
        return self._candidate({d: vals[0] for d, vals in self.dimensions.items()})

    def _candidate(self, chosen: dict[str, str]) -> Candidate:
        values = {**self.fixed, **chosen}
        return Candidate(tuple((d, values[d]) for d in dimensions_of(self.base)))

    def candidates(self) -> list[Candidate]:
        """Every combination, the baseline first."""
        names = list(self.dimensions)
        out = [self._candidate(dict(zip(names, combo, strict=True)))
               for combo in itertools.product(*(self.dimensions[n] for n in names))]
        return out

    def size(self) -> int:
        total = 1
        for values in self.dimensions.values():
            total *= len(values)
        return total

    def config(self, candidate: Candidate) -> RunConfig:
        return apply(self.base, candidate)

    def label(self, candidate: Candidate) -> str:
        return label(self.base, candidate, self.baseline)


def parse_space(texts: list[str] | None, workload: str) -> dict[str, list[str] | None] | None:
    """`--space DIM` or `--space DIM=V1,V2` items -> {dim: values or None (the defaults)};
    None when no item was given (every dimension with its defaults)."""
    if not texts:
        return None
    allowed = INFER_DIMENSIONS if workload == "infer" else TRAIN_DIMENSIONS
    out: dict[str, list[str] | None] = {}
    for item in texts:
        for part in item.split(";"):
            part = part.strip()
            if not part:
                continue
            dim, sep, values = part.partition("=")
            dim = dim.strip()
            if dim not in allowed:
                raise SpaceError(f"--space: {dim!r} is not a dimension of a {workload} run; "
                                 f"choose from {', '.join(allowed)}")
            listed = [v.strip() for v in values.split(",") if v.strip()] if sep else None
            if sep and not listed:
                raise SpaceError(f"--space {dim}=: give values after '=' ("
                                 f"{ALL_VALUES_HELP[dim]}) or leave '=' out for the defaults")
            out[dim] = listed
    if not out:  # `--space ''` would search one combination of nothing
        raise SpaceError(f"--space {', '.join(repr(t) for t in texts)} names no dimension; give "
                         f"one or more of {', '.join(allowed)} (or leave --space out for all)")
    return out


def build_space(config: RunConfig, caps: dict, dims: dict[str, list[str] | None] | None = None
                ) -> Space:
    """The searchable space of `config` on a machine with capabilities `caps`.

    dims: {dimension: values, or None for its defaults}; None = every dimension with its
    defaults. The config's own value is always first (it is the baseline); values this machine
    cannot run are left out, with the reason, in `left_out`.
    """
    names = dimensions_of(config)
    caps = {**caps, "world_size": world_size(config)}
    wanted = dims if dims is not None else {d: None for d in names}
    if dims is None and world_size(config) < 2:
        wanted.pop("parallel", None)
    chosen: dict[str, list[str]] = {}
    left_out: list[dict] = []
    for dim in names:
        if dim not in wanted:
            continue
        base = base_value(config, dim)
        values = default_values(config, dim) if wanted[dim] is None else (
            [base] + [v for v in dict.fromkeys(wanted[dim]) if v != base])
        kept = []
        for value in values:
            reason = unavailable(config, dim, value, caps) if value != base or dim == "batch" else None
            if reason:
                left_out.append({"dimension": dim, "value": value, "reason": reason})
            else:
                kept.append(value)
        if len(kept) > 1 or wanted[dim] is not None:
            chosen[dim] = kept
    fixed = {d: base_value(config, d) for d in names if d not in chosen}
    space = Space(config, chosen, fixed, left_out)
    if space.size() > MAX_CANDIDATES:
        raise SpaceError(f"the space has {space.size():,} combinations, over the "
                         f"{MAX_CANDIDATES:,} a search enumerates; restrict it with --space "
                         "(e.g. --space batch --space precision --space optimizer)")
    return space


def checked_config(space: Space, candidate: Candidate) -> tuple[RunConfig | None, str | None]:
    """The candidate's config, validated; (None, why) when the combination is not a valid run."""
    try:
        return validate(space.config(candidate)), None
    except ConfigError as exc:
        return None, str(exc)
