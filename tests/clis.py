"""Command lines checked against the real CLIs without running them (compose services, the docs' examples).

``resolve`` walks a command line down the command groups and lets the leaf command parse the rest as it
would at run time, so a misspelled command, option or value fails the check.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from hpo.cli import app

__all__ = ["command_clis", "default_entrypoint", "resolve"]


def command_clis() -> dict[str, Any]:
    import mlflow.cli

    return {"hpo": typer.main.get_command(app), "mlflow": mlflow.cli.cli}


def resolve(cli: Any, prog: str, args: list[str]) -> tuple[list[str], str | None]:
    """Walk ``args`` down the command groups and parse the rest as the leaf command would.

    Returns the command path and a problem (None when the command line parses).
    """
    path, rest, cmd = [prog], list(args), cli
    while hasattr(cmd, "commands"):  # a group (typer's vendored click or click itself)
        if not rest or rest[0].startswith("-"):
            return path, f"'{' '.join(path)}' needs a subcommand ({', '.join(sorted(cmd.commands))})"
        name = rest.pop(0)
        if name not in cmd.commands:
            return (
                path,
                f"'{' '.join(path)}' has no command '{name}' (known: {', '.join(sorted(cmd.commands))})",
            )
        cmd = cmd.commands[name]
        path.append(name)
    try:
        cmd.make_context(" ".join(path), list(rest))  # it consumes the list it parses
    except Exception as exc:  # click's and typer's own UsageError family
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        return path, f"'{' '.join(path)} {' '.join(rest)}': {message}"
    return path, None


def default_entrypoint() -> list[str]:
    """The Dockerfile's ENTRYPOINT: what a container of the project's image runs before its args."""
    dockerfile = Path(__file__).resolve().parents[1] / "Dockerfile"
    line = next(ln for ln in dockerfile.read_text().splitlines() if ln.startswith("ENTRYPOINT"))
    return json.loads(line.removeprefix("ENTRYPOINT"))
