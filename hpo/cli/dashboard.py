"""`hpo dashboard`: optuna-dashboard on the study storage, with each trial's plots."""

from __future__ import annotations

from typing import Annotated

import typer

from hpo.cli._app import StorageOpt, app, console, err, examples, user_errors

_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@app.command(
    epilog=examples(
        "# the study's page on http://127.0.0.1:8080",
        "hpo dashboard mask",
        "# every study of a PostgreSQL storage, on a port the system picks",
        "hpo dashboard --storage postgresql://user@db-host/foldtune --port 0",
    )
)
@user_errors
def dashboard(
    name: Annotated[
        str | None, typer.Argument(help="Study to open; its page's URL is printed. Default: the study list.")
    ] = None,
    storage: StorageOpt = None,
    host: Annotated[
        str, typer.Option(help="Bind address. The dashboard has no login: keep 127.0.0.1 unless trusted.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port; 0 picks a free one.")] = 8080,
    artifacts: Annotated[
        str | None,
        typer.Option(
            help="Serve trial plots from this directory only. Default: each study's own "
            "(recorded by `hpo study create`).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Live optuna-dashboard: studies, trials, and each trial's learning curves and confusion matrix.

    The objective is named macro_f1. A trial's page shows its learning curves,
    per fold as the folds finish, and its out-of-fold confusion matrix.
    """
    from hpo.dashboard import make_server, serve, study_path
    from hpo.study import storage_url
    from storage import redact

    url = storage_url(storage)
    server = make_server(url, host=host, port=port, artifacts=artifacts)
    try:
        page = server.url + (study_path(server.storage, name) if name else "")
    except BaseException:
        server.server_close()
        raise
    console.print(f"optuna-dashboard for {redact(url)}", highlight=False, soft_wrap=True)
    console.print(f"open {page}", highlight=False, soft_wrap=True)
    if host not in _LOCAL_HOSTS:
        err.print(
            f"[yellow]warning:[/] listening on {host}: anyone who reaches port {server.server_address[1]} "
            "can read and change the studies (the dashboard has no login)"
        )
    console.print("Ctrl-C to stop", highlight=False)
    serve(server)
