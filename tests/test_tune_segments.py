"""Segment trials of the tuner: the worker's mid-run micro-batch change, the grouping of
candidates into warm runs, the driver of a warm run's windows, and the search over rounds."""

from __future__ import annotations

from profiler.config import validate
from profiler.engine.workloads import train
from tests.helpers import nano_config


class SetMany:
    """A front end that sends several mid-run commands at its `step`-th poll."""

    should_stop = False
    dist = None

    def __init__(self, at: dict[int, list[dict]]):
        self.at, self.calls = at, 0

    def poll(self) -> list:
        self.calls += 1
        return [dict(c) for c in self.at.get(self.calls, [])]


def test_a_train_run_changes_its_micro_batch_mid_run_at_a_constant_global_batch():
    config = nano_config(steps=8, eval_interval=0, batch_size=4, seq_len=16)
    config.limits.warmup_steps = 1
    config.data.max_train_bytes = 40_000
    validate(config)
    messages: list[dict] = []
    switch = [{"type": "set", "technique": "train", "params": {"batch_size": 2}},
              {"type": "set", "technique": "grad_accumulation", "params": {"micro_batches": 2}}]
    bad = [{"type": "set", "technique": "train", "params": {"batch_size": 0}},
           {"type": "set", "technique": "train", "params": {"batch_size": 2, "seq_len": 8}}]
    summary = train.run(config, messages.append, SetMany({4: switch, 6: bad}))
    toggles = [m for m in messages if m["type"] == "event" and m["kind"] == "toggle"]
    assert [t["technique"] for t in toggles] == ["train", "grad_accumulation"]
    assert "micro-batch 4 -> 2 sequences" in toggles[0]["message"]
    # 2 x 2 sequences of 16 tokens: the global batch of the config's 4 x 1, kept.
    assert toggles[-1]["tokens_per_step"] == 4 * 16
    parts = summary["segments"]
    assert [p["start_step"] for p in parts] == [1, 4]
    assert {p["figures"]["tokens_per_step"]["value"] for p in parts} == {4 * 16}
    refused = [m for m in messages if m["type"] == "event" and m["kind"] == "refused"]
    assert len(refused) == 2 and all("batch_size" in r["message"] for r in refused)
    assert summary["effective_batch"] == 4 and config.train.batch_size == 2
