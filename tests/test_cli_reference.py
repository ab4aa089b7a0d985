"""docs/cli.md is the app: generated from it, naming every command and option, and every command's
--help ends with examples that parse against the real CLI."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from hpo.cli import app
from hpo.cli.reference import REFERENCE, REGENERATE, examples_of, render
from tests.clis import resolve

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "cli.md"
ROOT_COMMAND = typer.main.get_command(app)


def commands(command=ROOT_COMMAND, path=("hpo",)):
    """(path, command) for every command and group, walked here rather than by the generator."""
    yield list(path), command
    for name, sub in getattr(command, "commands", {}).items():
        yield from commands(sub, (*path, name))


LEAVES = [(path, cmd) for path, cmd in commands() if not hasattr(cmd, "commands")]


def sections() -> dict[str, str]:
    """docs/cli.md's text under each ``## `hpo ...` `` heading, by command."""
    text = DOC.read_text(encoding="utf-8")
    parts = re.split(r"^## `([^`]+)`$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_the_reference_is_what_the_app_generates_now() -> None:
    assert REFERENCE == DOC  # the generator writes the file this checkout ships
    assert DOC.read_text(encoding="utf-8") == render(), (
        f"docs/cli.md differs from the hpo app: regenerate it with `{REGENERATE}`"
    )


def test_every_command_and_option_is_in_the_reference() -> None:
    found, missing = sections(), []
    for path, cmd in commands():
        name = " ".join(path)
        if name not in found:
            missing.append(f"no section for `{name}`")
            continue
        names = " ".join(re.findall(r"^- `([^`]+)`", found[name], flags=re.M))
        for param in cmd.params:
            for opt in [*param.opts, *param.secondary_opts]:
                if param.param_type_name == "option" and not re.search(rf"(?<![\w-]){opt}(?![\w-])", names):
                    missing.append(f"`{name}` lacks {opt}")
            if param.param_type_name == "argument" and not re.search(rf"\b{param.name}\b", names):
                missing.append(f"`{name}` lacks its argument {param.name}")
    assert not missing, f"{missing}; regenerate with `{REGENERATE}`"
    assert len(found) == len(list(commands()))


@pytest.mark.parametrize("path,cmd", LEAVES, ids=[" ".join(p[1:]) for p, _ in LEAVES])
def test_help_ends_with_examples_that_parse(path: list[str], cmd) -> None:
    examples = examples_of(cmd)
    calls = [line.split() for line in examples if re.match(r"(\w+=\S+ )*hpo ", line)]
    assert calls, f"`{' '.join(path)} --help` ends with no `hpo ...` example (typer's epilog=examples(...))"
    for words in calls:
        argv = words[words.index("hpo") + 1 :]
        argv = argv[: argv.index(">")] if ">" in argv else argv  # a redirect is the shell's
        where, problem = resolve(ROOT_COMMAND, "hpo", argv)
        assert problem is None, problem
        assert where == path, f"an example of `{' '.join(path)}` runs `{' '.join(where)}`"

    # typer prints the epilog last, one example a line, also without a terminal (as in CI or a pipe)
    result = CliRunner().invoke(app, [*path[1:], "--help"], env={"COLUMNS": "80", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    shown = [line.strip() for line in result.output.splitlines() if line.strip()]
    assert shown[-len(examples) :] == examples, "each example must fit on one line of an 80-column terminal"


def test_the_generator_writes_the_reference(tmp_path: Path) -> None:
    out = tmp_path / "cli.md"
    done = subprocess.run(
        [sys.executable, "-m", "hpo.cli.reference", "--out", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert out.read_text(encoding="utf-8") == render()
