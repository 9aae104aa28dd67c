"""Explicit contracts: one worker command line, technique hooks checked at
registration, typed technique parameters, one rule mechanism, a constructor per message."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.helpers import ListChannel

ROOT = Path(__file__).resolve().parent.parent


def _definitions(name: str) -> list[str]:
    """Modules of profiler/ and techniques/ that define a top-level function `name`."""
    found = []
    for package in ("profiler", "techniques"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            if any(isinstance(node, ast.FunctionDef) and node.name == name for node in tree.body):
                found.append(path.relative_to(ROOT).as_posix())
    return found


# --- one worker command --------------------------------------------------------------------------
def test_the_worker_command_has_one_home_that_every_launcher_uses(monkeypatch):
    """profiler.wire.launch.worker_command is the only one; a WorkerProcess given no command starts
    what it names (before, profiler.wire.client had a second copy that ignored launch settings)."""
    from profiler.wire import client, launch

    assert _definitions("worker_command") == ["profiler/wire/launch.py"]
    assert launch.worker_command() == [sys.executable, "-m", "profiler.engine.worker"]
    monkeypatch.setattr(launch, "worker_command", lambda config=None: [
        sys.executable, "-c", "print('from the one worker command', flush=True)"])
    worker = client.WorkerProcess()
    try:
        assert worker.lines.get(timeout=30) == b"from the one worker command\n"
    finally:
        worker.shutdown(1)


# --- a constructor per message -------------------------------------------------------------------
def _every_constructed_message() -> list[tuple[str, dict]]:
    from profiler.wire import protocol as p

    summary = {"figures": {"tokens_per_s": {"value": 1.0, "unit": "tokens/s", "how": "median"}},
               "steps_completed": 3}
    return [
        ("worker", p.hello({"effiscope": "1"}, {"cuda": False}, {"os": "linux"}, pid=7,
                           job={"world_size": 2})),
        ("worker", p.started({"workload": "train", "device": "cpu", "techniques": [],
                              "model": {"preset": "gpt-nano", "parameters": 10}})),
        ("worker", p.sample(3, 0.5, {"loss_train": 2.0, "tokens_per_s": None}, phase="measure")),
        ("worker", p.sample(0, 0.0, {"loss_val": 2.5})),
        ("worker", p.warning("disk nearly full", origin="front", received=1.0)),
        ("worker", p.info("AdamW: fused", step=0, technique="optimizer")),
        ("worker", p.phase("warmup over", step=2)),
        ("worker", p.toggle("precision off", step=4, technique="precision", params={})),
        ("worker", p.refused("no run in progress: 'set' ignored")),
        ("worker", p.event("info", "plain event")),
        ("worker", p.profile(5, [{"name": "aten::mm", "self_s": 0.1}], steps=2)),
        ("worker", p.error("oom", "out of memory at step 4", "lower train.batch_size",
                           traceback="Traceback ...")),
        ("worker", p.error("crash", "rank 1 failed", "see the log", origin="front")),
        ("worker", p.done("completed", summary)),
        ("worker", p.done("failed", {})),
        ("worker", p.heartbeat(12.5)),
        ("front", p.start({"workload": "train"})),
        ("front", p.set_technique("precision", {"enabled": False})),
        ("front", p.profile_request(3)),
        ("front", p.stop()),
    ]


def test_every_message_constructor_builds_a_message_the_protocol_accepts():
    """Each constructor's output passes protocol.validate and survives an encode/decode round
    trip; together they cover every message type of both directions and every event kind."""
    from profiler.wire import protocol

    built = _every_constructed_message()
    for direction, message in built:
        assert protocol.validate(message, direction) is message
        line = protocol.encode(message, direction)
        assert protocol.decode(line, direction) == message
    worker_types = {m["type"] for d, m in built if d == "worker"}
    front_types = {m["type"] for d, m in built if d == "front"}
    assert worker_types == set(protocol.WORKER_MESSAGES)
    assert front_types == set(protocol.FRONT_MESSAGES)
    kinds = {m["kind"] for d, m in built if m["type"] == "event"}
    assert kinds == set(protocol.EVENT_KINDS)


def test_a_constructor_refuses_what_the_protocol_would_not_carry():
    from profiler.wire import protocol

    with pytest.raises(ValueError, match="event kind 'shout' is not one of toggle"):
        protocol.event("shout", "loud")
    with pytest.raises(protocol.ProtocolError, match="not one of"):
        protocol.validate(protocol.error("fatal", "x", "y"), "worker")
    with pytest.raises(protocol.ProtocolError, match="not one of"):
        protocol.validate(protocol.done("finished", {}), "worker")


def test_no_module_builds_a_protocol_message_as_a_raw_dict():
    """A dict literal whose "type" is a protocol message type is built only in protocol.py (the
    worker's internal `_eof` / `_bad_start` notes are no protocol types)."""
    from profiler.wire import protocol

    types = set(protocol.WORKER_MESSAGES) | set(protocol.FRONT_MESSAGES)
    raw = []
    for package in ("profiler", "techniques"):
        for path in sorted((ROOT / package).rglob("*.py")):
            where = path.relative_to(ROOT).as_posix()
            if where == "profiler/wire/protocol.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Dict):
                    continue
                for key, value in zip(node.keys, node.values, strict=True):
                    if (isinstance(key, ast.Constant) and key.value == "type"
                            and isinstance(value, ast.Constant) and value.value in types):
                        raw.append(f"{where}:{node.lineno}")
    assert raw == []


# --- technique hooks: a contract checked at registration ----------------------------------------
BAD_MODULE = '''
from techniques.registry import Param, TechniqueInfo, register

INFO = TechniqueInfo(name="zz_bad", label="Bad", category="speed", stage="loop",
                     summary="test only", source="tests",
                     params=(Param("size", int, 1, "a size", min=1, max=9),),
                     mid_run={mid_run!r})


{hooks}

register(INFO, {names})
'''


def _import_technique(tmp_path, mid_run: tuple, hooks: str, names: str):
    """Import a technique module written to a file, as a plugin would be imported."""
    import importlib.util

    path = tmp_path / "zz_bad.py"
    path.write_text(BAD_MODULE.format(mid_run=mid_run, hooks=hooks, names=names),
                    encoding="utf-8")
    spec = importlib.util.spec_from_file_location("zz_bad", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("mid_run", "hooks", "names", "words"), [
    (("enabled", "size"), "def apply(state, params):\n    return 'on'\n\n"
     "def remove(state):\n    return 'off'\n", "apply=apply, remove=remove",
     "mid_run names size but it has no change hook, so a mid-run set would fail; define "
     "change\\(state, params\\)"),
    (("enabled",), "def apply(state, params):\n    return 'on'\n", "apply=apply, change=apply",
     "mid_run has \"enabled\" but it has no remove hook"),
    ((), "def apply(state):\n    return 'on'\n", "apply=apply",
     "its apply takes \\(state\\) but the engine calls apply\\(state, params\\)"),
    (("size",), "def apply(state, params):\n    return 'on'\n\n"
     "def change(state, params, extra):\n    return 'x'\n", "apply=apply, change=change",
     "its change takes \\(state, params, extra\\) but the engine calls change\\(state, params\\)"),
    (("sise",), "def apply(state, params):\n    return 'on'\n", "apply=apply, change=apply",
     "mid_run names sise, which is no parameter of it"),
    ((), "def apply(state, params):\n    return 'on'\n\ndef remove(state):\n    return 'off'\n",
     "apply=apply, remove=remove", "it has a remove hook the engine never calls"),
], ids=["mid-run-param-without-change", "enabled-without-remove", "apply-wrong-arguments",
        "change-wrong-arguments", "mid-run-names-no-parameter", "dead-remove"])
def test_a_bad_technique_module_fails_at_import_with_a_sentence(tmp_path, mid_run, hooks, names,
                                                               words):
    from techniques import registry

    try:
        with pytest.raises(registry.BadTechnique, match=f"technique 'zz_bad' .*: {words}"):
            _import_technique(tmp_path, mid_run, hooks, names)
        with pytest.raises(registry.UnknownTechnique):  # nothing half-registered is left
            registry.get("zz_bad")
    finally:
        registry.unregister("zz_bad")


def test_a_good_plugin_module_registers_and_the_engine_calls_its_hooks(tmp_path):
    """The engine reaches a technique only through its registered hooks: this one has no module
    under techniques/, and a mid-run change and removal still reach its functions."""
    import torch

    from techniques import registry, runtime

    hooks = ("calls = []\n\ndef apply(state, params):\n    calls.append(('apply', params.get("
             "'size')))\n    return 'on'\n\ndef change(state, params):\n    calls.append(("
             "'change', params.get('size')))\n    return 'changed'\n\ndef remove(state):\n"
             "    calls.append(('remove', None))\n    return 'off'\n")
    try:
        module = _import_technique(tmp_path, ("enabled", "size"), hooks,
                                   "apply=apply, change=change, remove=remove")
        state = runtime.TrainState.plain(torch.nn.Linear(2, 2))
        assert runtime.change(state, "zz_bad", {"size": 3}) == "on"
        assert runtime.change(state, "zz_bad", {"size": 4}) == "changed"
        assert runtime.change(state, "zz_bad", {"enabled": False}) == "off"
        assert module.calls == [("apply", 3), ("change", 4), ("remove", None)]
    finally:
        registry.unregister("zz_bad")


def test_every_registered_technique_keeps_the_hook_contract():
    """Every built-in technique registered (the contract held at import); what its metadata
    promises, its hooks can do."""
    from techniques import registry, runtime

    techniques = registry.all_techniques()
    assert len(techniques) == len(registry._BUILTIN)
    for info in techniques:
        hooks = registry.hooks(info.name)
        assert callable(hooks.apply), info.name
        if info.mid_run:
            assert callable(hooks.change), info.name
        assert (hooks.remove is not None) == ("enabled" in info.mid_run), info.name
    pruners = {info.name for info in techniques if runtime.is_pruner(info.name)}
    assert set(runtime.PRUNE_ORDER) <= pruners == {
        "prune_magnitude", "prune_structured", "prune_semi_structured", "prune_wanda"}
    assert {info.name for info in techniques if registry.hooks(info.name).save} == {
        "lora", "qlora"}


# --- one rule mechanism --------------------------------------------------------------------------
def test_a_rule_is_asked_by_validation_the_plan_and_a_mid_run_change_alike():
    """One contract, config_check(params, facts), one call path (registry.rule_problem): a rule
    that reads the techniques in force and the workload refuses the same combination before the
    run (ConfigError), in the engine's plan (Unsupported) and in a mid-run `set` (Refused)."""
    import torch

    from profiler.config import ConfigError, RunConfig, validate
    from profiler.errors import Unsupported
    from techniques import registry, runtime

    asked = []

    def rule(params, facts):
        asked.append(facts.workload)
        if "grad_clip" in facts.techniques and facts.workload == "train":
            return "cannot run beside grad_clip in a train run; remove one of them"
        return None

    registry.register(registry.TechniqueInfo(
        name="zz_rule", label="Rule probe", category="speed", stage="loop", summary="test only",
        source="tests", mid_run=("enabled",), config_check=rule),
        apply=lambda state, params: "on", change=lambda state, params: "on",
        remove=lambda state: "off")
    sentence = "techniques.zz_rule: cannot run beside grad_clip in a train run; remove one"
    try:
        both = {"zz_rule": {}, "grad_clip": {}}
        with pytest.raises(ConfigError, match=sentence):
            validate(RunConfig(techniques=both))
        with pytest.raises(Unsupported, match=sentence):
            runtime.plan(RunConfig(techniques=both), {"world_size": 1})
        state = runtime.TrainState.plain(torch.nn.Linear(2, 2), config=RunConfig())
        state.active["grad_clip"] = registry.validate_params("grad_clip", {})
        with pytest.raises(runtime.Refused, match=f"{sentence}.*the run goes on as it was"):
            runtime.change(state, "zz_rule", {"enabled": True})
        assert "zz_rule" not in state.active
        assert asked == ["train"] * 3
        validate(RunConfig(techniques={"zz_rule": {}}))  # alone it passes
        state.config = RunConfig(workload="infer")
        assert runtime.change(state, "zz_rule", {"enabled": True}) == "on"
    finally:
        registry.unregister("zz_rule")


def test_the_combination_rules_are_config_checks_of_the_one_contract():
    """The two former combination checks (attention's fp32 kernels, 2:4's formats) are
    config_checks now; no technique declares a second mechanism."""
    from techniques import registry

    assert not hasattr(registry.TechniqueInfo, "check_combination")
    assert not hasattr(registry, "combination_reason")
    ruled = {info.name for info in registry.all_techniques() if info.config_check}
    assert {"attention", "prune_semi_structured", "lora", "qlora", "lr_schedule",
            "optimizer_low_bit"} == ruled


# --- one summary path for a failed run -----------------------------------------------------------


def _fail_after_steps(monkeypatch, exc: Exception, control_prepared=None) -> list[dict]:
    """Run a fake train workload that sends `started`, 5 steps, then raises `exc`."""
    import queue
    import types

    from profiler.engine import channel as worker_io
    from profiler.engine import worker
    from profiler.wire import protocol
    from tests.helpers import run_config

    def run(config, emit, control):
        if control_prepared is not None:
            control.note_prepared(control_prepared)
        emit(protocol.started({"workload": "train", "device": "cpu"}))
        for step in range(1, 6):
            emit(protocol.sample(step, step / 10, {"tokens_per_s": 100.0 * step,
                                                   "loss_train": 4.0 - step / 10},
                                 phase="warmup" if step == 1 else "measure"))
        raise exc

    monkeypatch.setitem(sys.modules, "profiler.engine.workloads.train", types.SimpleNamespace(run=run))
    channel = ListChannel()
    assert worker.run_one(protocol.start(run_config(steps=50, data="random").to_dict()), channel,
                          worker_io.Control(queue.Queue(), channel)) == "failed"
    return channel.messages


def test_a_failed_run_has_one_summary_what_the_worker_saw_it_measure(monkeypatch, capsys):
    """Before, a `partial_summary` attribute nobody set was read first; now an exception's
    attributes have no say: the figures are the measured steps' (one path)."""
    exc = RuntimeError("a planted failure at step 6")
    exc.partial_summary = {"steps_completed": 999, "figures": {}}  # type: ignore[attr-defined]
    messages = _fail_after_steps(monkeypatch, exc)
    capsys.readouterr()
    dones = [m for m in messages if m["type"] == "done"]
    assert len(dones) == 1 and dones[0]["status"] == "failed"
    summary = dones[0]["summary"]
    assert summary["steps_completed"] == 5 and summary["measured_steps"] == 4
    assert summary["figures"]["tokens_per_s"]["value"] == 400.0  # median of steps 2..5
    assert summary["figures"]["loss_train_final"]["value"] == 3.5
    assert "a planted failure at step 6" in summary["stop_reason"]


def test_a_failed_runs_summary_the_schema_refuses_ends_bare_but_ends(monkeypatch, capsys):
    """Contention figures of the wrong type (a bug elsewhere) must not lose the run's end: one
    `done`, failed, with an empty summary, and the reason on stderr."""
    import types

    prepared = types.SimpleNamespace(stop_sampler=lambda: None,
                                     contention=lambda: {"contended": "very"})
    messages = _fail_after_steps(monkeypatch, RuntimeError("boom"), prepared)
    err = capsys.readouterr().err
    dones = [m for m in messages if m["type"] == "done"]
    assert dones == [{"type": "done", "status": "failed", "summary": {}}]
    assert "the failed run's summary is dropped" in err and "contended" in err


# --- typed technique parameters -------------------------------------------------------------------
def test_every_technique_has_a_frozen_params_dataclass_made_from_its_params():
    import dataclasses

    from techniques import registry
    from techniques.params import TechniqueParams

    for info in registry.all_techniques():
        typed = registry.params_type(info.name)
        assert issubclass(typed, TechniqueParams) and dataclasses.is_dataclass(typed)
        assert typed.__dataclass_params__.frozen, info.name
        fields = {f.name: f for f in dataclasses.fields(typed)}
        assert list(fields) == [p.name for p in info.params + info.runtime_params]
        for param in info.params:
            assert fields[param.name].type is param.type and fields[param.name].default == \
                param.default, (info.name, param.name)
        for param in info.runtime_params:
            assert fields[param.name].default is None
        defaults = registry.validate_params(info.name, {})
        assert type(defaults) is typed and defaults.as_dict() == info.defaults()
        if info.params:
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(defaults, info.params[0].name, info.params[0].default)


@pytest.mark.parametrize(("name", "values", "words"), [
    ("grad_clip", {"max_norm": 0.0}, "techniques.grad_clip.max_norm: must be at least 1e-06, "
                                     "got 0.0"),
    ("grad_accumulation", {"micro_batches": 2.5}, "micro_batches: must be int, got 2.5"),
    ("precision", {"dtype": "fp64"}, "precision.dtype: 'fp64' is not one of fp32, bf16, fp16"),
    ("attention", {"backend": True}, "attention.backend: must be str, got True"),
    ("optimizer", {"learning_rate": 0.1}, "optimizer.learning_rate: unknown parameter; valid "
                                          "ones are algorithm, implementation, momentum"),
])
def test_typed_params_are_checked_where_they_are_built(name, values, words):
    """The one place: validate_params (a config's table), the dataclass itself (direct
    construction) and replace() refuse the same values with the same sentence."""
    from techniques import registry

    with pytest.raises(ValueError, match=words.replace("(", "\\(")):
        registry.validate_params(name, values)
    if name != "optimizer":  # (an unknown key is the plain table's problem only)
        with pytest.raises(ValueError, match=words.split(": ", 1)[1].replace("(", "\\(")):
            registry.params_type(name)(**values)
        with pytest.raises(ValueError, match=words.split(": ", 1)[1].replace("(", "\\(")):
            registry.validate_params(name, {}).replace(**values)


def test_typed_params_read_as_attributes_and_travel_as_plain_data():
    import json

    from profiler.wire import protocol
    from techniques import registry

    clip = registry.validate_params("grad_clip", {"max_norm": 2})
    assert clip.max_norm == 2.0 and isinstance(clip.max_norm, float)  # an int taken as float
    assert clip == {"max_norm": 2.0} and dict(clip) == {"max_norm": 2.0}
    assert registry.validate_params("grad_clip", clip) is clip  # typed passes as it is
    optimizer = registry.validate_params("optimizer", {"algorithm": "sgd"})
    assert optimizer.learning_rate is None and "learning_rate" not in optimizer.as_dict()
    changed = optimizer.replace(learning_rate=5e-4)
    assert changed.as_dict() == {"algorithm": "sgd", "implementation": "auto", "momentum": 0.9,
                                 "learning_rate": 5e-4}
    with pytest.raises(TypeError):
        json.dumps(clip)  # not plain data by itself...
    line = protocol.encode(protocol.info("x", params=changed))  # ...but on the wire it is
    assert protocol.decode(line)["params"] == changed.as_dict()


def test_a_config_round_trips_through_toml_json_and_typed_params():
    """Plain data in files and on the wire, typed objects inside the engine: TOML -> RunConfig
    -> typed (defaults filled) -> plain again equals the file's tables with their defaults."""
    import json

    from profiler.config import RunConfig, validate
    from techniques import registry

    text = ("[techniques.precision]\ndtype = \"bf16\"\n[techniques.grad_clip]\nmax_norm = 3\n"
            "[techniques.lora]\nrank = 4\ntarget = \"mlp\"\n")
    config = validate(RunConfig.from_toml(text))
    again = RunConfig.from_toml(config.to_toml())
    assert again.techniques == config.techniques == {
        "precision": {"dtype": "bf16"}, "grad_clip": {"max_norm": 3}, "lora": {"rank": 4,
                                                                              "target": "mlp"}}
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))).techniques == \
        config.techniques
    typed = registry.in_force(config.techniques)
    assert typed["lora"].rank == 4 and typed["lora"].alpha == 16.0
    assert typed["grad_clip"].max_norm == 3.0 and "optimizer" in typed  # always on
    for name, table in config.techniques.items():
        assert typed[name].as_dict() == {**registry.get(name).defaults(), **table}


def test_the_engine_holds_typed_params_and_reports_plain_ones():
    import torch

    from profiler.config import RunConfig
    from techniques import registry, runtime
    from techniques.params import TechniqueParams

    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    config = RunConfig(techniques={"grad_clip": {"max_norm": 2.0},
                                   "grad_accumulation": {"micro_batches": 2}})
    state = runtime.TrainState(config=config, device=torch.device("cpu"), caps={}, model=model)
    applied = runtime.apply_all(state, runtime.plan(config, {"world_size": 1}, ("loop",)))
    assert {item["name"] for item in applied} == {"grad_clip", "grad_accumulation"}
    for item in applied:
        assert type(item["params"]) is dict  # what leaves the engine is plain
        assert isinstance(state.active[item["name"]], registry.params_type(item["name"]))
    assert state.grad_clip_norm == 2.0 and state.micro_batches == 2
    runtime.change(state, "grad_accumulation", {"micro_batches": 4})
    assert isinstance(state.active["grad_accumulation"], TechniqueParams)
    assert state.active["grad_accumulation"].micro_batches == 4 and state.micro_batches == 4


def test_technique_metadata_and_typed_params_import_without_torch():
    """The registry, every technique's metadata and their typed parameters with torch made
    unimportable (the app builds its panel from them)."""
    import subprocess

    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "from techniques import registry\n"
        "for info in registry.all_techniques():\n"
        "    typed = registry.validate_params(info.name, {})\n"
        "    assert typed.as_dict() == info.defaults(), info.name\n"
        "assert registry.validate_params('precision', {'dtype': 'fp16'}).dtype == 'fp16'\n"
        "assert not [m for m in sys.modules if m.startswith('torch.')]\n"
        "print('ok', len(registry.all_techniques()))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok ")
