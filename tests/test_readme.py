"""The README and the docs stay true: their shell examples parse against the real CLI, every command and
option they name exists, the search-space example validates, the quickstart is what CI runs, the
variables and files they mention are ones the project uses, and their links lead somewhere."""

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
# Every markdown page of the project: the README, CONTRIBUTING and the pages it links to.
DOCS = {
    str(p.relative_to(ROOT)): p.read_text()
    for p in [
        ROOT / "README.md",
        ROOT / "CONTRIBUTING.md",
        *sorted((ROOT / "docs").glob("*.md")),
        ROOT / "deploy" / "README.md",
        ROOT / "benchmarks" / "README.md",
    ]
}
MAX_README_LINES = 200  # the pitch, quickstart, commands, one trial's path, links; the rest is in docs/
CI_SCRIPT = (ROOT / ".ci" / "run").read_text()
_SOURCES = [ROOT / "docker-compose.yml", ROOT / "Dockerfile", *ROOT.glob("*/**/*.py")]
# deploy/: the manifests and the sbatch script (not foldtune.env, where a user keeps real credentials)
_SOURCES += [p for p in (ROOT / "deploy").rglob("*") if p.is_file() and p.name != "foldtune.env"]
_REPO_PATH = r"(benchmarks|tests|search_spaces|training|storage|hpo|docker|deploy|docs)/[\w./-]*"
_USED = [p for p in _SOURCES if ".venv" not in p.parts and p.suffix != ".md"]
SOURCE_TEXT = "\n".join(p.read_text() for p in _USED if "tests" not in p.parts)
# CONTRIBUTING speaks of the test suite, so the variables only the tests and CI read count there.
TEST_SOURCE_TEXT = "\n".join([SOURCE_TEXT, CI_SCRIPT, *(p.read_text() for p in _USED if "tests" in p.parts)])


def code_blocks(lang: str, text: str = README) -> list[str]:
    return re.findall(rf"^ *```{lang}\n(.*?)^ *```", text, flags=re.M | re.S)


def inline_spans(text: str) -> list[str]:
    """Inline code spans, with the table's escaped pipes restored (fenced blocks left out)."""
    text = re.sub(r"^ *```.*?^ *```", "", text, flags=re.M | re.S)
    return [span.replace("\\|", "|") for span in re.findall(r"(?<!`)`([^`\n]+)`(?!`)", text)]


def shell_commands(text: str) -> list[list[str]]:
    """Every simple command of the bash blocks, split as the shell would (comments dropped)."""
    commands = []
    for block in code_blocks("bash", text):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            command: list[str] = []
            for word in [*words, "&&"]:
                if word in ("&&", ";", "||", ">"):
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


def test_the_readme_is_short() -> None:
    lines = len(README.splitlines())
    assert lines < MAX_README_LINES, f"README.md has {lines} lines: move details to docs/ and link them"
    assert "benchmarks:start" not in README, "benchmark tables belong in benchmarks/README.md"


def test_every_hpo_example_parses_against_the_cli() -> None:
    hpo = command_clis()["hpo"]
    examples = {
        doc: [argv for argv in map(hpo_argv, shell_commands(text)) if argv is not None]
        for doc, text in DOCS.items()
    }
    assert len(examples["README.md"]) >= 5  # the quickstart and a study on the mask sample
    assert sum(map(len, examples.values())) >= 30  # the docs' recipes and the CLI reference's examples
    problems = [
        f"{doc}: {problem}"
        for doc, argvs in examples.items()
        for argv in argvs
        if (problem := resolve(hpo, "hpo", argv)[1])
    ]
    assert not problems, problems


@pytest.mark.parametrize("doc", DOCS)
def test_every_command_and_option_the_docs_name_exists(doc: str) -> None:
    hpo = command_clis()["hpo"]
    spans = [span.split() for span in inline_spans(DOCS[doc]) if span.startswith("hpo ")]
    problems = []
    for words in spans:
        names = [w for w in words[1:] if re.fullmatch(r"[a-z][a-z-]*", w)]
        cmd, path = hpo, []
        for name in names:  # the longest prefix of plain words that names a command
            if not hasattr(cmd, "commands") or name not in cmd.commands:
                break
            cmd, path = cmd.commands[name], [*path, name]
        known = {opt for param in cmd.params for opt in (*param.opts, *param.secondary_opts)}
        if hasattr(cmd, "commands") and path and len(names) > len(path):  # `hpo study` alone is a group
            problems.append(f"'{' '.join(words)}': 'hpo {' '.join(path)}' has no command {names[len(path)]}")
        options = re.findall(r"(?<![\w-])--[a-z][a-z-]*", " ".join(words))
        global_options = {opt for p in hpo.params for opt in (*p.opts, *p.secondary_opts)}
        problems += [
            f"'{' '.join(words)}': 'hpo {' '.join(path)}' has no option {opt}"
            for opt in options
            if opt not in known and opt not in global_options and opt != "--help"
        ]
    assert not problems, problems


def test_the_readme_names_the_commands_it_lists() -> None:
    spans = [span for span in inline_spans(README) if span.startswith("hpo ")]
    assert len(spans) >= 15


def test_search_space_example_validates(tmp_path: Path) -> None:
    examples = [block for text in DOCS.values() for block in code_blocks("yaml", text)]
    assert examples, "docs/search-spaces.md shows a search space"
    for i, example in enumerate(examples):
        path = tmp_path / f"example{i}.yaml"
        path.write_text(example)
        space = load_space(path)
        assert set(yaml.safe_load(example)["params"]) == set(space.params)


_VARIABLES = sorted(
    {(doc, name) for doc, text in DOCS.items() for name in re.findall(r"`\$?([A-Z][A-Z0-9_]{3,})`", text)}
)


@pytest.mark.parametrize("doc,name", _VARIABLES)
def test_environment_variables_they_mention_are_read(doc: str, name: str) -> None:
    source = TEST_SOURCE_TEXT if doc == "CONTRIBUTING.md" else SOURCE_TEXT
    assert name in source, f"{doc} mentions ${name}, but neither the code nor the compose file reads it"


@pytest.mark.parametrize("doc", DOCS)
def test_files_they_mention_exist_or_are_the_defaults(doc: str) -> None:
    missing = []
    for span in inline_spans(DOCS[doc]):
        if re.fullmatch(r"(\.hpo/)[\w./-]+", span) and span.split("/")[1].split("-")[0] not in SOURCE_TEXT:
            missing.append(span)  # a default location under .hpo/ the code never names
        elif re.fullmatch(_REPO_PATH, span):
            if not (ROOT / span).exists():
                missing.append(span)
        elif span in ("Dockerfile", "docker-compose.yml", "pyproject.toml") and not (ROOT / span).exists():
            missing.append(span)
    assert not missing, missing


def _anchors(text: str) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"^ *```.*?^ *```", "", text, flags=re.M | re.S)
    headings = re.findall(r"^#+ (.+)$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("doc", DOCS)
def test_links_lead_to_a_file_and_heading(doc: str) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", DOCS[doc]):
        if re.match(r"\w+://", target):
            continue  # the web: not checked offline
        path, _, anchor = target.partition("#")
        page = (ROOT / doc).parent / path if path else ROOT / doc
        if not page.exists():
            broken.append(f"{target}: no such file")
        elif anchor and anchor not in _anchors(page.read_text()):
            broken.append(f"{target}: no heading '#{anchor}' in {page.relative_to(ROOT)}")
    assert not broken, f"{doc}: {broken}"
