"""The typer app, shared options, consoles and the one-line error handling of every command."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler

from hpo.errors import USER_ERRORS

__all__ = [
    "EXAMPLES",
    "StorageOpt",
    "app",
    "console",
    "data_app",
    "err",
    "examples",
    "quiet",
    "space_app",
    "storage_app",
    "study_app",
    "user_errors",
]

app = typer.Typer(
    help="Hyperparameter optimization for image classifiers: Optuna studies, GPU workers, pruned k-fold.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold database URLs with passwords
)
study_app = typer.Typer(help="Create and inspect studies.", no_args_is_help=True)
space_app = typer.Typer(help="Inspect YAML search spaces.", no_args_is_help=True)
storage_app = typer.Typer(help="Study storage: schema upgrades and the gRPC proxy.", no_args_is_help=True)
app.add_typer(study_app, name="study")
app.add_typer(space_app, name="space")
data_app = typer.Typer(help="Check a dataset and write an EDA report.", no_args_is_help=True)
app.add_typer(storage_app, name="storage")
app.add_typer(data_app, name="data")

console = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])
EXAMPLES = "Examples:"
_settings = {"quiet": False}  # set by the app callback on every invocation


def quiet() -> bool:
    """True under ``hpo --quiet``: no progress bars or log chatter; results and errors still print."""
    return _settings["quiet"]


StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage",
        help="Study storage: sqlite:///file.db, postgresql://..., mysql://..., a .log journal file, "
        "grpc://host:port. Default: $HPO_STORAGE, else sqlite:///.hpo/foldtune.db",
        show_default=False,
    ),
]


def examples(*lines: str) -> str:
    """A command's epilog: runnable examples that end its --help, each ``# why`` line above its command.

    typer prints an epilog's lines as they are (with rich, also without a terminal), and
    ``python -m hpo.cli.reference`` puts them in docs/cli.md as a bash block; keep them short enough
    for an 80-column terminal.
    """
    return "\n".join([EXAMPLES, *lines])


def user_errors(fn: F) -> F:
    """Bad input becomes one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            sys.stderr.write(f"hpo: error: {' '.join(str(exc).split())}\n")
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False,
    quiet_: Annotated[
        bool, typer.Option("--quiet", "-q", help="For scripts: no progress bars or warnings, only results.")
    ] = False,
) -> None:
    _settings["quiet"] = quiet_ and not verbose
    # On a terminal, rich's handler (it shares the console with the progress bars); in logs (nohup,
    # docker, Kubernetes), plain timestamped lines that nothing wraps.
    handler = RichHandler(console=err, show_path=False) if err.is_terminal else logging.StreamHandler()
    if not err.is_terminal:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logging.basicConfig(
        level=logging.INFO if verbose else logging.ERROR if quiet_ else logging.WARNING,
        format="%(message)s",
        handlers=[handler],
        force=True,
    )
    import optuna

    optuna.logging.set_verbosity(logging.INFO if verbose else logging.ERROR if quiet_ else logging.WARNING)
