"""`hpo doctor`: versions, devices, study storage and MLflow reachability (and a data summary)."""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from hpo.cli._app import StorageOpt, app, console, examples, user_errors
from hpo.errors import short_error

# distributions whose versions matter when comparing machines or reporting a bug
PACKAGES = (
    "foldtune",
    "torch",
    "torchvision",
    "timm",
    "albumentations",
    "optuna",
    "optuna-dashboard",
    "mlflow",
    "sqlalchemy",
    "psycopg",
    "pymysql",
    "scikit-learn",
    "numpy",
    "pillow",
)
_TIMEOUT_S = 5


@dataclass
class Check:
    """One reachability check: what was checked (credentials masked), whether it passed, details."""

    name: str
    target: str
    ok: bool
    detail: str


@app.command(
    epilog=examples(
        "hpo doctor",
        "hpo doctor --storage postgresql://user@db-host/foldtune --data /data/mask",
    )
)
@user_errors
def doctor(
    storage: StorageOpt = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            help="MLflow tracking URI. Default: $MLFLOW_TRACKING_URI, else sqlite:///.hpo/mlflow.db",
            show_default=False,
        ),
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="Also check this dataset (as `hpo data check`).", show_default=False)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show versions and devices, and check that the study storage and MLflow are reachable.

    Passwords in the URLs it prints are masked. Exit 1 when a check fails.
    """
    checks = [_storage_check(storage), _tracking_check(tracking_uri)]
    if data is not None:
        checks.append(_data_check(data))
    result = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": _versions(),
        "devices": _devices(),
        "checks": [asdict(c) for c in checks],
        "ok": all(c.ok for c in checks),
    }
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        _print(result)
    if not result["ok"]:
        raise typer.Exit(1)


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _devices() -> dict[str, Any]:
    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "cuda": None, "gpus": []}
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a dependency
        info["error"] = f"torch does not import ({exc})"
        return info
    info["cuda"] = torch.version.cuda
    info["cuda_available"] = torch.cuda.is_available()
    if info["cuda_available"]:
        info["cudnn"] = torch.backends.cudnn.version()
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            info["gpus"].append(
                {
                    "index": i,
                    "name": p.name,
                    "memory_gib": round(p.total_memory / 2**30, 1),
                    "capability": f"{p.major}.{p.minor}",
                }
            )
    return info


def _storage_check(flag: str | None) -> Check:
    """Open the study storage the way workers do (schema check included), without creating files."""
    from hpo.study import storage_url
    from storage import StorageError, normalize_url, open_storage, redact

    raw = storage_url(flag)
    try:
        url = normalize_url(raw)
    except StorageError as exc:
        return Check("storage", redact(raw), False, str(exc))
    shown = redact(url)
    local = _local_file(url)
    if local is not None and not local.exists():
        return Check("storage", shown, True, f"{local} does not exist yet; `hpo study create` creates it")
    try:
        opened = open_storage(url, heartbeat_interval=None)
        studies = opened.get_all_studies()
    except StorageError as exc:
        return Check("storage", shown, False, str(exc))
    except Exception as exc:  # a driver error the storage layer did not translate
        return Check("storage", shown, False, short_error(exc, limit=1000))
    names = ", ".join(s.study_name for s in studies[:5]) + (", ..." if len(studies) > 5 else "")
    listed = f" ({names})" if studies else ""
    return Check("storage", shown, True, f"reachable; {len(studies)} study(ies){listed}")


def _local_file(url: str) -> Path | None:
    """The file behind a normalized SQLite/journal URL, None for servers and in-memory SQLite."""
    scheme, _, rest = url.partition("://")
    if scheme == "journal":
        return Path(rest)
    if scheme.startswith("sqlite"):
        path = rest.partition("?")[0].removeprefix("/")
        return None if path in ("", ":memory:") or path.startswith("file:") else Path(path)
    return None


def _tracking_check(flag: str | None) -> Check:
    """Reach the MLflow store the way a tracked run would, creating nothing."""
    from hpo.tracking import resolve_tracking_uri
    from storage import redact

    uri = resolve_tracking_uri(flag)  # --tracking-uri, then MLFLOW_TRACKING_URI, then .hpo/mlflow.db
    shown = redact(uri)
    if uri.startswith(("http://", "https://")):
        return _http_check(uri, shown)
    scheme = uri.partition("://")[0].partition("+")[0].lower() if "://" in uri else "file"
    if scheme == "sqlite":
        db = Path(uri.partition(":///")[2].partition("?")[0])
        if not db.exists():
            return Check("mlflow", shown, True, f"{db} does not exist yet; the first tracked run creates it")
        return _sql_check(uri, shown)
    if scheme in ("postgresql", "postgres", "mysql", "mssql"):
        return _sql_check(uri, shown)
    if scheme == "file":
        path = Path(uri.removeprefix("file://"))
        if path.is_dir() or (not path.exists() and os.access(_existing_parent(path), os.W_OK)):
            return Check("mlflow", shown, True, f"local store {path}")
        return Check("mlflow", shown, False, f"{path} is not a writable folder; pass --tracking-uri")
    return Check("mlflow", shown, True, f"'{scheme}' tracking URIs are not checked here")


def _http_check(uri: str, shown: str) -> Check:
    """GET <uri>/health as a tracked run would (credentials as basic auth): 200 OK passes."""
    from hpo.tracking import server_problem

    if (reason := server_problem(uri, timeout=_TIMEOUT_S)) is None:
        return Check("mlflow", shown, True, "tracking server answers /health")
    return Check(
        "mlflow",
        shown,
        False,
        f"tracking server unreachable ({reason}); start it (`mlflow server`) or pass --tracking-uri",
    )


def _sql_check(uri: str, shown: str) -> Check:
    """Connect to an MLflow database backend and run SELECT 1 (the server's driver must be installed)."""
    import sqlalchemy as sa

    connect_args = {"connect_timeout": _TIMEOUT_S} if not uri.startswith("sqlite") else {}
    try:
        engine = sa.create_engine(uri, connect_args=connect_args, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as exc:
        reason = short_error(exc)
        return Check("mlflow", shown, False, f"cannot connect ({reason})")
    return Check("mlflow", shown, True, "database reachable")


def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _data_check(source: str) -> Check:
    from hpo.data import check_data
    from training.config import ConfigError

    try:
        report = check_data(source)
    except ConfigError as exc:
        return Check("data", source, False, str(exc))
    detail = (
        f"{report.n_images} images, {report.n_classes} classes: {len(report.errors)} error(s), "
        f"{len(report.warnings)} warning(s)"
    )
    if report.findings:
        detail += f"; `hpo data check {source}` lists them"
    return Check("data", source, report.ok, detail)


def _print(result: dict[str, Any]) -> None:
    versions = Table("package", "version", title=f"python {result['python']}", caption=result["platform"])
    for name, version in result["versions"].items():
        versions.add_row(name, version or "[red]not installed[/]")
    console.print(versions)
    dev = result["devices"]
    if dev.get("gpus"):
        gpus = Table(
            "gpu", "name", "memory", "capability", title=f"CUDA {dev['cuda']}, cuDNN {dev.get('cudnn')}"
        )
        for g in dev["gpus"]:
            gpus.add_row(str(g["index"]), g["name"], f"{g['memory_gib']} GiB", g["capability"])
        console.print(gpus)
    else:
        built = f"torch built for CUDA {dev['cuda']}" if dev.get("cuda") else "torch built without CUDA"
        console.print(
            f"no CUDA device ({built}); workers train on {dev['cpu_count']} CPU cores", highlight=False
        )
    for c in result["checks"]:
        mark = "[green]ok[/]" if c["ok"] else "[red]FAILED[/]"
        console.print(
            f"{mark} {c['name']} {escape(c['target'])}: {escape(c['detail'])}",
            highlight=False,
            soft_wrap=True,
        )
