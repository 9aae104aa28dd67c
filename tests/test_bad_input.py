"""Bad input, table-driven: every case gets one sentence that names the field and the fix, and
nothing crashes. A handful go through `effiscope run <toml>` (exit code 2, the sentence on
stderr), most through `validate()`, and what only the worker can see (the data folder, this
machine, the weights themselves) through the worker's own start handling."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
from pathlib import Path

import pytest

from profiler import cli
from profiler.config import ConfigError, RunConfig, validate
from profiler.engine import channel as worker_io
from profiler.engine import worker
from profiler.wire import protocol
from profiler.wire.client import worker_env
from tests.faults import assert_fix_sentence, assert_sentence
from tests.helpers import ListChannel, run_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture
def files(tmp_path: Path) -> Path:
    """Checkpoints and data folders for the cases: {dir} in a case is this folder."""
    (tmp_path / "garbage.safetensors").write_bytes(b"definitely not a safetensors file")
    (tmp_path / "bad-header.safetensors").write_bytes(b"\x10" + b"\x00" * 7 + b'{"a": broken}xx')
    (tmp_path / "no-meta.safetensors").write_bytes(b"\x02" + b"\x00" * 7 + b"{}")
    (tmp_path / "folder-without-weights").mkdir()
    (tmp_path / "empty").mkdir()
    binary = tmp_path / "binary"
    binary.mkdir()
    for index in range(6):
        (binary / f"part{index}.txt").write_bytes(os.urandom(3000) + b"\x00")
    images = tmp_path / "images"
    images.mkdir()
    for index in range(3):
        (images / f"photo{index}.jpg").write_bytes(os.urandom(500))
    (tmp_path / "one.bin").write_bytes(b"\x00\x01" * 3000)
    (tmp_path / "tiny.txt").write_text("too short\n")
    (tmp_path / "not-utf8.toml").write_bytes(b"name = '\xff\xfe'\n")
    return tmp_path


LONG = "/tmp/" + "d" * 5000

# (case id, TOML text, the field its sentence must name). Each is checked by validate(); {dir}
# is the `files` fixture's folder, {fifo} a named pipe.
CONFIG_CASES = [
    ("invalid-toml", 'name = "unterminated', "TOML"),
    ("unknown-section", "[modle]\npreset = 'gpt-nano'", "modle"),
    ("unknown-setting", "[train]\nbatchsize = 4", "train.batchsize"),
    ("unknown-technique", "[techniques.warp_drive]\nspeed = 9", "techniques.warp_drive"),
    ("technique-unknown-param", "[techniques.optimizer]\nlearning_rate = 1e-3",
     "techniques.optimizer.learning_rate"),
    ("technique-wrong-type", "[techniques.grad_clip]\nmax_norm = 'big'", "techniques.grad_clip.max_norm"),
    ("technique-not-a-table", "[techniques]\noptimizer = 3", "techniques.optimizer"),
    ("string-for-integer", "[train]\nbatch_size = '16'", "train.batch_size"),
    ("bool-for-integer", "[limits]\nsteps = true", "limits.steps"),
    ("float-for-integer", "[train]\nseq_len = 64.5", "train.seq_len"),
    ("string-for-number", "[train]\nlearning_rate = 'fast'", "train.learning_rate"),
    ("float-for-batch", "[train]\nbatch_size = 2.5", "train.batch_size"),
    ("bool-for-batch", "[train]\nbatch_size = true", "train.batch_size"),
    ("misspelt-setting", "[train]\nbatch_sise = 3", "train.batch_sise"),
    ("integer-for-section", "train = 3", "train"),
    ("toml-key-without-value", "this is = not toml", "TOML"),
    ("scalar-for-section", "train = 5", "train"),
    ("string-for-list", "[launch]\nssh = 'lab'\nssh_options = '-p 2222'", "launch.ssh_options"),
    ("negative-learning-rate", "[train]\nlearning_rate = -1e-3", "train.learning_rate"),
    ("zero-learning-rate", "[train]\nlearning_rate = 0.0", "train.learning_rate"),
    ("batch-0", "[train]\nbatch_size = 0", "train.batch_size"),
    ("negative-batch", "[train]\nbatch_size = -8", "train.batch_size"),
    ("sequence-longer-than-context", "[train]\nseq_len = 4096", "train.seq_len"),
    ("sequence-of-1", "[train]\nseq_len = 1", "train.seq_len"),
    ("negative-weight-decay", "[train]\nweight_decay = -0.1", "train.weight_decay"),
    ("beta-of-1", "[train]\nbeta2 = 1.0", "train.beta2"),
    ("no-eval-batches", "[train]\neval_batches = 0", "train.eval_batches"),
    ("zero-steps", "[limits]\nsteps = 0", "limits.steps"),
    ("negative-time-limit", "[limits]\ntime_s = -5.0", "limits.time_s"),
    ("warmup-not-below-steps", "[limits]\nsteps = 5\nwarmup_steps = 5", "limits.warmup_steps"),
    ("dropout-1", "[model]\ndropout = 1.0", "model.dropout"),
    ("unknown-preset", "[model]\npreset = 'gpt-5'", "model.preset"),
    ("unknown-model-source", "[model]\nsource = 'web'", "model.source"),
    ("unknown-workload", "workload = 'dance'", "workload"),
    ("unknown-device", "device = 'tpu'", "device"),
    ("unknown-data-source", "[data]\nsource = 'web'", "data.source"),
    ("data-path-empty", "[data]\nsource = 'path'", "data.path"),
    ("data-path-missing", "[data]\nsource = 'path'\npath = '/nonexistent/corpus'", "data.path"),
    ("val-fraction-too-big", "[data]\nval_fraction = 0.95", "data.val_fraction"),
    ("too-little-train-text", "[data]\nmax_train_bytes = 10", "data.max_train_bytes"),
    ("negative-peak", "peak_tflops = -1.0", "peak_tflops"),
    ("infer-longer-than-context", "workload = 'infer'\n[infer]\nprompt_len = 250\ngen_len = 10",
     "infer.gen_len"),
    ("distill-alpha-above-1", "workload = 'distill'\n[distill]\nalpha = 2.0", "distill.alpha"),
    # Incompatible combinations.
    ("ddp-on-one-process", "[techniques.ddp]", "launch.nproc_per_node"),
    ("two-processes-without-ddp", "[launch]\nnproc_per_node = 2", "techniques"),
    ("ddp-with-fsdp", "[launch]\nnproc_per_node = 2\n[techniques.ddp]\n[techniques.fsdp]",
     "techniques"),
    ("two-nodes-without-endpoint", "[launch]\nnnodes = 2\n[techniques.ddp]",
     "launch.rdzv_endpoint"),
    ("endpoint-without-port", "[launch]\nrdzv_endpoint = 'node0'", "launch.rdzv_endpoint"),
    ("node-rank-outside-job", "[launch]\nnode_rank = 3", "launch.node_rank"),
    ("quantization-in-training", "[techniques.quantize_int8_dynamic]",
     "techniques.quantize_int8_dynamic"),
    ("compress-without-compression", "workload = 'compress'", "techniques"),
    ("ssh-with-torchrun", "[launch]\nssh = 'me@lab'\nnproc_per_node = 2\n[techniques.ddp]",
     "launch.ssh"),
    ("ssh-host-is-an-option", "[launch]\nssh = '-oProxyCommand=sh'", "launch.ssh"),
    ("ssh-option-runs-a-command", "[launch]\nssh = 'lab'\nssh_options = ['-o', 'ProxyCommand=nc x 22']",
     "launch.ssh_options"),
    ("ssh-option-other-config", "[launch]\nssh = 'lab'\nssh_options = ['-F', '/tmp/evil']",
     "launch.ssh_options"),
    ("ssh-options-without-host", "[launch]\nssh_options = ['-p', '2222']", "launch.ssh_options"),
    ("remote-command-with-shell", "[launch]\nssh = 'lab'\nremote_command = 'effiscope worker; rm -rf ~'",
     "launch.remote_command"),
    # Missing or corrupt checkpoints (read from the file's header, before anything starts).
    ("checkpoint-path-empty", "workload = 'infer'\n[model]\nsource = 'checkpoint'", "model.path"),
    ("checkpoint-missing", "workload = 'infer'\n[model]\nsource = 'checkpoint'\n"
     "path = '{dir}/nowhere.safetensors'", "model.path"),
    ("checkpoint-folder-without-weights", "workload = 'infer'\n[model]\nsource = 'checkpoint'\n"
     "path = '{dir}/folder-without-weights'", "model.path"),
    ("checkpoint-garbage", "workload = 'infer'\n[model]\nsource = 'checkpoint'\n"
     "path = '{dir}/garbage.safetensors'", "model.path"),
    ("checkpoint-damaged-header", "workload = 'infer'\n[model]\nsource = 'checkpoint'\n"
     "path = '{dir}/bad-header.safetensors'", "model.path"),
    ("checkpoint-not-ours", "workload = 'infer'\n[model]\nsource = 'checkpoint'\n"
     "path = '{dir}/no-meta.safetensors'", "model.path"),
    ("run-id-empty", "workload = 'infer'\n[model]\nsource = 'run'", "model.run_id"),
    ("run-id-unknown", "workload = 'infer'\n[model]\nsource = 'run'\nrun_id = 'no-such-run'",
     "model.run_id"),
    ("teacher-checkpoint-missing", "workload = 'distill'\n[distill.teacher]\nsource = 'checkpoint'\n"
     "path = '{dir}/nowhere.safetensors'", "distill.teacher.path"),
    # inf and nan are not numbers a run can use (TOML allows them).
    ("weight-decay-inf", "[train]\nweight_decay = inf", "train.weight_decay"),
    ("weight-decay-nan", "[train]\nweight_decay = nan", "train.weight_decay"),
    ("peak-tflops-inf", "peak_tflops = inf", "peak_tflops"),
    ("learning-rate-nan", "[train]\nlearning_rate = nan", "train.learning_rate"),
    ("beta1-minus-inf", "[train]\nbeta1 = -inf", "train.beta1"),
    ("time-limit-inf", "[limits]\ntime_s = inf", "limits.time_s"),
    ("val-fraction-nan", "[data]\nval_fraction = nan", "data.val_fraction"),
    ("dropout-nan", "[model]\ndropout = nan", "model.dropout"),
    ("temperature-inf", "[distill]\ntemperature = inf", "distill.temperature"),
    ("float-overflow", "[train]\nweight_decay = 1e400", "train.weight_decay"),
    ("grad-clip-inf", "[techniques.grad_clip]\nmax_norm = inf", "techniques.grad_clip.max_norm"),
    ("min-lr-ratio-nan", "[techniques.lr_schedule]\nmin_lr_ratio = nan",
     "techniques.lr_schedule.min_lr_ratio"),
    ("prune-amount-nan", "workload = 'compress'\n[techniques.prune_magnitude]\namount = nan",
     "techniques.prune_magnitude.amount"),
    ("integer-beyond-int64", "[limits]\nsteps = 99999999999999999999", "limits.steps"),
    # Bounds said with the refusal.
    ("lr-1e10", "[train]\nlearning_rate = 1e10", "train.learning_rate"),
    ("val-fraction-0", "[data]\nval_fraction = 0.0", "data.val_fraction"),
    ("val-fraction-0.9", "[data]\nval_fraction = 0.9", "data.val_fraction"),
    ("warmup-longer-than-run", "[techniques.lr_schedule]\nwarmup_steps = 500",
     "techniques.lr_schedule"),
    ("lora-rank-above-width", "[techniques.lora]\nrank = 200", "techniques.lora"),
    ("finetune-lr", "[compress]\nfinetune_learning_rate = 5.0", "compress.finetune_learning_rate"),
    # Nesting, sizes and paths the system refuses.
    ("toml-nested-100000-deep", "a = " + "[" * 100_000, "TOML"),
    ("toml-inline-tables-deep", "a = " + "{b = " * 5_000 + "1" + "}" * 5_000, "TOML"),
    ("data-path-too-long", f"[data]\nsource = 'path'\npath = '{LONG}'", "data.path"),
    ("model-path-too-long", f"workload = 'infer'\n[model]\nsource = 'checkpoint'\npath = '{LONG}'",
     "model.path"),
    ("hf-path-too-long", f"workload = 'infer'\n[model]\nsource = 'hf'\npath = '{LONG}'", "model.path"),
    ("teacher-path-too-long", f"workload = 'distill'\n[distill.teacher]\nsource = 'checkpoint'\n"
     f"path = '{LONG}'", "distill.teacher.path"),
    # A device or a pipe is not "missing".
    ("data-path-dev-zero", "[data]\nsource = 'path'\npath = '/dev/zero'", "data.path"),
    ("data-path-fifo", "[data]\nsource = 'path'\npath = '{fifo}'", "data.path"),
    ("checkpoint-dev-zero", "workload = 'infer'\n[model]\nsource = 'checkpoint'\npath = '/dev/zero'",
     "model.path"),
]


# The cases whose path is missing: every other path exists, and is refused for what it is.
MISSING = {"data-path-missing", "checkpoint-missing", "checkpoint-folder-without-weights",
           "teacher-checkpoint-missing"}

# Words a case's sentence must hold besides the field: the kind of value, the bound, the choices.
WORDS = {
    "integer-for-section": "table", "misspelt-setting": "valid settings",
    "float-for-batch": "integer", "bool-for-batch": "integer",
    "string-for-number": "number", "batch-0": "1 or more", "zero-steps": "1 or more",
    "negative-learning-rate": "above 0 and at most 10", "sequence-longer-than-context": "context",
    "unknown-preset": "choose one of", "unknown-workload": "choose one of",
    "unknown-device": "auto, cpu, cuda", "data-path-empty": "text file or folder",
    "data-path-missing": "does not exist", "warmup-not-below-steps": "below",
    "toml-key-without-value": "not valid TOML",
    "lr-1e10": "at most 10", "val-fraction-0": "both ends excluded", "val-fraction-0.9": "below 0.9",
    "warmup-longer-than-run": "longer than the run (limits.steps = 200)",
    "lora-rank-above-width": "narrowest adapted layer's width (128)", "finetune-lr": "at most 1",
}

# ConfigError.field is the named field, except where there is none (a file that is not TOML).
UNFIELDED = {"invalid-toml", "toml-key-without-value", "toml-nested-100000-deep",
             "toml-inline-tables-deep"}


@pytest.mark.parametrize("case, text, field", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_config_errors_name_the_field_and_the_fix(case, text, field, files, fifo):
    with pytest.raises(ConfigError) as info:
        validate(RunConfig.from_toml(text.replace("{dir}", str(files)).replace("{fifo}", str(fifo))))
    sentence = str(info.value)
    assert_fix_sentence(sentence, field)
    assert WORDS.get(case, "") in sentence
    assert info.value.field == ("" if case in UNFIELDED else field)
    assert "got None" not in sentence
    if case not in MISSING:
        assert "does not exist" not in sentence


def test_every_word_check_belongs_to_a_case():
    assert set(WORDS) | UNFIELDED <= {case[0] for case in CONFIG_CASES}


def test_a_run_that_saved_no_weights_is_named(effiscope_home):
    from profiler.store import RunStore

    run = RunStore().create_run(RunConfig(name="no-weights"))
    config = RunConfig.from_toml(f"workload = 'infer'\n[model]\nsource = 'run'\nrun_id = '{run.run_id}'")
    with pytest.raises(ConfigError) as info:
        validate(config)
    assert_fix_sentence(str(info.value), "model.run_id")
    assert "save_checkpoint" in str(info.value)


# Through the CLI: exit code 2 and the sentence on stderr, nothing started.
CLI_CASES = [
    ("invalid-toml", 'name = "unterminated', "TOML"),
    ("not-utf8", None, "not-utf8.toml"),
    ("missing-file", None, "nowhere.toml"),
    ("unknown-technique", "[techniques.warp_drive]", "techniques.warp_drive"),
    ("wrong-type", "[train]\nbatch_size = 'many'", "train.batch_size"),
    ("batch-0", "[train]\nbatch_size = 0", "train.batch_size"),
    ("sequence-longer-than-context", "[model]\npreset = 'gpt-nano'\n[train]\nseq_len = 512",
     "train.seq_len"),
    ("ssh-with-torchrun", "[launch]\nssh = 'me@lab'\nnproc_per_node = 2\n[techniques.ddp]",
     "launch.ssh"),
    ("checkpoint-garbage", "workload = 'infer'\n[model]\nsource = 'checkpoint'\n"
     "path = '{dir}/garbage.safetensors'", "model.path"),
]


@pytest.mark.parametrize("text, field", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_run_exits_2_with_the_sentence(text, field, files, effiscope_home):
    if text is None:
        path = files / field
    else:
        path = files / "run.toml"
        path.write_text(text.replace("{dir}", str(files)), encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "profiler.cli", "run", str(path)],
                            capture_output=True, text=True, timeout=60,
                            env={**worker_env(), **os.environ})
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("effiscope: ")
    assert_fix_sentence(result.stderr.removeprefix("effiscope: "), field)
    assert not (effiscope_home / "runs").exists() or not any((effiscope_home / "runs").iterdir())


# What only the worker can see: the data itself, this machine, the weights' contents.


def _truncated_checkpoint(folder: Path) -> Path:
    from profiler.engine import weights
    from profiler.models.gpt import build_gpt

    path = folder / "cut.safetensors"
    weights.save_model(build_gpt("gpt-nano", 0.0), path, "gpt-nano")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a copy that stopped half way
    return path


WORKER_CASES = [
    ("empty-data-folder", {"data": {"source": "path", "path": "{dir}/empty"}}, "data.path", "config"),
    ("binary-data-folder", {"data": {"source": "path", "path": "{dir}/binary"}}, "data.path", "config"),
    ("folder-without-text-files", {"data": {"source": "path", "path": "{dir}/images"}}, "data.path",
     "config"),
    ("binary-data-file", {"data": {"source": "path", "path": "{dir}/one.bin"}}, "data.path", "config"),
    ("too-little-text", {"data": {"source": "path", "path": "{dir}/tiny.txt"}}, "data.path", "config"),
    # device = "cpu" with fp16 contradicts itself: the worker's validation refuses it (config);
    # with device = "auto" only this machine says no (its plan: unsupported).
    ("fp16-on-cpu", {"techniques": {"precision": {"dtype": "fp16"}}}, "techniques.precision",
     "config"),
    ("fp16-on-auto-here", {"device": "auto", "techniques": {"precision": {"dtype": "fp16"}}},
     "techniques.precision", "unsupported"),
    ("cuda-without-gpu", {"device": "cuda"}, "device", "unsupported"),
    ("conflicting-quantizations", {"workload": "infer", "techniques": {
        "quantize_int8_dynamic": {}, "weight_cast": {}}}, "techniques.quantize_int8_dynamic",
     "config"),
    ("truncated-checkpoint", {"workload": "infer", "model": {
        "source": "checkpoint", "path": "{cut}"}}, "model.path", "config"),
]
# Known gaps, each with its owner: the case stays in the table and turns green when fixed.
KNOWN_GAPS: dict[str, str] = {}  # cases expected to fail, with the reason


def _fill(value, folder: Path, cut: Path | None):
    if isinstance(value, dict):
        return {k: _fill(v, folder, cut) for k, v in value.items()}
    if isinstance(value, str):
        return value.replace("{dir}", str(folder)).replace("{cut}", str(cut))
    return value


@pytest.mark.parametrize("overrides, field, kind", [
    pytest.param(*c[1:], id=c[0], marks=[pytest.mark.xfail(reason=KNOWN_GAPS[c[0]])]
                 if c[0] in KNOWN_GAPS else []) for c in WORKER_CASES])
def test_worker_refuses_with_a_sentence(overrides, field, kind, files, capsys):
    config = run_config(steps=2, data="random").to_dict()
    cut = _truncated_checkpoint(files) if "{cut}" in repr(overrides) else None
    for section, value in _fill(overrides, files, cut).items():
        if isinstance(value, dict) and section != "techniques":
            config[section].update(value)
        else:
            config[section] = value
    channel = ListChannel()
    status = worker.run_one(protocol.start(config), channel, worker_io.Control(queue.Queue(), channel))
    capsys.readouterr()  # the worker's log
    assert status == "failed"
    error, done = channel.messages[-2:]
    assert error["type"] == "error" and done["type"] == "done", channel.messages
    assert error["kind"] == kind, error
    assert_fix_sentence(error["message"], field)
    assert "started" not in [m["type"] for m in channel.messages]


def test_the_table_has_at_least_30_cases():
    assert len(CONFIG_CASES) + len(CLI_CASES) + len(WORKER_CASES) + 1 >= 30


def test_a_device_or_pipe_says_what_it_is(fifo):
    for path, kind in (("/dev/zero", "a device"), (str(fifo), "a pipe (FIFO)")):
        with pytest.raises(ConfigError, match=f"is {kind.replace('(', '[(]').replace(')', '[)]')}"):
            validate(RunConfig.from_toml(f"[data]\nsource = 'path'\npath = '{path}'"))


# `effiscope run TARGET` for targets that are not config files: exit 2, one sentence, nothing run.
@pytest.mark.parametrize("target, words", [
    ("/dev/zero", "not a regular file"),
    ("{fifo}", "not a regular file"),
    ("{dir}", "is a folder"),
    ("{big}", "over the 1,000,000"),
    (LONG + ".toml", "too long"),
    ("x" * 5000, "cannot be a config"),
    ("{deep}", "nested too deeply"),
], ids=["dev-zero", "fifo", "folder", "huge-file", "long-path", "long-name", "deep-toml"])
def test_cli_run_of_a_target_that_is_no_config_is_a_sentence(target, words, tmp_path, fifo,
                                                              capsys, effiscope_home):
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * 1_100_000 + "\n")
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 100_000)
    target = (target.replace("{fifo}", str(fifo)).replace("{dir}", str(tmp_path))
              .replace("{big}", str(big)).replace("{deep}", str(deep)))
    assert cli.main(["run", target]) == 2
    err = capsys.readouterr().err
    assert err.startswith("effiscope: ") and words in err, err
    assert_sentence(err)
    assert len(err) < 600
    assert not (effiscope_home / "runs").exists()
