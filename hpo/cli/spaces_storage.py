"""Search-space and storage commands: `space show`, `storage upgrade`, `storage serve`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from hpo.cli._app import StorageOpt, console, examples, space_app, storage_app, user_errors


@space_app.command(
    "show",
    epilog=examples(
        "hpo space show competition_cpu",
        "hpo space show my_space.yaml",
    ),
)
@user_errors
def space_show(path: Annotated[str, typer.Argument(help="YAML file or shipped space name.")]) -> None:
    """Print a search space: fixed values and searched parameters."""
    from hpo.space import load_space

    space = load_space(path)
    if space.description:
        console.print(space.description)
    fixed = Table("fixed", "value", title="fixed")
    for key, value in space.fixed.items():
        fixed.add_row(key, repr(value))
    params = Table("param", "range", "when", title="searched")
    for row in space.rows():
        params.add_row(*row)
    console.print(fixed, params)
    if space.starts:
        starts = Table("start", "values (the rest sampled)", title="starts (the first trials)")
        for index, start in enumerate(space.starts):
            starts.add_row(str(index), ", ".join(f"{k}={v}" for k, v in start.items()))
        console.print(starts)


@storage_app.command(
    "upgrade",
    epilog=examples(
        "# after upgrading Optuna, once, before the workers start",
        "hpo storage upgrade --storage postgresql://user@db-host/foldtune",
    ),
)
@user_errors
def storage_upgrade(storage: StorageOpt = None) -> None:
    """Migrate the study database schema to this Optuna version."""
    from hpo.study import storage_url
    from storage import redact, upgrade_schema

    url = storage_url(storage)
    version = upgrade_schema(url)
    console.print(f"{redact(url)} is at schema version {version}")


@storage_app.command(
    "serve",
    epilog=examples(
        "# workers then use --storage grpc://THIS-HOST:13000",
        "hpo storage serve --storage postgresql://user@db-host/foldtune --host 0.0.0.0",
    ),
)
@user_errors
def storage_serve(
    storage: StorageOpt = None,
    host: Annotated[
        str, typer.Option(help="Bind address; keep 127.0.0.1 unless workers are remote.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="gRPC port.")] = 13000,
) -> None:
    """Serve the storage over gRPC so very many workers share a few database connections."""
    from hpo.study import storage_url
    from storage import redact, serve_proxy

    url = storage_url(storage)
    console.print(f"serving {redact(url)} on grpc://{host}:{port}")
    serve_proxy(url, host=host, port=port)
