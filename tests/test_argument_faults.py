"""Hostile arguments: CLI, bench and tune arguments, and a file judged after the flags that
override it. Each case is one sentence (exit 2, nothing run), never a hang or a traceback."""

from __future__ import annotations

import psutil
import pytest

from profiler.config import ConfigError, resolve
from tests.helpers import cli_in_process

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TWENTY = "9" * 20

# (id, argv, words the one-line refusal must hold)
CLI_CASES = [
    ("lr-nan", ["run", "nano", "--lr", "nan"], "--lr nan: train.learning_rate: must be a finite"),
    ("lr-inf", ["run", "nano", "--lr", "inf"], "--lr inf: train.learning_rate: must be a finite"),
    ("seq-len-20-digits", ["run", "nano", "--seq-len", TWENTY],
     "train.seq_len: must be an integer below 2**63"),
    ("nproc-2000", ["run", "nano", "--nproc", "2000"], "must be between 1 and 1024, got 2000"),
    ("device-unicode-digit", ["run", "nano", "--device", "cuda:\u0663"], "is not a device"),
    ("device-huge-index", ["run", "nano", "--device", "cuda:99999"], "is not a device"),
    ("warmup-negative", ["run", "nano", "--warmup", "-3"], "--warmup -3: limits.warmup_steps"),
    ("bench-steps-20-digits", ["bench", "overhead", "--steps", TWENTY],
     "argument --steps: must be between 2 and 100000"),
    ("bench-repeats-a-million", ["bench", "startup", "--repeats", "1000000"],
     "argument --repeats: must be between 1 and 1000, got 1000000"),
    ("bench-repeats-float", ["bench", "techniques", "--repeats", "1e3"],
     "argument --repeats: must be a whole number, got '1e3'"),
    ("bench-only-blank", ["bench", "compress", "--only", " , "], "--only ' , ' names nothing"),
    ("tune-space-semicolons", ["tune", "nano", "--space", ";;;"], "names no dimension"),
]


@pytest.mark.parametrize("argv, words", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_a_hostile_argument_is_one_sentence_and_nothing_runs(argv, words, capsys,
                                                             effiscope_home):
    code, err = cli_in_process(argv, capsys)
    assert code == 2, err
    assert words in err.strip().splitlines()[-1], err  # the parser's usage may come first
    assert "Traceback" not in err
    assert not (effiscope_home / "runs").exists()
    assert psutil.Process().children(recursive=True) == []


def test_terminal_escapes_in_a_refused_flag_are_not_printed_raw(capsys):
    code, err = cli_in_process(["run", "nano", "--device", "\x1b]0;owned\x07\x1b[2J"], capsys)
    assert code == 2
    assert "\x1b" not in err and "\x07" not in err and "is not a device" in err


def test_a_file_setting_the_flags_replace_is_judged_after_them(tmp_path):
    """Two processes in the file without ddp, --nproc 1 on the command line: a valid run (the
    file alone would be refused); the flags are applied first, then the whole is checked."""
    toml = tmp_path / "two.toml"
    toml.write_text("[launch]\nnproc_per_node = 2\n")
    assert resolve(str(toml), {"launch.nproc_per_node": 1}).launch.nproc_per_node == 1
    with pytest.raises(ConfigError, match="neither ddp nor fsdp"):
        resolve(str(toml))
