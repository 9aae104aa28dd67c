"""Inputs and resources that used to end in a traceback or a misleading error: each is now one
sentence that names the setting and the fix, or the right error kind.

Config cases go through validate() or `effiscope run` in-process (no worker starts); worker
cases through run_one with a stand-in workload; two cases run a real process under a memory
limit."""

from __future__ import annotations

import errno
import json
import os
import queue
import subprocess
import sys
import types
from pathlib import Path

import pytest

from profiler import cli, errors
from profiler.config import ConfigError, RunConfig, validate
from profiler.engine import channel as worker_io
from profiler.engine import worker
from profiler.store import RunStore, StoreError
from profiler.store.recorder import RunRecorder
from profiler.wire import protocol
from profiler.wire.client import failure_explanation, run_to_completion, worker_env
from tests.faults import assert_fix_sentence
from tests.helpers import ListChannel, lying_checkpoint, run_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- only what is used is read ----------------------------------------------------------------
READ_UNDER_LIMIT = """
import resource, sys
from profiler.engine import data
with open("/proc/self/status") as fh:
    mapped = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
limit = mapped + 400 * 2**20
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
corpus = data.load_corpus("path", sys.argv[1], 200_000, 0.1, 256, 0)
print(corpus.train.numel(), corpus.val.numel())
"""


def test_a_huge_data_file_is_read_only_up_to_max_train_bytes(tmp_path):
    """A 4 GB (sparse) text file under a 400 MB memory allowance: the run reads ~220 kB."""
    path = tmp_path / "huge.txt"
    with path.open("wb") as fh:
        fh.write(b"the quick brown fox jumps over the lazy dog\n" * 20_000)  # 900 kB of text
        fh.truncate(4 * 2**30)  # then 4 GB of holes, never on disk
    result = subprocess.run([sys.executable, "-c", READ_UNDER_LIMIT, str(path)],
                            capture_output=True, text=True, timeout=120,
                            env={**worker_env(), **os.environ, "MALLOC_ARENA_MAX": "2"})
    assert result.returncode == 0, result.stderr[-2000:]
    train, val = map(int, result.stdout.split())
    assert 199_000 <= train <= 200_000 and 0 < val <= 23_000


def test_a_folder_corpus_reads_at_most_what_it_keeps(tmp_path, monkeypatch):
    from profiler.engine import data

    for index in range(30):
        (tmp_path / f"part{index:02}.txt").write_text("some words of text\n" * 5_000)  # 95 kB each
    reads: list[int] = []
    real = data._read_text_file
    monkeypatch.setattr(data, "_read_text_file",
                        lambda path, max_bytes=None: reads.append(max_bytes) or real(path, max_bytes))
    corpus = data.path_corpus(str(tmp_path), 150_000, 0.1)
    assert corpus.train.numel() <= 150_000 + 30  # joined with newlines
    assert all(limit is not None and limit <= 150_001 for limit in reads)


# --- the right error kind, a sentence, what was measured --------------------------------------


def _run_with(monkeypatch, run) -> list[dict]:
    monkeypatch.setitem(sys.modules, "profiler.engine.workloads.train", types.SimpleNamespace(run=run))
    channel = ListChannel()
    worker.run_one(protocol.start(run_config(steps=50, data="random").to_dict()), channel,
                   worker_io.Control(queue.Queue(), channel))
    return channel.messages


@pytest.mark.parametrize("exc", [
    OSError(errno.ENOMEM, "Cannot allocate memory"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:114] data. DefaultCPUAllocator: not enough "
                 "memory: you tried to allocate 1 bytes. can't allocate memory"),
    ImportError("libtorch_cpu.so: failed to map segment from shared object"),
    RuntimeError("can't start new thread: Cannot allocate memory"),
], ids=["enomem", "cpu-allocator", "map-segment", "thread"])
def test_out_of_memory_during_set_up_is_oom_not_a_bug(exc, monkeypatch, capsys):
    def run(config, emit, control):
        raise exc

    error, done = _run_with(monkeypatch, run)
    capsys.readouterr()
    assert error["kind"] == "oom", error
    assert error["message"].startswith("out of memory while setting up the run")
    assert "batch_size" in error["hint"] and "bug" not in error["hint"]
    assert done["summary"] == {}


def test_a_run_failing_mid_way_still_reports_the_contention_over_it(monkeypatch, capsys):
    """A real gpt-nano run whose 4th step fails: its partial summary carries the contention the
    run's sampler measured (the sentence beside its speed figures has its source) and the sampler
    thread is stopped with the run; before, a failed run's summary had no contention keys."""
    import threading

    from profiler.engine.workloads import steps

    real_step = steps.train_step

    def failing_step(state, batches, step):
        if step == 4:
            raise RuntimeError("a planted failure at step 4")
        return real_step(state, batches, step)

    monkeypatch.setattr(steps, "train_step", failing_step)
    channel = ListChannel()
    config = run_config(steps=10, data="random")
    assert worker.run_one(protocol.start(config.to_dict()), channel,
                          worker_io.Control(queue.Queue(), channel)) == "failed"
    capsys.readouterr()
    done = channel.messages[-1]
    summary = done["summary"]
    assert done["status"] == "failed" and summary["steps_completed"] == 3
    assert summary["contention_cores"] == (os.cpu_count() or 1)
    assert summary["contention_samples"] >= 1  # at least the reading taken when it stopped
    assert isinstance(summary["contended"], bool) and "contention_sentence" in summary
    assert not any(t.name == "effiscope-sampler" and t.is_alive() for t in threading.enumerate())


def test_an_unknown_model_type_is_a_config_error_with_its_hint(monkeypatch, capsys):
    transformers = pytest.importorskip("transformers")

    def run(config, emit, control):
        transformers.AutoConfig.for_model("flux-capacitor")

    error, _ = _run_with(monkeypatch, run)
    capsys.readouterr()
    assert error["kind"] == "config", error
    assert error["message"].startswith("model.path: ") and "flux-capacitor" in error["message"]
    assert "model_type" in error["hint"] and "bug" not in error["hint"]
    assert "\n" not in error["message"]


def test_out_of_memory_mid_training_still_sends_what_was_measured(monkeypatch, capsys,
                                                                 effiscope_home):
    def run(config, emit, control):
        emit({"type": "started", "run": {"workload": "train", "device": "cpu"}})
        for step in range(1, 41):
            emit({"type": "sample", "step": step, "time": step / 10, "phase":
                  "warmup" if step <= 5 else "measure",
                  "metrics": {"loss_train": 5 - step / 20, "tokens_per_s": 1000.0 + step}})
        raise errors.out_of_memory(MemoryError(), "step 41")

    messages = _run_with(monkeypatch, run)
    capsys.readouterr()
    error, done = messages[-2:]
    assert error["kind"] == "oom" and error["message"].startswith("out of memory at step 41")
    summary = done["summary"]
    assert summary["steps_completed"] == 40 and summary["measured_steps"] == 35
    assert summary["figures"]["tokens_per_s"]["value"] == 1023.0  # median of steps 6..40
    assert summary["figures"]["loss_train_final"]["value"] == 3.0
    assert "out of memory at step 41" in summary["stop_reason"]
    # What the history and the report show: steps, not n/a; figures, not "never sent".
    store = RunStore()
    run = store.create_run(run_config(steps=50, data="random"))
    recorder = RunRecorder(store, run)
    for message in messages:
        recorder.handle_line(protocol.encode(message))
    assert recorder.finish(1) == "failed"
    row = next(r for r in store.list_runs() if r["id"] == run.run_id)
    assert row["steps"] == 40 and row["tokens_per_s"] == 1023.0
    report = pytest.importorskip("profiler.report")
    text = report.render([run.run_id], "md")
    assert "never sent its summary" not in text


def test_a_worker_that_cannot_start_for_memory_says_so(effiscope_home):
    """Python and torch cannot even load under a 100 MB address-space limit."""
    store = RunStore()
    config = run_config(steps=2, data="random")
    run = store.create_run(config)
    recorder = RunRecorder(store, run)
    command = ["/bin/sh", "-c", f"ulimit -v 150000; exec {sys.executable} -m profiler.engine.worker"]
    status = run_to_completion(config.to_dict(), recorder, command=command)
    end = run.summary()["end"]
    assert status == "failed", end
    assert end.startswith("the worker could not start: out of memory"), end
    assert "exit code 127" not in end and "raise the memory limit" in end


def test_the_memory_explanation_needs_a_worker_that_never_said_hello(tmp_path):
    log = tmp_path / "worker.log"
    log.write_text("Traceback...\nImportError: libtorch_cpu.so: failed to map segment from "
                   "shared object\n")
    fake = types.SimpleNamespace(run=types.SimpleNamespace(log_path=log), hello=None)
    assert "out of memory" in failure_explanation(fake)
    fake.hello = {"type": "hello"}
    assert "could not start" not in (failure_explanation(fake) or "")


def test_a_run_on_a_full_disk_is_not_later_called_orphaned(effiscope_home):
    """summary.json cannot be written: meta.json, written with room to spare, still records
    how the run ended, so the history never says "the front end ended without closing"."""
    from profiler.store import runfolder as store_module

    store = RunStore()
    run = store.create_run(run_config(steps=2, data="random"))
    recorder = RunRecorder(store, run)
    recorder.handle_line(b'{"type":"sample","step":1,"time":0.1,"metrics":{}}')

    def full(path, text):
        raise StoreError(store_module.write_failure(path, OSError(errno.ENOSPC, "No space left on device")))

    with pytest.MonkeyPatch.context() as disk:
        disk.setattr(store_module, "atomic_write", full)
        disk.setattr(store_module.StreamWriter, "append", lambda self, message: full(self.path, ""))
        recorder.handle_line(b'{"type":"done","status":"completed","summary":{}}')
        assert recorder.finish(0) == "completed"
    assert "No space left on device" in recorder.write_error
    meta = json.loads((run.path / "meta.json").read_text())
    assert meta["status"] == "completed" and "could not be written" in meta["end"]
    row = next(r for r in RunStore().list_runs() if r["id"] == run.run_id)
    assert row["status"] == "completed"  # not "crashed" by reconcile


# --- model files that lie, and models this machine cannot hold --------------------------------
@pytest.mark.parametrize("lie, words", [
    ({"n_embd": 100_000}, "n_embd = 100,000, the weights hold 128"),
    ({"n_layer": 1_000_000}, "n_layer = 1,000,000, the weights hold 4"),
    ({"vocab_size": 10**9}, "vocab_size = 1,000,000,000, the weights hold 256"),
], ids=["width", "layers", "vocabulary"])
def test_a_checkpoint_whose_metadata_lies_about_its_shape_is_blamed(lie, words, tmp_path):
    """The file is named as the fault, before a model of the claimed shape is built
    (it used to end as "out of memory ... lower train.batch_size")."""
    path = lying_checkpoint(tmp_path / "model.safetensors", **lie)
    with pytest.raises(ConfigError) as info:
        validate(RunConfig.from_toml(f"workload = 'infer'\n[model]\nsource = 'checkpoint'\n"
                                     f"path = '{path}'"))
    text = str(info.value)
    assert text.startswith("model.path: ") and "metadata does not describe its tensors" in text
    assert words in text and "batch_size" not in text
    assert_fix_sentence(text, "model.path")


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory) -> Path:
    from tests.hf_fixtures import bpe_tokenizer, save_llama

    return save_llama(tmp_path_factory.mktemp("llama"), bpe_tokenizer())


@pytest.mark.parametrize("key, value, words", [
    ("hidden_size", 64, "config.json says hidden_size = 64, but the weights' "
                        "model.embed_tokens.weight is 320 x 32"),
    ("vocab_size", 10**9, "config.json's vocab_size is wrong"),
    ("num_hidden_layers", 10**6, "config.json says num_hidden_layers = 1,000,000, but the "
                                 "weights hold 2 layers"),
], ids=["hidden-size", "vocabulary", "layers"])
def test_a_hugging_face_config_that_lies_names_the_wrong_field(key, value, words, llama_folder,
                                                               tmp_path):
    """A Hugging Face config that lies (or claims a huge model in a checkpoint folder): the field
    named, before transformers builds anything (it used to say "look at the above report!",
    with no report, or build for minutes)."""
    import shutil

    folder = tmp_path / "lying-llama"
    shutil.copytree(llama_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, key: value}))
    with pytest.raises(ConfigError) as info:
        validate(RunConfig.from_toml(f"workload = 'infer'\n[model]\nsource = 'hf'\n"
                                     f"path = '{folder}'"))
    text = str(info.value)
    assert words in text and f"config.json's {key} is wrong" in text, text
    assert_fix_sentence(text, "model.path")


def test_a_checkpoint_claiming_zero_heads_is_a_sentence(tmp_path):
    path = lying_checkpoint(tmp_path / "model.safetensors", n_head=0)
    with pytest.raises(ConfigError) as info:
        validate(RunConfig.from_toml(f"workload = 'infer'\n[model]\nsource = 'checkpoint'\n"
                                     f"path = '{path}'"))
    assert "n_head = 0 does not divide n_embd = 128" in str(info.value)
    assert_fix_sentence(str(info.value), "model.path")


def test_an_honest_hugging_face_folder_still_validates(llama_folder):
    validate(RunConfig.from_toml(f"workload = 'infer'\n[model]\nsource = 'hf'\n"
                                 f"path = '{llama_folder}'"))


@pytest.mark.parametrize("path, kind", [("/dev/zero", "is a device"), ("{fifo}", "is a pipe")],
                         ids=["dev-zero", "fifo"])
def test_a_gguf_path_that_is_no_regular_file_says_what_it_is(path, kind, fifo):
    """A FIFO or a device given as the .gguf file "does not exist" no longer."""
    path = path.replace("{fifo}", str(fifo))
    with pytest.raises(ConfigError) as info:
        validate(RunConfig.from_toml(f"workload = 'infer'\n[model]\nsource = 'gguf'\n"
                                     f"path = '{path}'"))
    text = str(info.value)
    assert kind in text and "not a file or folder" in text and "does not exist" not in text
    assert_fix_sentence(text, "model.path")


HUGE_ARCH = ("workload = 'infer'\n[model]\nsource = 'hf-config'\n[model.arch]\nname = 'llama'\n"
             "n_layer = 1000000\nvocab_size = 1000000000\n")


def test_a_model_bigger_than_this_machine_is_refused_before_it_is_built():
    """10**6 layers and a 10**9 vocabulary (trillions of parameters) are refused with
    the predicted size against this machine's memory; nothing is built."""
    with pytest.raises(ConfigError) as info:
        validate(RunConfig.from_toml(HUGE_ARCH))
    text = str(info.value)
    assert text.startswith("model: the model has about ") and "more than this machine's" in text
    assert "TiB in fp32" in text and "choose a smaller model" in text
    assert_fix_sentence(text, "model")


def test_the_size_check_counts_every_process_and_spares_a_model_that_fits():
    from profiler.config import rules as config_rules
    from profiler.models.presets import GPT_PRESETS

    config = RunConfig()
    nano = GPT_PRESETS["gpt-nano"]
    assert config_rules.model_memory_problem(config, nano, memory=2**30) is None
    config.launch.nproc_per_node = 8
    needed = nano.parameter_count() * 4
    text = config_rules.model_memory_problem(config, nano, memory=needed * 4)
    assert text and "in each of 8 processes" in text
    config.launch.ssh = "gpu-box"  # judged on that machine, by its own worker's validation
    assert config_rules.model_memory_problem(config, nano, memory=1) is None


def test_cli_run_of_a_model_too_big_for_this_machine_is_exit_2_and_no_run(tmp_path, capsys,
                                                                          effiscope_home):
    toml = tmp_path / "huge.toml"
    toml.write_text(HUGE_ARCH)
    assert cli.main(["run", str(toml)]) == 2
    err = capsys.readouterr().err
    assert "more than this machine's" in err
    assert not (effiscope_home / "runs").exists()


def test_an_infinite_perplexity_is_said_and_the_figures_are_kept(tmp_path, capsys):
    """A checkpoint whose held-out loss is above ~709 nats/token (exp overflows a
    float) used to end in OverflowError with nothing kept; now the run completes, the loss is
    kept and the perplexity is n/a with its reason."""
    import torch

    from profiler.engine.weights import save_model
    from profiler.models.gpt import GPT
    from profiler.models.presets import GPT_PRESETS

    model = GPT(GPT_PRESETS["gpt-nano"])
    with torch.no_grad():
        model.wte.weight.mul_(1e5)  # tied to the head: logits thousands of nats apart
    path = tmp_path / "loud.safetensors"
    save_model(model, path, "gpt-nano")
    config = RunConfig.from_toml(
        f"workload = 'infer'\ndevice = 'cpu'\n[model]\nsource = 'checkpoint'\npath = '{path}'\n"
        "[data]\nsource = 'random'\n[infer]\nrepeats = 1\nwarmup_runs = 0\nprompt_len = 8\n"
        "gen_len = 2\neval_tokens = 256\neval_seq_len = 32\n").to_dict()
    channel = ListChannel()
    status = worker.run_one(protocol.start(config), channel,
                            worker_io.Control(queue.Queue(), channel))
    capsys.readouterr()
    assert status == "completed", [m for m in channel.messages if m["type"] == "error"]
    figures = channel.messages[-1]["summary"]["figures"]
    assert figures["loss_val"]["value"] > 709
    assert figures["perplexity"]["value"] is None
    assert figures["perplexity"]["how"].startswith("n/a: infinite (the loss is ")
    assert figures["decode_tokens_per_s"]["value"] > 0  # the latency figures are kept
