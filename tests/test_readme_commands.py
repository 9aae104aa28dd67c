"""Every command the README shows runs as written (issue 34: its override example exited 2).

The commands are read from the README itself (inline code and code blocks): each must be
accepted by the real parser; each `run` must validate exactly as `effiscope run` would (the
README's run config is the my-run.toml it names); the cheap ones run for real; the override
example runs for real too (slow). A template (RUN_ID, CONFIG) is a syntax, not a command.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from profiler import cli
from profiler.cli.run import overrides
from profiler.config import resolve

README = Path(__file__).resolve().parent.parent / "README.md"
TEMPLATE = re.compile(r"^[A-Z][A-Z_]*(\.\.\.)?$")
CHEAP = {"runs", "runs --json", "models", "models --json", "doctor --list", "techniques"}


def readme_commands() -> list[str]:
    """`effiscope ...` commands of the README, as written (optional [--flag]s taken as given)."""
    text = README.read_text(encoding="utf-8")
    found = [" ".join(m[1].split()) for m in re.finditer(r"`(effiscope [^`]+)`", text)]
    for block in re.finditer(r"```\w*\n(.*?)```", text, re.S):
        for line in block[1].splitlines():
            if line.startswith("effiscope"):
                found.append(re.split(r"\s{2,}|\s#", line)[0].strip())
    commands = []
    for command in found:
        command = command.split(" | ")[0]  # `runs --json | head -1`: the effiscope part
        words = shlex.split(command.replace("[", "").replace("]", ""))[1:]
        if not any(TEMPLATE.match(word) for word in words):
            commands.append(" ".join(words))
    return list(dict.fromkeys(commands))


def readme_run_config() -> str:
    """The TOML of the README's "A run config" section (what my-run.toml stands for)."""
    section = README.read_text(encoding="utf-8").split("## A run config", 1)[1]
    return re.search(r"```toml\n(.*?)```", section, re.S)[1]


COMMANDS = readme_commands()


def test_the_readme_shows_the_commands_this_test_reads():
    assert len(COMMANDS) >= 15
    assert "run nano --steps 50 --batch-size 8 --seq-len 64 --lr 1e-3 --device cpu --name " \
           "my-test" in COMMANDS
    assert {"doctor --list", "doctor --only sdpa,adamw", "run my-run.toml"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_readme_command_is_accepted_by_the_parser(command):
    args = cli.build_parser().parse_args(shlex.split(command))  # SystemExit(2) on a bad flag
    assert args.command is None or callable(args.func)


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.startswith("run ")])
def test_every_readme_run_validates_as_written(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-run.toml").write_text(readme_run_config(), encoding="utf-8")
    args = cli.build_parser().parse_args(shlex.split(command))
    config = resolve(args.target, overrides(args))  # what cmd_run checks before a run
    assert config.limits.steps >= 1


@pytest.mark.parametrize("command", sorted(CHEAP & set(COMMANDS)))
def test_the_cheap_readme_commands_run(command, capsys):
    assert cli.main(shlex.split(command)) == 0
    assert capsys.readouterr().out.strip()


def test_every_flag_the_command_list_names_exists():
    """The README's command list names flags in its descriptions (--profile, --budget,
    --restart-every, ...): each belongs to some command's parser."""
    text = README.read_text(encoding="utf-8").split("## The command line", 1)[1]
    listed = set(re.findall(r"(--[a-z][a-z-]+)", text.split("## Workloads", 1)[0]))
    known: set[str] = set()
    stack = [cli.build_parser()]
    while stack:
        parser = stack.pop()
        for action in parser._actions:
            known.update(o for o in action.option_strings if o.startswith("--"))
            stack.extend((getattr(action, "choices", None) or {}).values()
                         if isinstance(getattr(action, "choices", None), dict) else ())
    assert listed and listed <= known, sorted(listed - known)


@pytest.mark.slow
def test_the_readme_override_example_runs_as_written(capsys, effiscope_home):
    command = next(c for c in COMMANDS if c.startswith("run nano --steps 50"))
    assert cli.main(shlex.split(command)) == 0, capsys.readouterr().err
    run = next((effiscope_home / "runs").iterdir())
    assert '"status": "completed"' in (run / "summary.json").read_text()
