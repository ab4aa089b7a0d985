"""--pruner asha: pause at a rung, promote later, continue from the last epoch; budget, disk, races.

Peers are real trials written to a real storage with the values a test needs at each rung (so who is
paused does not hang on the F1 of a few tiny epochs); the trials under test train test_resnet for real.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from hpo.records import study_record
from hpo.study import KEEP_PAUSED, budget_lock, create_study, open_study, rung_steps, study_status
from hpo.workers import BudgetedStudy, BudgetReached, Objective
from hpo.workers._promotion import Promotion
from tests.databases import fresh_storage_url
from tests.helpers import SPACE, hpo, invoke, run_hpo, trials_of, write_space
from tests.racing import race

GOOD = {"optim.name": "adamw", "optim.lr": 3e-3}
_DISTRIBUTIONS = {
    "optim.name": CategoricalDistribution(["sgd", "adamw"]),
    "optim.lr": FloatDistribution(1e-5, 1e-1, log=True),
}


def _peer(study: optuna.Study, values: dict[int, float], *, state=TrialState.COMPLETE, **attrs) -> int:
    """A finished trial with ``values`` at those steps; its number."""
    study.add_trial(
        optuna.trial.create_trial(
            state=state,
            value=max(values.values()) if state == TrialState.COMPLETE else None,
            params={"optim.name": "adamw", "optim.lr": 1e-3},
            distributions=_DISTRIBUTIONS,
            intermediate_values=values,
            user_attrs=attrs,
        )
    )
    return study.trials[-1].number


def _paused(study: optuna.Study, values: dict[int, float], *, rung: int, step: int) -> int:
    return _peer(study, values, state=TrialState.PRUNED, paused={"rung": rung, "step": step})


def _create(workdir: Path, csv: Path, url: str, name: str = "asha", *, pruner="asha", space=None, seed=0):
    create_study(
        name,
        space=space or write_space(workdir, epochs=3),
        data=str(csv),
        storage=url,
        folds=2,
        pruner=pruner,
        seed=seed,
    )
    return open_study(name, url)


def _worker(url: str, name: str, spec, ckpt: Path, *, n_trials: int | None = None, keep: int = KEEP_PAUSED):
    promotion = Promotion(url, checkpoint_root=ckpt, keep=keep)
    study = BudgetedStudy(name, url, spec, n_trials=n_trials, deadline=None, seed=0, promotion=promotion)
    return study, Objective(spec, device="cpu", checkpoint_root=ckpt, promotion=promotion)


def test_the_rungs_of_the_quick_space() -> None:
    # quick: 3 folds x 6 epochs: epochs 1 and 3 of fold 1, then the ends of folds 1 and 2
    assert rung_steps(folds=3, max_epochs=6) == [1, 3, 6, 12]


@pytest.mark.parametrize("deleted", [False, True], ids=["resumed", "checkpoints-deleted"])
def test_a_paused_trial_is_promoted_and_continues_where_it_stopped(
    deleted: bool, workdir: Path, small_csv: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{workdir / 'asha.db'}"
    study, spec = _create(workdir, small_csv, url)
    ckpt = workdir / "ckpt"
    _peer(study, {1: 0.99, 3: 0.99})  # far ahead at both rungs (steps 1 and 3)
    study.enqueue_trial(GOOD)
    budgeted, objective = _worker(url, "asha", spec, ckpt)
    budgeted.optimize(objective, n_trials=1)

    paused = budgeted.trials[1]
    assert paused.state == TrialState.PRUNED
    assert paused.user_attrs["paused"] == {"rung": 1, "step": 1}
    assert paused.user_attrs["prune_reason"].startswith("paused at rung 1 (step 1, fold 1 epoch 1)")
    folder = ckpt / "asha" / "trial-1"
    assert (folder / "fold-1" / "last.pt").exists()  # kept for a promotion
    with budget_lock(url, "asha"):
        assert objective.promotion.promote(budgeted) is None  # 2nd of 2 at its rung: not yet

    for _ in range(4):  # four trials worse at both rungs: the paused trial is now 2nd of 6, top third
        _peer(study, {1: 0.0, 3: 0.0})
    if deleted:
        shutil.rmtree(folder)
    with caplog.at_level(logging.WARNING, logger="hpo"):
        budgeted.optimize(objective, n_trials=1)

    continued = budgeted.trials[-1]
    assert continued.user_attrs["continues"] == paused.number
    assert continued.params == paused.params
    assert continued.state == TrialState.COMPLETE, continued.user_attrs.get("fail_reason")
    assert study_record(budgeted)["promoted"] == [paused.number]
    # No step reported twice: the continuation starts after the paused trial's last step.
    assert min(continued.intermediate_values) == max(paused.intermediate_values) + 1
    assert sorted(continued.intermediate_values) == list(range(2, 7))
    assert not folder.exists()  # it completed: the checkpoints go
    gone = [r for r in caplog.records if "are gone; training from epoch 0" in r.getMessage()]
    if deleted:
        assert len(gone) == 1 and continued.user_attrs["resumed_epochs"] == [0, 0]
        return
    assert not gone
    assert continued.user_attrs["resumed_epochs"] == [1, 0]  # fold 1's epoch 1 came from the checkpoint

    # The same params unpaused, in a study without pruning: the same curve and value (no epoch lost,
    # none repeated).
    ref, ref_spec = _create(workdir, small_csv, url, "ref", pruner="none")
    ref.enqueue_trial(GOOD)
    ref.optimize(Objective(ref_spec, device="cpu", checkpoint_root=ckpt), n_trials=1)
    whole = ref.trials[0]
    assert continued.value == pytest.approx(whole.value, abs=1e-9)
    for step, value in continued.intermediate_values.items():
        assert value == pytest.approx(whole.intermediate_values[step], abs=1e-9), step
    assert paused.intermediate_values[1] == pytest.approx(whole.intermediate_values[1], abs=1e-9)


def _ask(url: str, name: str, ckpt: Path) -> int | None:
    _, spec = open_study(name, url)
    budgeted, _ = _worker(url, name, spec, ckpt, n_trials=20)
    return budgeted.ask().user_attrs.get("continues")


@pytest.mark.parametrize("mode", ["sqlite", "postgresql"])
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_two_workers_racing_for_one_promotion_promote_it_once(
    mode: str, workdir: Path, small_csv: Path
) -> None:
    with fresh_storage_url(mode, workdir) as url:
        study, _ = _create(workdir, small_csv, url)
        _peer(study, {1: 0.9})
        number = _paused(study, {1: 0.5}, rung=1, step=1)
        for _ in range(4):
            _peer(study, {1: 0.1})
        got = race(_ask, url, "asha", workdir / "ckpt")
        assert sorted(got, key=str) == [number, None]  # one continues the paused trial, one is new
        trials = trials_of(url, "asha")
        assert [t.user_attrs.get("continues") for t in trials].count(number) == 1
        continued = next(t for t in trials if t.user_attrs.get("continues") == number)
        assert continued.system_attrs["continues"] == {"trial": number, "after_step": 1, "root": number}
        assert study_record(study)["promoted"] == [number]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_the_budget_counts_a_paused_trial_and_its_continuation_once_then_frees_the_disk(
    workdir: Path, small_csv: Path
) -> None:
    url = f"sqlite:///{workdir / 'budget.db'}"
    study, spec = _create(workdir, small_csv, url)
    ckpt = workdir / "ckpt"
    _peer(study, {1: 0.9})
    promoted = _paused(study, {1: 0.5}, rung=1, step=1)
    for _ in range(4):
        _peer(study, {1: 0.1})
    left = _paused(study, {1: 0.0}, rung=1, step=1)  # 7th of 7: stays paused
    for number in (promoted, left):
        (ckpt / "asha" / f"trial-{number}" / "fold-1").mkdir(parents=True)
        (ckpt / "asha" / f"trial-{number}" / "fold-1" / "last.pt").write_bytes(b"weights")
    budgeted, _ = _worker(url, "asha", spec, ckpt, n_trials=8)  # 7 finished: room for one more

    continuation = budgeted.ask()
    assert continuation.user_attrs["continues"] == promoted
    budgeted.tell(continuation, 0.6)
    status = study_status(budgeted, target=8)
    # 8 complete or pruned trials, of which a paused one and its continuation are one: 7 toward 8.
    assert status.finished == 7
    assert status.pauses == {"paused": 2, "promoted": 1, "continued": 1}
    assert "2 paused, 1 promoted, 1 continuing" in invoke("status", "asha", "--storage", url).stdout
    rows = json.loads(invoke("study", "trials", "asha", "--storage", url, "--json").stdout)
    assert [r["continues"] for r in rows if r["continues"] is not None] == [promoted]

    new = budgeted.ask()  # the left one ranks 7th: a new trial, not a promotion
    assert "continues" not in new.user_attrs
    assert (ckpt / "asha" / f"trial-{left}").exists()
    budgeted.tell(new, 0.2)
    with pytest.raises(BudgetReached, match="8 trials finished"):
        budgeted.ask()
    assert not (ckpt / "asha" / f"trial-{left}").exists()  # the budget is met: no promotion will come
    assert study_record(budgeted)["released"] == [left]


def test_beyond_keep_paused_the_worst_ranked_paused_trials_lose_their_checkpoints(
    workdir: Path, small_csv: Path
) -> None:
    url = f"sqlite:///{workdir / 'keep.db'}"
    study, _ = _create(workdir, small_csv, url)
    ckpt = workdir / "ckpt"
    _peer(study, {1: 0.99, 3: 0.99})
    second = _paused(study, {1: 0.5}, rung=1, step=1)  # 3rd of 4 at rung 1
    last = _paused(study, {1: 0.3}, rung=1, step=1)  # 4th of 4 at rung 1
    later = _paused(study, {1: 0.9, 3: 0.2}, rung=2, step=3)  # 2nd of 2 at rung 2: as far behind, later
    for number in (second, last, later):
        (ckpt / "asha" / f"trial-{number}").mkdir(parents=True)
    Promotion(url, checkpoint_root=ckpt, keep=1).keep_bound(study, later)
    assert sorted(p.name for p in (ckpt / "asha").iterdir()) == [f"trial-{later}"]
    assert sorted(study_record(study)["released"]) == [second, last]
    for _ in range(9):  # now `second` ranks 3rd of 13 at rung 1, in the top third: but it has no checkpoints
        _peer(study, {1: 0.0})
    with budget_lock(url, "asha"):
        assert Promotion(url, checkpoint_root=ckpt, keep=1).promote(study) is None


def test_a_fold_that_early_stopping_ends_is_still_judged_at_its_rungs(workdir: Path, small_csv: Path) -> None:
    space = workdir / "patience.yaml"
    space.write_text(SPACE.format(epochs=9).replace("budget.patience: null", "budget.patience: 1"))
    url = f"sqlite:///{workdir / 'stop.db'}"
    study, spec = _create(workdir, small_csv, url, space=space)  # rungs: steps 1, 3 and 9 (fold 1's end)
    study.enqueue_trial(GOOD)
    budgeted, objective = _worker(url, "asha", spec, workdir / "ckpt")
    budgeted.optimize(objective, n_trials=1)

    trial = budgeted.trials[0]
    assert trial.state == TrialState.COMPLETE
    stopped = trial.user_attrs["epochs"][0]
    assert stopped < 9  # early stopping ended fold 1
    fold1 = {step for step in trial.intermediate_values if step <= 9}
    assert fold1 == set(range(1, stopped + 1)) | {s for s in (3, 9) if s > stopped}
    assert trial.intermediate_values[9] == pytest.approx(trial.user_attrs["fold_f1"][0] / 2)


@pytest.mark.parametrize("pruner", ["median", "asha"])
def test_a_warming_up_trial_is_not_judged_before_its_peak_learning_rate(
    pruner: str, workdir: Path, small_csv: Path
) -> None:
    space = workdir / "warmup.yaml"
    warmup = "fixed:\n  sched.name: cosine\n  sched.warmup_epochs: 2\n"
    space.write_text(SPACE.format(epochs=3).replace("fixed:\n", warmup))
    url = f"sqlite:///{workdir / 'warm.db'}"
    study, spec = _create(workdir, small_csv, url, pruner=pruner, space=space)
    for _ in range(2):  # the median pruner judges after 2 complete trials
        _peer(study, dict.fromkeys(range(1, 7), 0.99))
    study.enqueue_trial(GOOD)
    budgeted, objective = _worker(url, "asha", spec, workdir / "ckpt")
    budgeted.optimize(objective, n_trials=1)

    trial = budgeted.trials[-1]
    assert trial.state == TrialState.PRUNED
    # Epochs 1 and 2 warm up (peak rate from epoch 3): reported, but first judged at epoch 3.
    assert sorted(trial.intermediate_values) == [1, 2, 3]
    reason = trial.user_attrs["prune_reason"]
    assert reason.startswith("paused at rung 2 (step 3, " if pruner == "asha" else "pruned in fold 1 epoch 3")


def test_study_create_takes_keep_paused_and_refuses_a_negative_one(workdir: Path, small_csv: Path) -> None:
    assert f"Default: {KEEP_PAUSED}" in " ".join(invoke("study", "create", "--help").stdout.split())
    url = f"sqlite:///{workdir / 'opt.db'}"
    args = ["study", "create", "k", "--space", str(write_space(workdir, epochs=1)), "--data", str(small_csv)]
    bad = invoke(*args, "--storage", url, "--pruner", "asha", "--keep-paused", "-1")
    assert bad.exit_code == 2 and "--keep-paused: -1 must be 0" in bad.stderr
    assert invoke(*args, "--storage", url, "--pruner", "asha", "--keep-paused", "3").exit_code == 0
    assert open_study("k", url)[1].keep_paused == 3


@pytest.mark.slow
def test_two_workers_run_an_asha_study_in_which_a_paused_trial_is_promoted(
    workdir: Path, small_csv: Path
) -> None:
    """The acceptance run: `hpo study create --pruner asha` and two `hpo worker` processes."""
    space = write_space(workdir, epochs=3)
    url = f"sqlite:///{workdir / 'e2e.db'}"
    create = ["study", "create", "e2e", "--space", str(space), "--data", str(small_csv), "--storage", url]
    run_hpo(*create, "--folds", "2", "--pruner", "asha", "--sampler", "random", "--seed", "3", cwd=workdir)
    pools = [hpo("worker", "e2e", "--storage", url, "--devices", "cpu", "--n-trials", "12", cwd=workdir)]
    pools.append(hpo("worker", "e2e", "--storage", url, "--devices", "cpu", "--n-trials", "12", cwd=workdir))
    outs = [p.communicate(timeout=900) for p in pools]
    assert [p.returncode for p in pools] == [0, 0], outs

    trials = {t.number: t for t in trials_of(url, "e2e")}
    continued = [t for t in trials.values() if "continues" in t.user_attrs and t.state == TrialState.COMPLETE]
    assert continued, [(t.number, t.state.name, t.user_attrs.get("prune_reason")) for t in trials.values()]
    finished = [t for t in trials.values() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) - len(study_record(open_study("e2e", url)[0])["promoted"]) == 12
    assert not list((workdir / ".hpo" / "checkpoints" / "e2e").glob("trial-*"))  # budget met: disk freed

    ref, ref_spec = _create(workdir, small_csv, url, "ref", pruner="none", space=space, seed=3)
    for trial in continued:
        paused = trials[trial.user_attrs["continues"]]
        assert min(trial.intermediate_values) == max(paused.intermediate_values) + 1
        ref.enqueue_trial(paused.params)
        ref.optimize(Objective(ref_spec, device="cpu", checkpoint_root=workdir / "ref-ckpt"), n_trials=1)
        assert trial.value == pytest.approx(ref.trials[-1].value, abs=1e-9)  # no epoch lost or repeated


def test_the_cli_defaults_to_the_measured_pruner() -> None:
    """`hpo study create` and `hpo run` state their default without importing the library (a fast
    --help); it must be the library's."""
    import typer.main

    from hpo.cli import app
    from hpo.study import DEFAULT_PRUNER

    command = typer.main.get_command(app)
    for path in (("study", "create"), ("run",)):
        node = command
        for name in path:
            node = node.commands[name]
        (pruner,) = [p for p in node.params if p.name == "pruner"]
        assert pruner.default == DEFAULT_PRUNER, path
