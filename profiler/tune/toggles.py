"""Which candidates can share one warm run: the dimensions a running train worker can switch
with a mid-run `set` (micro-batch x accumulation at a constant global batch, checkpointing,
precision, attention), the groups of candidates that differ only in those, and the `set`
commands that bring a running worker to a candidate.

Everything else needs a new build and so a run of its own: torch.compile (a switch recompiles,
and a compiled run's timing is the compiled graph's), the parallel wrapper and a torchrun job, the
optimizer kernel (chosen when the optimizer is built), quantization and the inference workload
(no step loop to switch in). Torch-free.
"""

from __future__ import annotations

from profiler.tune.dimensions import ATTENTION, Candidate, parse_pair, world_size
from profiler.tune.space import Space

TOGGLED = ("batch", "checkpoint", "precision", "attention")
"""Train dimensions a running worker switches mid-run (engine/workloads/loop.handle_command)."""
BATCH_SETTING = "train"
"""The `set` name of the micro-batch (engine.workloads.loop.BATCH_SETTING; the wire carries
it, the engine is not imported here)."""


def why_rebuilt(space: Space, candidate: Candidate) -> str | None:
    """Why `candidate` cannot be switched to mid-run (it gets a run of its own); None when it
    can."""
    base = space.base
    if base.workload != "train":
        return f"a {base.workload} run has no step loop to switch in"
    if world_size(base) > 1:
        return "a torchrun job is rebuilt for each candidate"
    values = candidate.as_dict()
    compiled = values.get("compile", "off") != "off"
    if compiled:
        return "torch.compile: a switch would recompile, and the graph is the candidate's own"
    return None


def group_key(space: Space, candidate: Candidate) -> tuple:
    """Candidates with the same key can be measured as segments of one warm run: the same
    values in every dimension a switch cannot change. A candidate that cannot be switched to
    has a key of its own."""
    if why_rebuilt(space, candidate) is not None:
        return ("alone", candidate.key)
    return tuple((d, v) for d, v in candidate.values if d not in TOGGLED)


def groups(space: Space, candidates: list[Candidate]) -> list[list[Candidate]]:
    """`candidates` in warm-run groups, each group in the order given, groups in the order of
    their first candidate."""
    out: dict[tuple, list[Candidate]] = {}
    for candidate in candidates:
        out.setdefault(group_key(space, candidate), []).append(candidate)
    return list(out.values())


def varying(candidates: list[Candidate]) -> list[str]:
    """The toggled dimensions whose value differs within a group."""
    return [d for d in TOGGLED
            if len({dict(c.values).get(d) for c in candidates}) > 1]


def set_commands(candidate: Candidate, dims: list[str]) -> list[dict]:
    """The `set` commands that bring a running worker to `candidate` in `dims`, each absolute
    (every parameter given), so that they hold whichever candidate ran before."""
    values = candidate.as_dict()
    out: list[dict] = []
    for dim in dims:
        value = values[dim]
        if dim == "batch":
            micro, accumulation = parse_pair(value)
            out.append(_set(BATCH_SETTING, {"batch_size": micro}))
            out.append(_set("grad_accumulation", {"enabled": False} if accumulation == 1
                            else {"enabled": True, "micro_batches": accumulation}))
        elif dim == "checkpoint":
            out.append(_set("activation_checkpointing", {"enabled": False} if value == "off"
                            else {"enabled": True, "every": int(value)}))
        elif dim == "precision":
            out.append(_set("precision", {"enabled": False} if value == "fp32"
                            else {"enabled": True, "dtype": value}))
        elif dim == "attention":
            implementation, backend = ATTENTION[value]
            out.append(_set("attention", {"enabled": True, "implementation": implementation,
                                          "backend": backend}))
        else:
            raise ValueError(f"{dim} cannot be switched mid-run")
    return out


def _set(technique: str, params: dict) -> dict:
    from profiler.wire import protocol

    return protocol.set_technique(technique, params)


__all__ = ["TOGGLED", "why_rebuilt", "group_key", "groups", "varying", "set_commands"]
