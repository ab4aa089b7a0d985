"""`hpo`: the one command-line face of foldtune (typer + rich). Commands parse, call the library, print.

Each module registers its commands on the shared app; importing them here assembles the CLI.
"""

from hpo.cli import dashboard, data, doctor, models, spaces_storage, study, weights, work  # noqa: F401  (registers commands)
from hpo.cli._app import app

__all__ = ["app"]
