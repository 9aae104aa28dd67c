"""Validation: what is checkable before a run is checked before a run (exit 2, nothing stored),
with a sentence that names the setting or flag and its bound; a start that cannot run ends the
run; a loss that stops being a number stops the run; and the README's promises on overrides.
Most cases call the CLI in-process (argument and config refusals start no worker); a few run a
real worker.
"""

from __future__ import annotations

import queue

import psutil
import pytest

from profiler.config import ConfigError, RunConfig, resolve, validate
from profiler.config import rules as config_rules
from profiler.engine import channel as worker_io
from profiler.engine import worker
from profiler.wire import protocol
from tests.faults import assert_fix_sentence
from tests.helpers import ListChannel, cli_in_process, run_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _no_run_stored(home) -> bool:
    runs = home / "runs"
    return not runs.exists() or not any(runs.iterdir())


# --- contradictions in the config are refused before a run exists -----------------------------
CONTRADICTIONS = [
    ("lora-with-qlora", "[techniques.lora]\n[techniques.qlora]\n", "techniques.lora",
     "cannot be combined with techniques.qlora"),
    ("wanda-amount-1", "workload = 'compress'\n[techniques.prune_wanda]\namount = 1.0\n",
     "techniques.prune_wanda", "choose an amount below 1"),
    ("low-bit-optimizer-with-sgd", "[techniques.optimizer]\nalgorithm = 'sgd'\n"
     "[techniques.optimizer_low_bit]\n", "techniques.optimizer_low_bit",
     "optimizer.algorithm is sgd"),
    ("fp16-on-a-cpu-device", "device = 'cpu'\n[techniques.precision]\ndtype = 'fp16'\n",
     "techniques.precision", "needs a CUDA GPU"),
    ("qlora-on-a-cpu-device", "device = 'cpu'\n[techniques.qlora]\n", "techniques.qlora",
     "CUDA"),
    ("structured-heads-of-mlp", "workload = 'compress'\n[techniques.prune_structured]\n"
     "dim = 'heads'\nlayers = 'mlp'\n", "techniques.prune_structured", "choose layers = all"),
    ("int8-with-weight-cast", "workload = 'infer'\n[techniques.quantize_int8_dynamic]\n"
     "[techniques.weight_cast]\n", "techniques.quantize_int8_dynamic", "enable only one"),
]


@pytest.mark.parametrize("text, field, words", [c[1:] for c in CONTRADICTIONS],
                         ids=[c[0] for c in CONTRADICTIONS])
def test_a_contradiction_is_exit_2_and_no_failed_run(text, field, words, tmp_path, capsys,
                                                     effiscope_home):
    toml = tmp_path / "run.toml"
    toml.write_text(text)
    code, err = cli_in_process(["run", str(toml)], capsys)
    assert code == 2, err
    assert words in err
    assert_fix_sentence(err.removeprefix("effiscope: "), field)
    assert _no_run_stored(effiscope_home)  # it used to be a failed run in the history


def test_the_worker_keeps_the_check_as_a_second_line(capsys):
    """A front end that skips validation (another version, a script) still gets a config error
    from the worker's own validation, before anything is built."""
    config = run_config(steps=2, data="random").to_dict()
    config["techniques"] = {"lora": {}, "qlora": {}}
    channel = ListChannel()
    status = worker.run_one(protocol.start(config), channel, worker_io.Control(queue.Queue(), channel))
    capsys.readouterr()
    error = next(m for m in channel.messages if m["type"] == "error")
    assert status == "failed" and error["kind"] == "config"
    assert "cannot be combined" in error["message"]
    assert "started" not in [m["type"] for m in channel.messages]


def test_every_technique_plugs_its_config_check_into_validation():
    """The mechanism is the registry's, not a list in the validator: a new technique's declared
    conflict, its machine check run against machines that can do everything, and its
    config_check all refuse at validation."""
    from techniques import registry

    def machine_check(params, caps):
        return "needs more cores than exist" if params["size"] > 10 else None

    def config_check(params, facts):
        return "longer than the run" if params["size"] > facts.steps else None

    info = registry.register(registry.TechniqueInfo(
        name="zz_probe", label="Probe", category="speed", stage="loop", summary="test only",
        source="test", params=(registry.Param("size", int, 1, "size"),),
        conflicts=("grad_clip",), check=machine_check, config_check=config_check),
        apply=lambda state, params: "probed")
    try:
        assert info.config_check is config_check
        for text, words in (("[techniques.zz_probe]\n[techniques.grad_clip]\n", "grad_clip"),
                            ("[techniques.zz_probe]\nsize = 11\n", "more cores"),
                            ("[limits]\nsteps = 3\nwarmup_steps = 1\n[techniques.zz_probe]\nsize = 5\n",
                             "longer than the run")):
            with pytest.raises(ConfigError, match=words) as found:
                validate(RunConfig.from_toml(text))
            assert found.value.field == "techniques.zz_probe"
        validate(RunConfig.from_toml("[techniques.zz_probe]\nsize = 2\n"))
    finally:
        registry.unregister("zz_probe")


@pytest.mark.skipif("_cuda()", reason="the refusal is of a machine without CUDA")
@pytest.mark.parametrize("argv, words", [
    (["run", "nano", "--device", "cuda", "--steps", "2", "--warmup", "1"], "no CUDA GPU"),
    (["run", "{fp16}"], "fp16 autocast with a gradient scaler needs a CUDA GPU"),
], ids=["device-cuda", "fp16-on-auto"])
def test_what_this_machine_cannot_do_is_refused_before_the_run(argv, words, tmp_path, capsys,
                                                               effiscope_home):
    """The README's "refused before the run": exit 2 and no failed run, where the worker used
    to refuse after the run was created (exit 1)."""
    toml = tmp_path / "fp16.toml"
    toml.write_text("device = 'auto'\n[techniques.precision]\ndtype = 'fp16'\n")
    code, err = cli_in_process([a.replace("{fp16}", str(toml)) for a in argv], capsys)
    assert code == 2 and words in err and "nothing was run" in err, err
    assert _no_run_stored(effiscope_home)


# --- tune --device cuda on a CPU-only torch ---------------------------------------------------
@pytest.mark.skipif("_cuda()", reason="the refusal is of a machine without CUDA")
@pytest.mark.parametrize("argv", [["tune", "nano", "--device", "cuda"],
                                  ["bench", "techniques", "--device", "cuda"],
                                  ["bench", "tune", "--device", "cuda"]],
                         ids=["tune", "bench-techniques", "bench-tune"])
def test_a_cuda_device_without_cuda_is_a_sentence_not_an_assertion(argv, capsys):
    code, err = cli_in_process(argv, capsys)
    assert code == 2, err
    assert "no CUDA GPU" in err and "AssertionError" not in err and "Traceback" not in err


# --- bounds said (the bad-input table in test_bad_input.py holds the plain ones) -----------
@pytest.mark.parametrize("text", [
    "[limits]\nsteps = 20\n[techniques.lr_schedule]\nwarmup_steps = 20\n",  # equal: allowed
    "workload = 'infer'\n[limits]\nsteps = 5\nwarmup_steps = 1\n"
    "[techniques.lr_schedule]\nwarmup_steps = 500\n",  # no training: the schedule is unused
    "[techniques.lora]\nrank = 128\n",  # exactly gpt-nano's width
], ids=["warmup-equal-to-run", "warmup-in-infer", "lora-rank-equal-to-width"])
def test_the_new_rules_are_not_stricter_than_they_say(text):
    validate(RunConfig.from_toml(text))


def test_lora_rank_is_bounded_by_a_grouped_query_models_narrow_projections():
    """Grouped-query attention's k/v projections are n_kv_head x head_dim wide: 2 heads of 8
    in a width-32 llama make 16, and a rank of 20 is refused there but not on the MLP."""
    from profiler.models.hf_shape import HFShape

    shape = HFShape(n_layer=2, n_head=4, n_embd=32, block_size=128, vocab_size=320,
                    description="llama", n_kv_head=2, intermediate_size=64)
    assert config_rules.linear_widths(shape) == {"attention": 16, "mlp": 32}
    config = RunConfig(techniques={"lora": {"rank": 20}})
    facts = config_rules.facts(config, shape)
    from techniques import lora, registry

    assert "16" in lora.config_check(registry.validate_params("lora", {"rank": 20}), facts)
    assert lora.config_check(registry.validate_params("lora", {"rank": 20, "target": "mlp"}),
                             facts) is None


# --- the README: flags and files judged together ----------------------------------------------
def test_the_readme_override_example_is_valid():
    config = resolve("nano", {"limits.steps": 50, "train.batch_size": 8, "train.seq_len": 64,
                              "train.learning_rate": 1e-3, "device": "cpu", "name": "my-test"})
    assert config.limits.steps == 50 and config.name == "my-test"


def test_the_toml_is_validated_after_the_flags(tmp_path):
    """[techniques.ddp] in the file with --nproc 2 is a valid job (it used to be refused as a
    ddp run of one process, before --nproc was applied)."""
    toml = tmp_path / "ddp.toml"
    toml.write_text("[data]\nsource = 'random'\n[techniques.ddp]\n")
    config = resolve(str(toml), {"launch.nproc_per_node": 2})
    assert config.launch.nproc_per_node == 2 and "ddp" in config.techniques
    with pytest.raises(ConfigError, match="launch.nproc_per_node"):
        resolve(str(toml))


@pytest.mark.parametrize("argv, words", [
    (["run", "nano", "--steps", "5"], "(the value of nano; change it with --warmup)"),
    (["run", "nano", "--lr", "1e10"], "--lr 10000000000.0: train.learning_rate: must be above 0 "
                                      "and at most 10"),
    (["run", "nano", "--steps", "99999999999999999999"], "--steps 99999999999999999999: "
                                                         "limits.steps"),
    (["run", "nano", "--nproc", "2"], "neither ddp nor fsdp is enabled"),
    (["run", "nano", "--batch-size", "0"], "--batch-size 0: train.batch_size"),
    (["tune", "nano", "--space", ""], "--space '' names no dimension"),
    (["tune", "nano", "--space", " ; "], "names no dimension"),
    (["doctor", "--only", ",,,"], "doctor --only ',,,' names no check"),
    (["doctor", "--only", ""], "names no check"),
], ids=["steps-below-warmup", "lr-bound", "steps-20-digits", "nproc-without-ddp", "batch-0",
        "tune-space-empty", "tune-space-blank", "doctor-only-commas", "doctor-only-empty"])
def test_a_refused_flag_is_named_with_its_bound(argv, words, capsys, effiscope_home):
    code, err = cli_in_process(argv, capsys)
    assert code == 2, err
    assert words in err, err
    assert "Traceback" not in err and err.count("\n") == 1
    assert _no_run_stored(effiscope_home)


@pytest.mark.parametrize("device, words", [("bogus", "not 'bogus'"), ("cuda", "CUDA")])
def test_roofline_of_a_device_it_cannot_measure_says_so_once(device, words, capsys):
    if device == "cuda" and _cuda():
        pytest.skip("this machine has CUDA: the roofline would be measured")
    code, err = cli_in_process(["roofline", "--device", device], capsys)
    assert code == 2 and words in err
    assert "measuring" not in err and err.count("effiscope:") == 1, err


@pytest.mark.slow
def test_tune_ended_by_sigterm_exits_143_like_run(tmp_path, effiscope_home):
    """One convention: SIGTERM is 143 and Ctrl-C 130 for run and tune alike (tune said 130)."""
    import signal

    from tests.faults import cli as cli_process
    from tests.faults import wait_for

    toml = tmp_path / "tune.toml"
    run_config(steps=20, data="random").save(toml)
    proc = cli_process("tune", str(toml), "--space", "batch", "--budget", "10m")
    lines: list[str] = []
    try:
        import threading

        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        reader.start()
        wait_for(lambda: psutil.Process(proc.pid).children(recursive=True), 120,
                 "the first trial's worker")
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(300)  # hang guard: the trial stops, the report is printed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 143, "".join(lines)[-2000:]


# --- bench arguments, each refused before the first process ------------------
BENCH_FLAGS = [
    (["parallel", "--nproc", "0"], "argument --nproc: must be between 2 and 1024, got 0"),
    (["parallel", "--nproc", "-2"], "argument --nproc: must be between 2 and 1024, got -2"),
    (["parallel", "--warmup", "30"], "--warmup 30 leaves no measured step of --steps 30"),
    (["startup", "--repeats", "0"], "argument --repeats: must be between 1 and 1000, got 0"),
    (["techniques", "--steps", "0"], "argument --steps: must be between 1 and 100000, got 0"),
    (["techniques", "--only", "zzz"], "--only 'zzz' matches no variant; the variants are"),
    (["techniques", "--only", ","], "--only ',' names nothing"),
    (["techniques", "--device", "tpu"], "--device: device: 'tpu' is not a device"),
    (["compress", "--train-steps", "-1"], "argument --train-steps: must be between 0 and 100000, got -1"),
    (["compress", "--only", "zzz"], "--only 'zzz' matches no option"),
    (["compress", "--gen-len", "900"], "--gen-len: infer.gen_len: prompt_len + gen_len"),
    (["compress", "--repeats", "many"], "argument --repeats: must be a whole number, got 'many'"),
    (["overhead", "--steps", "0", "--warmup", "0", "--repeats", "0"],
     "argument --steps: must be between 2 and 100000, got 0"),
    (["overhead", "--warmup", "0"], "argument --warmup: must be 1 or more, got 0"),
    (["overhead", "--swap-s", "-1"], "argument --swap-s: must be a number of 0 or more"),
    (["overhead", "--swap-s", "nan"], "argument --swap-s: must be a number of 0 or more"),
    (["overhead", "--cost-steps", "5"], "--warmup 10 leaves no measured step of --cost-steps 5"),
    (["tune", "--grid-steps", "2"], "--grid-steps 2 is below --min-steps 6"),
    (["tune", "--eta", "1"], "argument --eta: must be 2 or more, got 1"),
    (["tune", "--space", ""], "names no dimension"),
]


@pytest.mark.parametrize("argv, words", BENCH_FLAGS, ids=[" ".join(c[0]) for c in BENCH_FLAGS])
def test_a_bench_argument_out_of_range_is_exit_2_before_any_process(argv, words, capsys):
    code, err = cli_in_process(["bench", *argv], capsys)
    assert code == 2, err
    assert words in err, err
    assert "Traceback" not in err
    assert psutil.Process().children(recursive=True) == []  # no worker was ever started
