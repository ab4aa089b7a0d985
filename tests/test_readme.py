"""README.md stays true: its shell examples parse against the real CLI, every command and option it
names exists, its search-space example validates, the quickstart is what CI runs, and the variables and
files it mentions are ones the project uses."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from hpo.space import load_space
from tests.clis import command_clis, resolve

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CI_SCRIPT = (ROOT / ".ci" / "run").read_text()
_SOURCES = [ROOT / "docker-compose.yml", ROOT / "Dockerfile", *ROOT.glob("*/**/*.py")]
# deploy/: the manifests and the sbatch script (not foldtune.env, where a user keeps real credentials)
_SOURCES += [p for p in (ROOT / "deploy").rglob("*") if p.is_file() and p.name != "foldtune.env"]
_REPO_PATH = r"(benchmarks|tests|search_spaces|training|storage|hpo|docker|deploy)/[\w./-]*"
SOURCE_TEXT = "\n".join(p.read_text() for p in _SOURCES if ".venv" not in p.parts and "tests" not in p.parts)


def code_blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README, flags=re.M | re.S)


def inline_spans() -> list[str]:
    """Inline code spans, with the table's escaped pipes restored."""
    return [span.replace("\\|", "|") for span in re.findall(r"(?<!`)`([^`\n]+)`(?!`)", README)]


def shell_commands() -> list[list[str]]:
    """Every simple command of the bash blocks, split as the shell would (comments dropped)."""
    commands = []
    for block in code_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            command: list[str] = []
            for word in [*words, "&&"]:
                if word in ("&&", ";", "||"):
                    if command:
                        commands.append(command)
                    command = []
                else:
                    command.append(word)
    return commands


def hpo_argv(command: list[str]) -> list[str] | None:
    """The arguments of an `hpo` call (also `.venv/bin/hpo`), after any VAR=value prefixes."""
    while command and re.fullmatch(r"\w+=.*", command[0]):
        command = command[1:]
    if command and Path(command[0]).name == "hpo":
        return command[1:]
    return None


def test_quickstart_is_two_commands_and_the_test_command_is_what_ci_runs() -> None:
    setup, tests = code_blocks("bash")[:2]
    assert "hpo run" in setup and 'pip install -e ".[dev]"' in setup
    assert len(tests.strip().splitlines()) == 1
    ci_lines = [line.strip() for line in CI_SCRIPT.splitlines()]
    assert tests.strip() in ci_lines, f"README's test command {tests.strip()!r} is not a line of .ci/run"
    assert any("install" in line and '-e ".[dev]"' in line for line in ci_lines)


def test_every_hpo_example_parses_against_the_cli() -> None:
    hpo = command_clis()["hpo"]
    examples = [argv for argv in map(hpo_argv, shell_commands()) if argv is not None]
    assert len(examples) >= 6  # quickstart, the distributed recipe, the MLflow recipe
    problems = [problem for argv in examples if (problem := resolve(hpo, "hpo", argv)[1])]
    assert not problems, problems


def test_every_command_and_option_the_readme_names_exists() -> None:
    hpo = command_clis()["hpo"]
    spans = [span.split() for span in inline_spans() if span.startswith("hpo ")]
    assert len(spans) >= 15
    problems = []
    for words in spans:
        names = [w for w in words[1:] if re.fullmatch(r"[a-z][a-z-]*", w)]
        cmd, path = hpo, []
        for name in names:  # the longest prefix of plain words that names a command
            if not hasattr(cmd, "commands") or name not in cmd.commands:
                break
            cmd, path = cmd.commands[name], [*path, name]
        known = {opt for param in cmd.params for opt in (*param.opts, *param.secondary_opts)}
        if hasattr(cmd, "commands") and path:
            problems.append(f"'hpo {' '.join(path)}' names a group, not a command")
        options = re.findall(r"(?<![\w-])--[a-z][a-z-]*", " ".join(words))
        global_options = {opt for p in hpo.params for opt in (*p.opts, *p.secondary_opts)}
        problems += [
            f"'{' '.join(words)}': 'hpo {' '.join(path)}' has no option {opt}"
            for opt in options
            if opt not in known and opt not in global_options and opt != "--help"
        ]
    assert not problems, problems


def test_search_space_example_validates(tmp_path: Path) -> None:
    (example,) = code_blocks("yaml")
    path = tmp_path / "example.yaml"
    path.write_text(example)
    space = load_space(path)
    assert set(yaml.safe_load(example)["params"]) == set(space.params)


@pytest.mark.parametrize("name", sorted(set(re.findall(r"`\$?([A-Z][A-Z0-9_]{3,})`", README))))
def test_environment_variables_it_mentions_are_read(name: str) -> None:
    assert name in SOURCE_TEXT, f"README mentions ${name}, but neither the code nor the compose file reads it"


def test_files_it_mentions_exist_or_are_the_defaults() -> None:
    missing = []
    for span in inline_spans():
        if re.fullmatch(r"(\.hpo/)[\w./-]+", span) and span.split("/")[1].split("-")[0] not in SOURCE_TEXT:
            missing.append(span)  # a default location under .hpo/ the code never names
        elif re.fullmatch(_REPO_PATH, span):
            if not (ROOT / span).exists():
                missing.append(span)
        elif span in ("Dockerfile", "docker-compose.yml", "pyproject.toml") and not (ROOT / span).exists():
            missing.append(span)
    assert not missing, missing
