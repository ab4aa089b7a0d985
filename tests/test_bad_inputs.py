"""The bad-input catalog: every way of getting `hpo` wrong ends in one line on stderr and exit code 2.

Each case drives the real CLI (in-process, a few also as a real process) and asserts: exit code 2,
exactly one line ``hpo: error: ...`` naming what is wrong, where (file, flag, row, URL) and how to
fix it, no traceback, no password, and nothing half-created: the case runs in its own folder (also
the working directory, where the default storage and caches go), and no file or folder may appear
there unless the case names it. The search-space mistakes are listed in full in
``tests/space_mistakes.py`` (``BAD``); a few of them run here through the CLI.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import optuna
import pytest
import sqlalchemy as sa
import torch
from typer.testing import CliRunner

from hpo.cli import app
from hpo.models import Bundle, Member, save_bundle
from hpo.study import create_study
from tests.databases import admin_execute, database_url, fresh_storage_url, mariadb_user, unique_name
from tests.datasets import make_csv_dataset
from tests.helpers import free_port
from tests.space_mistakes import BAD as SPACE_MISTAKES
from training.config import RunConfig
from training.models import build_model, normalization

runner = CliRunner()
HPO = str(Path(sys.executable).parent / "hpo")
CLASSES = ("a", "b", "c")
SPACE = """
fixed: {model.name: test_resnet, data.image_size: 32, budget.max_epochs: 1, augment.preset: none}
params:
  optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
starts: []
"""
LR = "  optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"
STUDY_FILES = ("study.db", "study.db-*", "study.db.*")  # SQLite WAL and lock files of an opened study


@dataclass
class Env:
    """What a case may use: its own folder (the CWD) and module-wide inputs outside it."""

    tmp: Path
    csv: Path  # a good dataset: 3 classes x 8 images, grouped
    space: Path  # a good space: test_resnet at 32 px, 1 epoch
    bundle: Path  # a model for a, b, c (untrained: the cases fail before its answers matter)
    tracking: str  # a local MLflow store holding registered model 'M' without versions
    stack: contextlib.ExitStack

    @property
    def storage(self) -> str:
        return f"sqlite:///{self.tmp / 'study.db'}"

    def create(self, *args: str) -> list[str]:
        return ["study", "create", "s", "--storage", self.storage, *args]

    def predict(self, *args: str, model: str | None = None) -> list[str]:
        images = self.csv.parent / "imgs"
        return ["predict", "--model", model or str(self.bundle), "--data", str(images), *args]

    def write(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path

    def study(self, data: Path) -> None:
        """Create study 's' on ``data`` (for the worker cases)."""
        create_study("s", space=self.space, data=str(data), storage=self.storage, folds=2)


@dataclass(frozen=True)
class Bad:
    args: list[str]
    words: tuple[str, ...]  # what is wrong, where, how to fix: all must be in the one line
    secrets: tuple[str, ...] = ()  # must not appear anywhere in the output
    keep: tuple[str, ...] = ()  # globs (relative to the case folder) of what the failure may leave
    check: Callable[[], None] | None = field(default=None, compare=False)  # further post-conditions


CASES: dict[str, Callable[[Env], Bad]] = {}


def case(fn: Callable[[Env], Bad]) -> Callable[[Env], Bad]:
    CASES[fn.__name__] = fn
    return fn


def no_trials(env: Env) -> Callable[[], None]:
    def check() -> None:
        study = optuna.load_study(study_name="s", storage=env.storage)
        assert study.trials == [] and "budget" not in study.user_attrs  # the study is as it was

    return check


# ------------------------------------------------------------------------------------------ data


@case
def missing_data_dir(env: Env) -> Bad:
    return Bad(
        env.create("--space", str(env.space), "--data", str(env.tmp / "nope")),
        ("nope does not exist", "give a CSV manifest, an image folder"),
    )


@case
def empty_data_dir(env: Env) -> Bad:
    (env.tmp / "empty").mkdir()
    return Bad(
        env.create("--space", str(env.space), "--data", str(env.tmp / "empty")),
        ("no class folders with images under", "empty", "expected <root>/<class>/*.png"),
    )


@case
def csv_without_label_column(env: Env) -> Bad:
    csv = make_csv_dataset(env.tmp / "d", per_class=4, size=(32, 32), name="x.csv")
    csv.write_text(csv.read_text().replace("path,label,group", "path,class,group"))
    return Bad(
        env.create("--space", str(env.space), "--data", str(csv)),
        ("x.csv: missing column 'label'", "found: path, class, group", "header must be path,label"),
    )


@case
def csv_row_with_missing_image(env: Env) -> Bad:
    csv = make_csv_dataset(env.tmp / "d", per_class=4, size=(32, 32))
    (csv.parent / "imgs" / "b_02.png").unlink()
    return Bad(
        env.create("--space", str(env.space), "--data", str(csv)),
        ("labels.csv row 8", "image 'imgs/b_02.png' not found", "fix the path or remove the row"),
    )


@case
def csv_path_to_a_missing_image_outside_the_data_root(env: Env) -> Bad:
    csv = make_csv_dataset(env.tmp / "d", per_class=4, size=(32, 32))
    csv.write_text(csv.read_text() + "../photos/gone.png,a,g9\n")
    return Bad(
        env.create("--space", str(env.space), "--data", str(csv)),
        ("row 14", "'../photos/gone.png' not found at", "fix the path or remove the row"),
    )


@case
def single_class(env: Env) -> Bad:
    csv = make_csv_dataset(env.tmp / "d", classes=("cat",), per_class=6, size=(32, 32))
    return Bad(
        env.create("--space", str(env.space), "--data", str(csv)),
        ("labels.csv: every row has label 'cat'", "at least two classes"),
    )


@case
def class_smaller_than_the_fold_count(env: Env) -> Bad:
    csv = make_csv_dataset(env.tmp / "d", per_class=6, groups=False, size=(32, 32))
    rows = csv.read_text().splitlines()
    csv.write_text("\n".join(r for r in rows if not r.startswith(("imgs/b_02", "imgs/b_03", "imgs/b_04"))))
    return Bad(
        env.create("--space", str(env.space), "--data", str(csv), "--folds", "4"),
        ("--data", "labels.csv with 4 folds", "class 'b' has 3 image(s)", "lower cv.folds to 3"),
    )


def _broken_image(env: Env, damage: Callable[[Path], None]) -> Path:
    csv = make_csv_dataset(env.tmp / "d", per_class=6, size=(32, 32))
    env.study(csv)
    damage(csv.parent / "imgs" / "c_04.png")
    return csv


@case
def zero_byte_image(env: Env) -> Bad:
    _broken_image(env, lambda png: png.write_bytes(b""))
    return Bad(
        ["worker", "s", "--storage", env.storage, "--devices", "cpu", "--n-trials", "1"],
        ("imgs/c_04.png: cannot decode image (the file is empty)", "fix or remove the file"),
        keep=(*STUDY_FILES, ".hpo", ".hpo/cache"),  # the cache folder, without a half-built file
        check=no_trials(env),
    )


@case
def corrupt_image(env: Env) -> Bad:
    _broken_image(env, lambda png: png.write_bytes(b"GIF89a" + bytes(range(256))))
    return Bad(
        ["worker", "s", "--storage", env.storage, "--devices", "cpu", "--n-trials", "1"],
        ("imgs/c_04.png: cannot decode image (cannot identify image file)", "fix or remove the file"),
        keep=(*STUDY_FILES, ".hpo", ".hpo/cache"),
        check=no_trials(env),
    )


@case
def truncated_image(env: Env) -> Bad:
    _broken_image(env, lambda png: png.write_bytes(png.read_bytes()[:80]))
    return Bad(
        ["worker", "s", "--storage", env.storage, "--devices", "cpu", "--n-trials", "1"],
        ("imgs/c_04.png: cannot decode image", "truncated", "fix or remove the file"),
        keep=(*STUDY_FILES, ".hpo", ".hpo/cache"),
        check=no_trials(env),
    )


@case
def unknown_labels(env: Env) -> Bad:
    other = make_csv_dataset(env.tmp / "d", classes=("cat", "dog"), per_class=2, size=(32, 32))
    return Bad(
        ["evaluate", "--model", str(env.bundle), "--data", str(other)],
        (f"--data {other}: classes cat, dog", "model's 3 classes (a, b, c)", "retrain on data with these"),
    )


@case
def data_check_with_one_fold(env: Env) -> Bad:
    return Bad(["data", "check", str(env.csv), "--folds", "1"], ("--folds is 1", "at least 2"))


# ------------------------------------------------------------------------------------ search space


def _space_mistake(name: str) -> Callable[[Env], Bad]:
    def run(env: Env) -> Bad:
        text, key, words = SPACE_MISTAKES[name]
        path = env.write(f"{name}.yaml", text)
        return Bad(env.create("--space", str(path), "--data", str(env.csv)), (f"{path}: ", key, *words))

    run.__name__ = f"space_{name}"
    return run


for _name in (
    "malformed_yaml",
    "unknown_param_key",
    "low_above_high",
    "condition_on_later",
    "start_unknown_path",
    "start_sets_a_fixed_key",
    "start_out_of_range",
    "start_not_a_choice",
    "start_condition_does_not_hold",
):
    case(_space_mistake(_name))


# ------------------------------------------------------------------------------------- warm start


def _earlier_study(env: Env, *, complete: bool) -> str:
    """``old.db`` holding study 'old' with one trial: COMPLETE or FAIL."""
    url = f"sqlite:///{env.tmp / 'old.db'}"
    old = optuna.create_study(study_name="old", storage=url, direction="maximize")
    state = optuna.trial.TrialState.COMPLETE if complete else optuna.trial.TrialState.FAIL
    dist = {"optim.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    old.add_trial(
        optuna.trial.create_trial(
            state=state, params={"optim.lr": 1e-3}, distributions=dist, value=0.5 if complete else None
        )
    )
    return url


@case
def warm_start_from_a_missing_study(env: Env) -> Bad:
    url = _earlier_study(env, complete=True)
    return Bad(
        env.create(
            "--space", str(env.space), "--data", str(env.csv), "--warm-start", "olt", "--warm-storage", url
        ),
        ("warm start: study 'olt' not found", "old.db", "studies there: old"),
        keep=("old.db*",),
    )


@case
def warm_start_from_a_missing_storage_file(env: Env) -> Bad:
    return Bad(
        env.create("--space", str(env.space), "--data", str(env.csv), "--warm-start", "old"),
        ("warm start", "study.db does not exist", "holds no study 'old'"),
    )


@case
def warm_start_from_a_bad_storage_url(env: Env) -> Bad:
    return Bad(
        env.create(
            "--space",
            str(env.space),
            "--data",
            str(env.csv),
            "--warm-start",
            "old",
            "--warm-storage",
            "nosuch://x",
        ),
        ("warm start from study 'old'", "nosuch"),
    )


@case
def warm_start_from_a_study_without_complete_trials(env: Env) -> Bad:
    url = _earlier_study(env, complete=False)
    return Bad(
        env.create(
            "--space", str(env.space), "--data", str(env.csv), "--warm-start", "old", "--warm-storage", url
        ),
        ("warm start: study 'old'", "has no COMPLETE trial"),
        keep=("old.db*",),
    )


@case
def unknown_space_name(env: Env) -> Bad:
    return Bad(
        env.create("--space", "quik", "--data", str(env.csv)),
        (
            "search space 'quik' not found",
            "did you mean 'quick'?",
            "competition, competition_cpu, default, efficientnet, mask, quick",
        ),
    )


@case
def unknown_timm_model(env: Env) -> Bad:
    space = env.write("m.yaml", f"fixed: {{model.name: resnet5O}}\nparams:\n{LR}")
    return Bad(
        env.create("--space", str(space), "--data", str(env.csv)),
        (f"--space {space}: model.name: unknown timm model 'resnet5O'", "did you mean", "resnet50"),
    )


@case
def unknown_loss(env: Env) -> Bad:
    space = env.write("l.yaml", f"fixed: {{loss.name: hinge}}\nparams:\n{LR}")
    return Bad(
        env.create("--space", str(space), "--data", str(env.csv)),
        (f"{space}: fixed.loss.name", "'ce', 'focal', 'label_smoothing' or 'soft_f1'", "got 'hinge'"),
    )


@case
def unknown_optimizer(env: Env) -> Bad:
    space = env.write("o.yaml", f"params:\n{LR}  optim.name: {{type: categorical, choices: [sgd, lion]}}\n")
    return Bad(
        env.create("--space", str(space), "--data", str(env.csv)),
        (f"{space}: params.optim.name: choice 'lion'", "'sgd', 'adam' or 'adamw'", "fix or remove it"),
    )


@case
def unknown_scheduler(env: Env) -> Bad:
    space = env.write("s.yaml", f"fixed: {{sched.name: warmup}}\nparams:\n{LR}")
    return Bad(
        env.create("--space", str(space), "--data", str(env.csv)),
        (f"{space}: fixed.sched.name", "'none', 'step', 'cosine', 'plateau' or 'onecycle'", "'warmup'"),
    )


@case
def image_size_too_small_for_the_model(env: Env) -> Bad:
    space = env.write("z.yaml", f"fixed: {{model.name: test_resnet, data.image_size: 16}}\nparams:\n{LR}")
    return Bad(
        env.create("--space", str(space), "--data", str(env.csv)),
        (f"--space {space}: data.image_size: 16 px is too small for test_resnet", "use at least 32"),
    )


@case
def unknown_sampler(env: Env) -> Bad:
    return Bad(
        env.create("--space", str(env.space), "--data", str(env.csv), "--sampler", "bogus"),
        ("--sampler: unknown 'bogus'", "use one of: tpe"),
    )


@case
def unknown_pruner(env: Env) -> Bad:
    return Bad(
        env.create("--space", str(env.space), "--data", str(env.csv), "--pruner", "bogus"),
        ("--pruner: unknown 'bogus'", "use one of: asha"),
    )


@case
def zero_folds(env: Env) -> Bad:
    return Bad(
        env.create("--space", str(env.space), "--data", str(env.csv), "--folds", "0"),
        ("--folds: 0 is too few", "use 2 or more"),
    )


@case
def negative_folds(env: Env) -> Bad:
    return Bad(
        env.create("--space", str(env.space), "--data", str(env.csv), "--folds", "-3"),
        ("--folds: -3 is too few", "use 2 or more"),
    )


# ------------------------------------------------------------------------------------------ storage


@case
def malformed_storage_url(env: Env) -> Bad:
    return Bad(
        ["status", "s", "--storage", "postgresql://bob:hunter2x@db:notaport/hpo"],
        ("malformed storage URL postgresql://bob:***@db:notaport/hpo", "the port must be a number"),
        secrets=("hunter2x",),
    )


@case
def unreachable_storage_with_password(env: Env) -> Bad:
    return Bad(
        ["status", "s", "--storage", "postgresql://ann:s3cr3t@127.0.0.1:1/db"],
        ("cannot reach the database server at postgresql+psycopg://ann:***@127.0.0.1:1/db",
         "check host and port"),
        secrets=("s3cr3t",),
    )  # fmt: skip


@case
def unsupported_storage_url(env: Env) -> Bad:
    return Bad(
        ["status", "s", "--storage", "oracle://u:pw0rd99@h/db"],
        ("unsupported storage URL scheme 'oracle'", "oracle://u:***@h/db", "use one of: study.db"),
        secrets=("pw0rd99",),
    )


@case
def wrong_database_password(env: Env) -> Bad:
    url = env.stack.enter_context(fresh_storage_url("mariadb"))
    database, user, right, wrong = (
        sa.make_url(url).database,
        unique_name("ftu_")[:30],
        "R1ght:p@ss",
        "Wr0ng/p@ss",
    )
    env.stack.enter_context(mariadb_user(user, right, database=database))
    wrong_url = database_url("mariadb", database, username=user, password=wrong)

    def nothing_created() -> None:
        tables = admin_execute(
            "mariadb", "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = :db", db=database
        )
        assert tables[0][0] == 0

    return Bad(
        env.create("--space", str(env.space), "--data", str(env.csv), "--storage", wrong_url),
        (f"wrong user name or password for mysql+pymysql://{user}:***@", "fix the credentials", "%40"),
        secrets=(right, wrong),
        check=nothing_created,
    )


@case
def study_not_found(env: Env) -> Bad:
    return Bad(
        ["status", "nope", "--storage", env.storage],
        ("study 'nope' not found", "study.db does not exist", "hpo study create nope", "--storage"),
    )


@case
def worker_study_not_found(env: Env) -> Bad:
    env.study(env.csv)
    return Bad(
        ["worker", "nope", "--storage", env.storage, "--devices", "cpu"],
        ("study 'nope' not found in", "hpo study create nope"),
        keep=STUDY_FILES,
    )


@case
def conflicting_study_re_create(env: Env) -> Bad:
    env.study(env.csv)
    spec = optuna.load_study(study_name="s", storage=env.storage).user_attrs

    def unchanged() -> None:
        assert optuna.load_study(study_name="s", storage=env.storage).user_attrs == spec

    return Bad(
        env.create("--space", "quick", "--data", str(env.csv), "--folds", "2"),
        ("study 's' already exists with another space (", "more)", "use a new study name"),
        keep=STUDY_FILES,
        check=unchanged,
    )


# ------------------------------------------------------------------------------------------ workers


def _worker(env: Env, words: tuple[str, ...], *args: str) -> Bad:
    env.study(env.csv)
    return Bad(
        ["worker", "s", "--storage", env.storage, *args], words, keep=STUDY_FILES, check=no_trials(env)
    )


@case
def zero_trials(env: Env) -> Bad:
    return _worker(env, ("--n-trials: 0 must be at least 1",), "--devices", "cpu", "--n-trials", "0")


@case
def negative_trials(env: Env) -> Bad:
    return _worker(env, ("--n-trials: -5 must be at least 1",), "--devices", "cpu", "--n-trials", "-5")


@case
def zero_timeout(env: Env) -> Bad:
    return _worker(env, ("--timeout: 0.0 must be a positive number",), "--devices", "cpu", "--timeout", "0")


@case
def gpu_index_that_does_not_exist(env: Env) -> Bad:
    words = ("--devices: GPU 7 does not exist", f"sees {torch.cuda.device_count()} CUDA device(s)", "or cpu")
    return _worker(env, words, "--devices", "7", "--n-trials", "2")


@case
def zero_cpu_processes(env: Env) -> Bad:
    return _worker(env, ("--devices: 'cpu:0'", "positive process count, e.g. cpu:2"), "--devices", "cpu:0")


@case
def predict_on_a_cuda_device_that_does_not_exist(env: Env) -> Bad:
    index = torch.cuda.device_count() + 2
    return Bad(
        env.predict("--out", "p.csv", "--device", f"cuda:{index}"),
        (f"--device: 'cuda:{index}' does not exist", "use auto or cpu"),
    )


# ------------------------------------------------------------------------------------------ MLflow


@case
def unreachable_mlflow_on_study_create(env: Env) -> Bad:
    dead = f"http://127.0.0.1:{free_port()}"
    return Bad(
        env.create("--space", str(env.space), "--data", str(env.csv), "--tracking-uri", dead),
        (f"MLflow tracking server {dead} is unreachable", "start it", "MLFLOW_TRACKING_URI"),
    )  # and no study without its tracking: study.db must not appear


@case
def registered_model_not_found(env: Env) -> Bad:
    return Bad(
        env.predict("--out", "p.csv", "--tracking-uri", env.tracking, model="models:/Nope@champion"),
        ("--model: models:/Nope@champion not found", "Nope", "hpo retrain STUDY --registered-model Nope"),
    )


@case
def alias_not_found(env: Env) -> Bad:
    return Bad(
        env.predict("--out", "p.csv", "--tracking-uri", env.tracking, model="models:/M@nobody"),
        ("--model: models:/M@nobody not found", "alias nobody not found", "--tracking-uri"),
    )


@case
def model_version_not_found(env: Env) -> Bad:
    return Bad(
        env.predict("--out", "p.csv", "--tracking-uri", env.tracking, model="models:/M/3"),
        ("--model: models:/M/3 not found", "version=3", "--registered-model M"),
    )


@case
def malformed_model_uri(env: Env) -> Bad:
    return Bad(
        env.predict("--out", "p.csv", model="models:/nope"),
        ("--model: 'models:/nope' is not models:/NAME@ALIAS", "or give a local model directory"),
    )


@case
def missing_mlflow_store(env: Env) -> Bad:
    store = f"sqlite:///{env.tmp / 'mlflow.db'}"
    return Bad(
        env.predict("--out", "p.csv", "--tracking-uri", store, model="models:/M@champion"),
        (f"MLflow store {store} does not exist", "pass --tracking-uri"),
    )  # and no empty store made just to find nothing in it


@case
def model_directory_missing(env: Env) -> Bad:
    return Bad(
        env.predict("--out", "p.csv", model=str(env.tmp / "nomodel")),
        ("--model:", "nomodel does not exist", "models:/NAME@ALIAS"),
    )


# ------------------------------------------------------------------------------------------ outputs


@case
def unknown_tta(env: Env) -> Bad:
    return Bad(env.predict("--out", "p.csv", "--tta", "spin"), ("--tta: unknown 'spin'", "none, hflip"))


@case
def unknown_vote(env: Env) -> Bad:
    return Bad(env.predict("--out", "p.csv", "--vote", "loud"), ("--vote: unknown 'loud'", "soft, hard"))


@case
def zero_batch_size(env: Env) -> Bad:
    return Bad(env.predict("--out", "p.csv", "--batch-size", "0"), ("--batch-size: 0 must be at least 1",))


@case
def unwritable_predict_output(env: Env) -> Bad:
    env.write("a_file", "x")
    return Bad(
        env.predict("--out", str(env.tmp / "a_file" / "sub.csv")),
        (
            f"--out: cannot write to {env.tmp / 'a_file'} (a file, not a folder)",
            "choose a writable directory",
        ),
    )


@case
def unwritable_report_output(env: Env) -> Bad:
    env.write("a_file", "x")
    return Bad(
        ["data", "report", str(env.csv), "--out", str(env.tmp / "a_file" / "report")],
        (f"--out: cannot create {env.tmp / 'a_file' / 'report'}", "choose a writable folder"),
    )


def _full_disk(env: Env, free: int) -> Path:
    """A 64 KiB tmpfs in the case folder with ``free`` bytes left (skips where mounting is refused)."""
    disk = env.tmp / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill up ({mounted.stderr.strip()}); needs root")
    env.stack.callback(subprocess.run, ["umount", str(disk)], check=True)
    with (disk / "filler").open("wb", buffering=0) as f, contextlib.suppress(OSError):
        f.write(b"x" * (os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize - free))
    return disk


@case
def predict_onto_a_full_disk(env: Env) -> Bad:
    disk = _full_disk(env, free=0)
    return Bad(
        env.predict("--out", str(disk / "sub.csv"), "--probs"),
        (f"--out: cannot write {disk / 'sub.csv'}", "No space left on device", "free some space"),
        keep=(".hpo", ".hpo/cache", ".hpo/cache/*.npy"),  # the decoded images, reused next time
    )


@case
def report_onto_a_full_disk(env: Env) -> Bad:
    disk = _full_disk(env, free=4096)  # the folders fit, the charts do not
    return Bad(
        ["data", "report", str(env.csv), "--out", str(disk / "report")],
        (f"--out: cannot write the report into {disk / 'report'}", "No space left", "free some space"),
    )


# ------------------------------------------------------------------------------------------ cost limits


@case
def limit_on_an_unknown_metric(env: Env) -> Bad:
    return Bad(
        env.create("--space", str(env.space), "--data", str(env.csv), "--limit", "accuracy=3"),
        ("--limit 'accuracy=3'", "unknown metric 'accuracy'", "params_m, gflops, latency_ms"),
    )


@case
def limit_that_is_not_a_number(env: Env) -> Bad:
    return Bad(
        env.create("--space", str(env.space), "--data", str(env.csv), "--limit", "params_m=big"),
        ("--limit 'params_m=big'", "'big' is not a positive number", "value > 0"),
    )


@case
def limit_that_is_not_positive(env: Env) -> Bad:
    return Bad(
        env.create("--space", str(env.space), "--data", str(env.csv), "--limit", "latency_ms=-2"),
        ("--limit 'latency_ms=-2'", "'-2' is not a positive number", "value > 0"),
    )


@case
def limit_without_a_value(env: Env) -> Bad:
    return Bad(
        env.create("--space", str(env.space), "--data", str(env.csv), "--limit", "gflops"),
        ("--limit 'gflops'", "write METRIC=VALUE", "--limit params_m=25"),
    )


@case
def limit_that_no_model_of_the_space_meets(env: Env) -> Bad:
    args = ("--limit", "params_m=0.05", "--limit", "latency_ms=3")
    return Bad(
        env.create("--space", str(env.space), "--data", str(env.csv), *args),
        ("--limit params_m=0.05", "no model of --space", "test_resnet: params_m 0.37", "at 32 px"),
    )


# ------------------------------------------------------------------------------------------ running


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("shared")
    csv = make_csv_dataset(root / "data", classes=CLASSES, per_class=8, size=(32, 32))
    space = root / "space.yaml"
    space.write_text(SPACE)
    config = RunConfig.from_dict({"model": {"name": "test_resnet"}, "data": {"image_size": 32}})
    model = build_model(config.model, len(CLASSES))
    mean, std = normalization(model)
    member = Member(config=config, state=model.state_dict(), mean=mean, std=std)
    bundle = save_bundle(Bundle(classes=CLASSES, members=[member]), root / "model")
    from mlflow import MlflowClient

    tracking = f"sqlite:///{root / 'mlflow.db'}"
    MlflowClient(tracking_uri=tracking, registry_uri=tracking).create_registered_model("M")
    return {"csv": csv, "space": space, "bundle": bundle, "tracking": tracking}


@contextlib.contextmanager
def case_env(shared: dict, tmp: Path) -> Iterator[Env]:
    with contextlib.ExitStack() as stack:
        yield Env(tmp, shared["csv"], shared["space"], shared["bundle"], shared["tracking"], stack)


@pytest.fixture
def quiet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HPO_STORAGE", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(var, raising=False)


def snapshot(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def assert_bad_input(bad: Bad, env: Env, before: set[str], code: int, stdout: str, stderr: str) -> str:
    """The whole contract of a bad input; returns the error line."""
    assert code == 2, (code, stdout, stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hpo: error: "), stderr
    line = lines[0]
    for word in bad.words:
        assert word in line, (word, line)
    assert "Traceback" not in stdout + stderr
    assert stdout == "", stdout  # nothing that reads like a result
    for secret in bad.secrets:
        for form in {secret, quote(secret, safe=""), quote(secret)}:
            assert form not in stdout + stderr, f"{form!r} leaked: {line}"
    left = {p for p in snapshot(env.tmp) - before if not any(fnmatch.fnmatch(p, k) for k in bad.keep)}
    assert not left, f"left behind: {sorted(left)}"
    if bad.check is not None:
        bad.check()
    return line


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(
    name: str, shared: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quiet_env: None, record_property
) -> None:
    monkeypatch.chdir(tmp_path)
    with case_env(shared, tmp_path) as env:
        bad = CASES[name](env)
        before = snapshot(tmp_path)
        result = runner.invoke(app, bad.args)
        line = assert_bad_input(bad, env, before, result.exit_code, result.stdout, result.stderr)
    record_property("message", line)  # the messages: pytest -o junit_family=xunit1 --junitxml=F


# A real process each: no traceback at process level either (worker spawning, logging set-up, exit).
IN_A_PROCESS = ("unreachable_storage_with_password", "corrupt_image", "space_malformed_yaml")


@pytest.fixture(scope="module")
def process_runs(shared: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Every IN_A_PROCESS case as its own `hpo` process, all at once (each pays the imports)."""
    env_vars = {k: v for k, v in os.environ.items() if k not in ("HPO_STORAGE", "MLFLOW_TRACKING_URI")}
    with contextlib.ExitStack() as outer:
        started = {}
        for name in IN_A_PROCESS:
            tmp = tmp_path_factory.mktemp(name)
            env = outer.enter_context(case_env(shared, tmp))
            bad = CASES[name](env)
            before = snapshot(tmp)
            proc = subprocess.Popen(
                [HPO, *bad.args],
                cwd=tmp,
                env=env_vars,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            started[name] = (env, bad, before, proc)
        runs = {}
        for name, (env, bad, before, proc) in started.items():
            stdout, stderr = proc.communicate(timeout=300)
            runs[name] = (bad, env, before, proc.returncode, stdout, stderr)
        yield runs


@pytest.mark.slow  # three `hpo` processes at once: their imports take seconds of CPU each
@pytest.mark.parametrize("name", IN_A_PROCESS)
def test_bad_input_in_a_real_process(name: str, process_runs: dict) -> None:
    assert_bad_input(*process_runs[name])
