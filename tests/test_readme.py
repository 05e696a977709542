"""The README's Quick start stays true: CI runs its test command verbatim."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", section, re.S)
    assert block, "the Quick start section has no code block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_quick_start_is_two_commands():
    commands = quick_start_commands()
    assert len(commands) == 2, commands
    assert "python -m trainer.task" in commands[0]
    assert "[test]" in commands[1] and "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert quick_start_commands()[1].strip() in ci_lines


def test_every_config_field_is_documented():
    from trainer import config as config_lib

    readme = (ROOT / "README.md").read_text()
    undocumented = [dotted for dotted, _, _ in config_lib._leaf_fields(config_lib.Config, "")
                    if f"| `{dotted}` |" not in readme]
    assert not undocumented, f"add these config fields to the README's Configuration table: {undocumented}"
