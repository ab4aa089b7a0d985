"""storage: URLs and redaction, open_storage on every backend, cross-process locks, heartbeats.

Real databases throughout (tests/databases.py): local PostgreSQL and MariaDB, temp files.
"""

from __future__ import annotations

import logging
import multiprocessing
import sqlite3
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from storage import (
    StorageError,
    normalize_url,
    open_storage,
    redact,
    serve_proxy,
    storage_lock,
    upgrade_schema,
)
from tests import databases
from tests.databases import (
    RDB_MODES,
    SERVER_MODES,
    STORAGE_MODES,
    admin_execute,
    database_url,
    fresh_storage_url,
    mariadb_user,
    require_server,
    unique_name,
)
from tests.helpers import free_port

storage_url = databases.storage_url  # the fixture: a fresh database per test and storage_mode

N_WORKERS = 6  # processes racing on one fresh database
N_INCREMENTS = 40  # per worker, under storage_lock
SECRET = "S3cr:t/p@ss w?rd#%"  # every character that needs URL-encoding
WRONG = "Wr0ng-Pa55:w/rd@x"


# ------------------------------------------------------------------------------------ every backend


def _objective(trial: optuna.Trial) -> float:
    trial.set_user_attr("fold_f1", [0.5, 0.7])
    return trial.suggest_float("lr", 1e-4, 1e-1, log=True)


@pytest.mark.parametrize("storage_mode", STORAGE_MODES)
def test_study_and_trial_round_trip(storage_url: str) -> None:
    study = optuna.create_study(storage=open_storage(storage_url), study_name="s", direction="maximize")
    study.optimize(_objective, n_trials=2)

    reread = optuna.load_study(study_name="s", storage=open_storage(storage_url))  # a second client
    trials = reread.get_trials(states=(TrialState.COMPLETE,))
    assert [t.params for t in trials] == [t.params for t in study.trials]
    assert [t.value for t in trials] == [t.params["lr"] for t in study.trials]
    assert all(t.user_attrs == {"fold_f1": [0.5, 0.7]} for t in trials)


def test_sqlite_gets_its_directory_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "not" / "yet" / "study.db"
    open_storage(str(path))
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_in_memory_sqlite_opens_as_optunas_own_does() -> None:
    storage = open_storage("sqlite:///:memory:")
    assert storage.get_heartbeat_interval() is None  # no other process could ever reap its trials
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    study.optimize(_objective, n_trials=3)
    reread = optuna.load_study(study_name="s", storage=storage)
    complete = reread.get_trials(states=(TrialState.COMPLETE,))
    assert [t.user_attrs for t in complete] == [{"fold_f1": [0.5, 0.7]}] * 3
    with storage_lock("sqlite:///:memory:", "create:s"):  # a lock within the process
        assert optuna.get_all_study_names(storage) == ["s"]
    assert optuna.get_all_study_names(open_storage("sqlite://")) == []  # each call: a new database


def test_a_sqlite_error_never_blames_a_server() -> None:
    from storage._errors import translate

    message = str(translate(TimeoutError("timed out waiting"), "sqlite:////tmp/study.db"))
    assert "server" not in message and "timed out waiting" in message
    assert "cannot reach the database server" in str(
        translate(TimeoutError("timed out"), "postgresql://db/x")
    )


# -------------------------------------------------------------------------- concurrency, processes
# One pool of spawned worker processes serves every test below: interpreter start-up (imports)
# is paid once, and each task starts with all N_WORKERS processes meeting at a shared barrier,
# so they hit the database at the same instant. Each test uses its own fresh database.

_barrier: Any = None  # set in each worker process


def _init_worker(barrier: Any) -> None:
    global _barrier
    _barrier = barrier


@pytest.fixture(scope="module")
def workers() -> Iterator[Any]:
    spawn = multiprocessing.get_context("spawn")  # fresh interpreters, like separate workers
    pool = spawn.Pool(N_WORKERS, initializer=_init_worker, initargs=(spawn.Barrier(N_WORKERS),))
    try:
        yield pool
    finally:
        pool.terminate()
        pool.join()


def _run_at_once(pool: Any, task: Any, *args: Any) -> list[str]:
    return pool.starmap_async(task, [args] * N_WORKERS, chunksize=1).get(timeout=180)


def _open_at_once(url: str) -> str:
    _barrier.wait(timeout=120)
    try:
        storage = open_storage(url)
        study = optuna.create_study(storage=storage, study_name="shared", load_if_exists=True)
        study.optimize(_objective, n_trials=2)
        return f"ok {storage.get_current_version()}"
    except BaseException as exc:
        return "".join(traceback.format_exception_only(exc))


@pytest.mark.parametrize("storage_mode", RDB_MODES)
def test_processes_opening_a_fresh_database_at_once_all_succeed(storage_url: str, workers: Any) -> None:
    outcomes = _run_at_once(workers, _open_at_once, storage_url)

    head = open_storage(storage_url).get_head_version()
    assert outcomes == [f"ok {head}"] * N_WORKERS
    with _connect(storage_url) as conn:  # one schema: one version row, every trial stored
        assert conn.execute(sa.text("SELECT COUNT(*) FROM version_info")).scalar() == 1
        assert conn.execute(sa.text("SELECT COUNT(*) FROM alembic_version")).scalar() == 1
        assert conn.execute(sa.text("SELECT COUNT(*) FROM studies")).scalar() == 1
        assert conn.execute(sa.text("SELECT COUNT(*) FROM trials")).scalar() == 2 * N_WORKERS


def _increment_under_lock(url: str, counter: Path) -> str:
    _barrier.wait(timeout=120)
    try:
        for _ in range(N_INCREMENTS):
            with storage_lock(url, "counter"):  # read-modify-write: loses updates unless excluded
                value = int(counter.read_text())
                counter.write_text(str(value + 1))
        return "ok"
    except BaseException as exc:
        return "".join(traceback.format_exception_only(exc))


@pytest.mark.parametrize("storage_mode", RDB_MODES)
def test_storage_lock_excludes_other_processes(storage_url: str, tmp_path: Path, workers: Any) -> None:
    counter = tmp_path / "counter"
    counter.write_text("0")
    assert _run_at_once(workers, _increment_under_lock, storage_url, counter) == ["ok"] * N_WORKERS
    assert int(counter.read_text()) == N_WORKERS * N_INCREMENTS


@pytest.mark.parametrize("storage_mode", STORAGE_MODES)
def test_storage_lock_times_out_while_held_and_names_are_independent(storage_url: str) -> None:
    with storage_lock(storage_url, "a"):
        with storage_lock(storage_url, "b", timeout=5):
            pass
        started = time.monotonic()
        held = r"gave up after 0\.2 s waiting for a storage lock"
        with pytest.raises(StorageError, match=held), storage_lock(storage_url, "a", timeout=0.2):
            pass
        assert time.monotonic() - started < 3
    with storage_lock(storage_url, "a", timeout=5):  # released on exit
        pass


@pytest.mark.parametrize("storage_mode", RDB_MODES)
def test_storage_lock_is_cheap_enough_for_every_trial(storage_url: str) -> None:
    with storage_lock(storage_url):  # first use creates the cached engine
        pass
    n = 100
    started = time.perf_counter()
    for _ in range(n):
        with storage_lock(storage_url):
            pass
    per_lock = (time.perf_counter() - started) / n
    assert per_lock < 0.02, f"{per_lock * 1000:.1f} ms per lock"  # ~1 ms on the local servers


def test_storage_lock_is_refused_through_a_grpc_proxy() -> None:
    with (
        pytest.raises(StorageError, match="not available through the gRPC proxy"),
        storage_lock("grpc://127.0.0.1:13000"),
    ):
        pass


# --------------------------------------------------------------------------------- heartbeat, retry


@pytest.mark.parametrize("storage_mode", RDB_MODES)
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # fail_stale_trials
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_stale_trial_of_a_dead_worker_is_failed_and_retried(storage_url: str) -> None:
    storage = open_storage(storage_url, heartbeat_interval=5, max_retry=2)
    assert (storage.heartbeat_interval, storage.grace_period) == (5, 20)
    study = optuna.create_study(storage=storage, study_name="hb")
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    storage.record_heartbeat(trial._trial_id)  # what the worker's heartbeat thread does

    optuna.storages.fail_stale_trials(study)  # a fresh beat: still RUNNING
    assert [t.state for t in study.trials] == [TrialState.RUNNING]

    with _connect(storage_url) as conn:  # the worker died an hour ago
        beats = sa.table("trial_heartbeats", sa.column("heartbeat", sa.DateTime))
        conn.execute(sa.update(beats).values(heartbeat=datetime(2000, 1, 1)))
    optuna.storages.fail_stale_trials(study)

    failed, retry = study.trials
    assert (failed.state, retry.state) == (TrialState.FAIL, TrialState.WAITING)
    assert retry.system_attrs["failed_trial"] == failed.number
    assert retry.params == failed.params


def test_heartbeat_defaults() -> None:
    with fresh_storage_url("sqlite") as url:
        storage = open_storage(url)
        assert (storage.heartbeat_interval, storage.grace_period) == (30, 70)
        callback = storage.heartbeat_stale_trial_callback
        assert isinstance(callback, optuna.storages.RetryHeartbeatStaleTrialCallback)
        assert callback._max_retry == 3
        assert open_storage(url, heartbeat_interval=None).heartbeat_interval is None
        with pytest.raises(ValueError, match="heartbeat_interval"):
            open_storage(url, heartbeat_interval=0)


# ------------------------------------------------------------------------------------------- schema


@pytest.mark.parametrize("storage_mode", RDB_MODES)
def test_upgrade_schema(storage_url: str) -> None:
    head = upgrade_schema(storage_url)  # empty database: creates the current schema
    storage = open_storage(storage_url)
    assert storage.get_current_version() == head == storage.get_head_version()
    optuna.create_study(storage=storage, study_name="kept").optimize(_objective, n_trials=1)
    assert upgrade_schema(storage_url) == head  # current schema: nothing to do

    # An older schema: mark it one revision back (that migration only adds an index, so it can
    # really run again), which is what a database left by an older Optuna looks like.
    previous = storage.get_all_versions()[1]
    _set_schema_version(storage_url, previous)
    with pytest.raises(StorageError, match="run `hpo storage upgrade --storage URL`"):
        open_storage(storage_url)
    assert upgrade_schema(storage_url) == head
    assert len(optuna.load_study(study_name="kept", storage=open_storage(storage_url)).trials) == 1


def test_schema_newer_than_optuna_says_upgrade_optuna() -> None:
    with fresh_storage_url("sqlite") as url:
        open_storage(url)
        _set_schema_version(url, "v99.0.0.a")
        with pytest.raises(StorageError, match="newer Optuna"):
            open_storage(url)
        with pytest.raises(StorageError, match="pip install -U optuna"):
            upgrade_schema(url)


def test_upgrade_schema_refuses_storages_without_schema(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no schema to upgrade"):
        upgrade_schema(str(tmp_path / "study.log"))


# ------------------------------------------------------------------------------- URLs and redaction


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://bob:hunter2x@db.example:5432/hpo", "postgresql://bob:***@db.example:5432/hpo"),
        (
            "postgresql+psycopg://bob:hunter2x@db/hpo?sslmode=require",
            "postgresql+psycopg://bob:***@db/hpo?sslmode=require",
        ),
        (
            f"mysql+pymysql://root:{quote(SECRET, safe='')}@127.0.0.1:3306/t",
            "mysql+pymysql://root:***@127.0.0.1:3306/t",
        ),
        (f"postgresql://bob:{SECRET}@db/hpo", "postgresql://bob:***@db/hpo"),  # not encoded at all
        ("postgresql://bob:hunter2x@w0rd@db/hpo", "postgresql://bob:***@db/hpo"),  # unencoded '@'
        ("redis://:hunter2x@cache:6379/0", "redis://:***@cache:6379/0"),
        ("https://bob:hunter2x@example.com/x", "https://bob:***@example.com/x"),
        ("postgresql://db/hpo?user=bob&password=hunter2x", "postgresql://db/hpo?user=bob&password=***"),
        ("host=db user=bob password=hunter2x dbname=hpo", "host=db user=bob password=*** dbname=hpo"),
        ("failed: postgresql://bob:hunter2x@db/hpo is down", "failed: postgresql://bob:***@db/hpo is down"),
        ("mysql://root@127.0.0.1/test", "mysql://root@127.0.0.1/test"),
        ("sqlite:////home/me/runs/study.db", "sqlite:////home/me/runs/study.db"),
        ("study.db", "study.db"),
        ("journal:///runs/study.log", "journal:///runs/study.log"),
        ("grpc://proxy:13000", "grpc://proxy:13000"),
    ],
)
def test_redact(url: str, expected: str) -> None:
    assert redact(url) == expected


def test_a_short_password_is_masked_in_urls_not_inside_words() -> None:
    """With password ``p`` the server's error must still read 'port', not '***ort'."""
    port = free_port()  # nothing listens there
    with pytest.raises(StorageError) as info:
        open_storage(f"postgresql://bob:p@127.0.0.1:{port}/hpo")
    message = str(info.value)
    assert "bob:***@127.0.0.1" in message and "bob:p@" not in message
    assert f"port {port}" in message and "***ort" not in message


@pytest.mark.parametrize(
    "odd",
    ["", "://", "a://:@", "x" * 10_000, "\x00\n", "postgresql://u:hunter2x@[::1", "p://u:hunter2x@h:x/d"],
)
def test_redact_never_raises_nor_leaks(odd: str) -> None:
    assert "hunter2x" not in redact(odd)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("study.db", "sqlite:///{cwd}/study.db"),
        ("./x/study.sqlite3", "sqlite:///{cwd}/x/study.sqlite3"),
        ("sqlite:///rel.db", "sqlite:///{cwd}/rel.db"),
        ("sqlite:////abs/study.db", "sqlite:////abs/study.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("postgresql://bob:p%40ss@db:5432/hpo", "postgresql+psycopg://bob:p%40ss@db:5432/hpo"),
        ("postgres://db/hpo", "postgresql+psycopg://db/hpo"),
        ("postgresql+psycopg2://db/hpo", "postgresql+psycopg2://db/hpo"),
        ("mysql://root@db/hpo", "mysql+pymysql://root@db/hpo"),
        ("mariadb://root@db:3306/hpo", "mysql+pymysql://root@db:3306/hpo"),
        ("runs/study.log", "journal://{cwd}/runs/study.log"),
        ("study.jsonl", "journal://{cwd}/study.jsonl"),
        ("journal:///abs/study.log", "journal:///abs/study.log"),
        ("grpc://proxy:13000", "grpc://proxy:13000"),
    ],
)
def test_normalize_url(given: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    normalized = normalize_url(given)
    assert normalized == expected.format(cwd=tmp_path)
    assert normalize_url(normalized) == normalized


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("redis://:hunter2x@cache:6379/0", "unsupported storage URL scheme 'redis'"),
        ("https://bob:hunter2x@example.com/db", "unsupported storage URL scheme 'https'"),
        ("study.txt", "cannot tell the storage type"),
        ("", "no storage URL given"),
        ("postgresql://bob:hunter2x@db:notaport/hpo", "the port must be a number"),
        ("postgresql://bob:hunter2x@w0rd@db/hpo", "must be URL-encoded"),
        ("mysql://bob:hunter2x@db:3306", "no database name"),
        ("sqlite://host/study.db", "SQLite has no host"),
        ("grpc://proxy", "expected grpc://host:port"),
        ("postgres:db/hpo", "malformed storage URL"),
    ],
)
def test_bad_urls_say_what_and_how_in_one_line(url: str, fragment: str) -> None:
    with pytest.raises(StorageError) as info:
        open_storage(url)
    _assert_clean(info.value, ["hunter2x", "w0rd"])
    assert fragment in str(info.value)
    if "unsupported" in fragment:
        assert "postgresql://user:password@host:5432/db" in str(info.value)  # lists what works


# ---------------------------------------------------------------------------------- server failures


def test_wrong_password_on_mariadb(caplog: pytest.LogCaptureFixture) -> None:
    user = unique_name("ftu_")[:30]
    with fresh_storage_url("mariadb") as url, mariadb_user(user, SECRET, database=sa.make_url(url).database):
        right = database_url("mariadb", sa.make_url(url).database, username=user, password=SECRET)
        optuna.create_study(storage=open_storage(right), study_name="ok")  # special characters work

        wrong = database_url("mariadb", sa.make_url(url).database, username=user, password=WRONG)
        with caplog.at_level(logging.DEBUG), pytest.raises(StorageError) as info:
            open_storage(wrong)
    assert "wrong user name or password" in str(info.value)
    _assert_clean(info.value, [WRONG, SECRET], caplog)


def test_wrong_password_on_postgresql(caplog: pytest.LogCaptureFixture) -> None:
    role = unique_name("ftu_")
    with fresh_storage_url("postgresql") as url:
        database = sa.make_url(url).database
        admin_execute("postgresql", f"CREATE ROLE {role} LOGIN PASSWORD 'Right-Pa55-{role}'")
        try:
            wrong = database_url("postgresql", database, username=role, password=WRONG)
            if _connects(wrong):
                pytest.skip(
                    "the local PostgreSQL trusts 127.0.0.1 (pg_hba 'trust'), so it never checks a password; "
                    "covered by test_wrong_password_on_mariadb, test_postgresql_auth_failure_is_classified "
                    "and test_unreachable_or_missing_database_never_shows_the_password"
                )
            with caplog.at_level(logging.DEBUG), pytest.raises(StorageError) as info:
                open_storage(wrong)
            assert "wrong user name or password" in str(info.value)
            _assert_clean(info.value, [WRONG], caplog)
        finally:
            admin_execute("postgresql", f"DROP ROLE IF EXISTS {role}")


def test_postgresql_auth_failure_is_classified() -> None:
    """The exact error psycopg raises on a wrong password (what a scram/md5 server answers)."""
    import psycopg

    from storage._errors import translate

    url = f"postgresql+psycopg://bob:{quote(WRONG, safe='')}@db:5432/hpo"
    message = 'connection failed: connection to server at "10.0.0.5", port 5432 failed: FATAL:  password '
    message += 'authentication failed for user "bob"'
    error = translate(sa.exc.OperationalError(None, None, psycopg.OperationalError(message)), url)
    assert str(error).startswith("wrong user name or password for postgresql+psycopg://bob:***@db:5432/hpo")
    _assert_clean(error, [WRONG])


@pytest.mark.parametrize("mode", SERVER_MODES)
def test_unreachable_or_missing_database_never_shows_the_password(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    require_server(mode)
    missing = unique_name("ft_missing_")
    cases = [
        ("cannot reach the database server", database_url(mode, "hpo", password=WRONG, port=1)),
        (
            "cannot reach the database server",
            database_url(mode, "hpo", password=WRONG, host="nohost.invalid"),
        ),
        # MariaDB checks the password before the database: there, use the real (empty) one
        ("database missing", database_url(mode, missing, password=WRONG if mode == "postgresql" else None)),
    ]
    for expected, url in cases:
        started = time.monotonic()
        with caplog.at_level(logging.DEBUG), pytest.raises(StorageError) as info:
            open_storage(url)
        assert time.monotonic() - started < 10  # connect timeout, not the OS's minutes
        assert str(info.value).startswith(expected), str(info.value)
        _assert_clean(info.value, [WRONG], caplog)
    assert "CREATE DATABASE" in str(info.value)


def test_grpc_proxy_without_grpcio_or_server_is_a_storage_error() -> None:
    try:
        import grpc  # noqa: F401
    except ImportError:
        with pytest.raises(StorageError, match="pip install grpcio"):
            open_storage("grpc://127.0.0.1:1")
        with pytest.raises(StorageError, match="pip install grpcio"):
            serve_proxy("study.db")
    else:
        with pytest.raises(StorageError, match="cannot reach the gRPC storage proxy"):
            open_storage("grpc://127.0.0.1:1")


# ------------------------------------------------------------------------------------------ helpers


@contextmanager
def _connect(url: str) -> Iterator[sa.Connection]:
    engine = sa.create_engine(normalize_url(url))
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def _set_schema_version(url: str, version: str) -> None:
    with _connect(url) as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": version})


def _connects(url: str) -> bool:
    engine = sa.create_engine(normalize_url(url), connect_args={"connect_timeout": 5})
    try:
        with engine.connect():
            return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


def _assert_clean(error: BaseException, secrets: list[str], caplog: Any = None) -> None:
    """One line, no chained driver error, no secret (raw or URL-encoded) anywhere it could show."""
    assert "\n" not in str(error)
    assert error.__cause__ is None and error.__context__ is None
    texts = [str(error), repr(error), "".join(traceback.format_exception(error))]
    texts += [record.getMessage() for record in caplog.records] if caplog is not None else []
    for secret in secrets:
        for form in {secret, quote(secret, safe=""), quote(secret)}:
            assert not any(form in text for text in texts), f"{form!r} leaked"


def test_too_many_clients_says_how_to_fix_it_through_optunas_wrapper() -> None:
    import optuna
    import sqlalchemy.exc

    from storage._errors import translate

    driver = Exception('FATAL: sorry, too many clients already for "p@ss"')
    wrapped = sqlalchemy.exc.OperationalError("SELECT 1", {}, driver)
    try:
        try:
            raise wrapped
        except sqlalchemy.exc.OperationalError as e:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from e
    except optuna.exceptions.StorageInternalError as outer:
        message = str(translate(outer, "postgresql://u:p@ss@db/x"))
    assert "too many clients" in message and "max_connections" in message
