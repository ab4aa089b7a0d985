"""docs/cli.md, generated from the `hpo` app: every command, its arguments and options, its examples.

    python -m hpo.cli.reference                # rewrite docs/cli.md of this checkout
    python -m hpo.cli.reference --out FILE     # write it elsewhere

The text is what ``hpo ... --help`` shows (help, usage, the options with their defaults, the examples
of the epilog), as markdown that does not depend on the terminal. tests/test_cli_reference.py fails
while docs/cli.md differs from :func:`render`, so the reference cannot drift from the code.
"""

from __future__ import annotations

import argparse
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from hpo.cli._app import EXAMPLES, app

__all__ = ["REFERENCE", "REGENERATE", "command_tree", "examples_of", "render"]

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "cli.md"  # in the checkout (pip install -e)
REGENERATE = "python -m hpo.cli.reference"


def command_tree() -> Iterator[tuple[list[str], Any, Any]]:
    """(path, command, context) for ``hpo`` and every group and command below it, in `--help` order."""
    root = typer.main.get_command(app)
    yield from _walk(["hpo"], root, root.context_class(root, info_name="hpo"))


def _walk(path: list[str], command: Any, ctx: Any) -> Iterator[tuple[list[str], Any, Any]]:
    yield path, command, ctx
    for name in getattr(command, "commands", {}):
        sub = command.commands[name]
        if not sub.hidden:
            yield from _walk([*path, name], sub, sub.context_class(sub, info_name=name, parent=ctx))


def examples_of(command: Any) -> list[str]:
    """The example lines (``# why`` comments and ``hpo ...`` commands) that end a command's --help."""
    header, *lines = (command.epilog or "").splitlines() or [""]
    return lines if header == EXAMPLES else []


def render() -> str:
    """The whole reference: an index, then one section per command."""
    tree = list(command_tree())
    out = [
        "# CLI reference",
        "",
        f"Generated from the `hpo` app by `{REGENERATE}`: do not edit by hand. "
        "`hpo COMMAND --help` prints the same; every command also takes `--help`. "
        "Back to the [README](../README.md).",
        "",
    ]
    out += [f"- [`{' '.join(path)}`](#{'-'.join(path)}): {_first_line(cmd)}" for path, cmd, _ in tree[1:]]
    for path, cmd, ctx in tree:
        out += ["", *_section(path, cmd, ctx)]
    return "\n".join(out) + "\n"


def _section(path: list[str], cmd: Any, ctx: Any) -> list[str]:
    name = " ".join(path)
    usage = " ".join([name, *cmd.collect_usage_pieces(ctx)])
    lines = [f"## `{name}`", "", *_help(cmd), "", "```text", usage, "```"]
    records = [(p.param_type_name, p.get_help_record(ctx)) for p in cmd.get_params(ctx)]
    for kind, title in (("argument", "Arguments"), ("option", "Options")):
        items = [_item(names, text) for k, (names, text) in records if k == kind and names != "--help"]
        if items:
            lines += ["", f"{title}:", "", *items]
    if hasattr(cmd, "commands") and len(path) > 1:  # the index above lists hpo's own
        lines += ["", "Commands:", ""]
        for sub, command in cmd.commands.items():
            lines.append(f"- [`{name} {sub}`](#{'-'.join([*path, sub])}): {_first_line(command)}")
    if examples := examples_of(cmd):
        lines += ["", "Examples:", "", "```bash", *examples, "```"]
    return lines


def _item(names: str, text: str) -> str:
    return f"- `{names}`: {_escape(text)}" if text else f"- `{names}`"


def _help(cmd: Any) -> list[str]:
    """The help text's paragraphs, each on one line (typer shows them re-wrapped to the terminal)."""
    text = inspect.cleandoc(cmd.help or "").partition("\f")[0]
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]
    return [line for p in paragraphs for line in (_escape(p), "")][:-1]


def _first_line(cmd: Any) -> str:
    return _escape(" ".join(inspect.cleandoc(cmd.help or "").split("\n\n")[0].split()))


def _escape(text: str) -> str:
    """Markdown would read ``prob_<class>`` as an HTML tag; code spans are left as they are."""
    parts = re.split(r"(`[^`]*`)", " ".join(text.split()))
    return "".join(p if p.startswith("`") else p.replace("<", r"\<") for p in parts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REFERENCE, help=f"where to write (default: {REFERENCE})")
    out = parser.parse_args().out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(), encoding="utf-8")
    typer.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
