"""Where a study starts: the space's starts, the starts a shipped space lends, warm starts from earlier
studies, same-data trials copied outside the budget, and each trial's ``origin``."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from hpo.cli import app
from hpo.space import SearchSpace, load_space, shipped_spaces
from hpo.study import create_study, open_study, study_status
from hpo.workers import run_workers
from hpo.workers._budget import BudgetedStudy, BudgetReached
from storage import open_storage
from tests.databases import fresh_storage_url
from tests.datasets import make_csv_dataset
from tests.racing import race
from training.config import RunConfig

FIXED = "fixed: {model.name: test_resnet, data.image_size: 32, budget.max_epochs: 1, augment.preset: none}\n"
OLD_SPACE = (
    FIXED
    + """params:
  optim.name: {type: categorical, choices: [sgd, adamw]}
  optim.lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
  optim.momentum: {type: float, low: 0.8, high: 0.99, when: {optim.name: sgd}}
  loss.name: {type: categorical, choices: [ce, focal]}
"""
)
# The new space: loss.name gone, optim.lr narrower, optim.momentum now only under... the same condition.
NEW_SPACE = (
    FIXED
    + """params:
  optim.name: {type: categorical, choices: [sgd, adamw]}
  optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  optim.momentum: {type: float, low: 0.8, high: 0.99, when: {optim.name: sgd}}
starts:
  - {optim.name: adamw, optim.lr: 3.0e-3}
  - {optim.name: sgd, optim.momentum: 0.9}
"""
)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _add(
    study: optuna.Study, space: SearchSpace, params: dict, value: float | None, state=TrialState.COMPLETE
):
    dists = {path: space.params[path].distribution() for path in params}
    study.add_trial(
        optuna.trial.create_trial(
            state=state,
            params=params,
            distributions=dists,
            value=value,
            intermediate_values={1: value or 0.1},
        )
    )


def _waiting(url: str, name: str) -> list[tuple[dict, str]]:
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    return [
        (t.system_attrs.get("fixed_params", t.params), t.user_attrs["origin"])
        for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    ]


# --------------------------------------------------------------------------------- shipped spaces


@pytest.mark.parametrize("name", shipped_spaces())
def test_every_shipped_space_has_1_to_4_starts_that_load(name: str) -> None:
    space = load_space(name)
    assert 1 <= len(space.starts) <= 4
    for start in space.starts:
        config = space.resolve(
            RunConfig(), start
        )  # RunConfig accepts each start with the space's fixed values
        assert all(config.to_dict()[p.split(".")[0]][p.split(".", 1)[1]] == v for p, v in start.items())
    again = SearchSpace.from_dict(json.loads(json.dumps(space.to_dict())), where="stored")
    assert again.starts == space.starts  # stored with the study, read back alike by workers


def test_start_values_take_the_params_type_and_omitted_keys_stay_sampled(tmp_path: Path) -> None:
    space = load_space(
        _write(
            tmp_path / "s.yaml",
            FIXED + "params:\n  optim.lr: {type: float, low: 1, high: 3}\n"
            "  budget.batch_size: {type: int, low: 16, high: 64}\nstarts:\n  - {optim.lr: 2}\n",
        )
    )
    assert space.starts == [{"optim.lr": 2.0}] and isinstance(space.starts[0]["optim.lr"], float)


# --------------------------------------------------------------------------------- enqueue


def test_create_enqueues_the_starts_once_before_any_sampled_trial(workdir: Path, small_csv: Path) -> None:
    space = _write(workdir / "new.yaml", NEW_SPACE)
    url = f"sqlite:///{workdir / 's.db'}"
    create_study("s", space=space, data=str(small_csv), storage=url)
    create_study("s", space=space, data=str(small_csv), storage=url)  # again: nothing enqueued twice
    assert _waiting(url, "s") == [
        ({"optim.name": "adamw", "optim.lr": 3e-3}, "start:0"),
        ({"optim.name": "sgd", "optim.momentum": 0.9}, "start:1"),
    ]
    study, spec = open_study("s", url)
    firsts = [spec.space.sample(study.ask()) for _ in range(3)]
    assert firsts[0] == {"optim.name": "adamw", "optim.lr": 3e-3}
    assert firsts[1]["optim.name"] == "sgd" and firsts[1]["optim.momentum"] == 0.9  # lr left to the sampler
    assert 1e-4 <= firsts[1]["optim.lr"] <= 1e-2

    create_study("off", space=space, data=str(small_csv), storage=url, starts=False)
    assert _waiting(url, "off") == []


def test_a_space_without_starts_borrows_those_of_the_closest_shipped_space(
    workdir: Path, small_csv: Path
) -> None:
    quick = load_space("quick").to_dict()
    quick.pop("starts")
    quick["params"].pop("loss.name")  # its conditional params go with it
    quick["params"].pop("loss.gamma")
    quick["params"].pop("loss.smoothing")
    quick["fixed"]["budget.max_epochs"] = 1
    space = _write(workdir / "mine.yaml", json.dumps(quick))  # JSON is YAML
    url = f"sqlite:///{workdir / 's.db'}"
    notes: list[str] = []
    create_study("b", space=space, data=str(small_csv), storage=url, on_note=notes.append)
    lent = len(load_space("quick").starts)
    assert notes == [f"the space has no starts: {lent} lent by the shipped space 'quick'"]
    lent = [
        {k: v for k, v in start.items() if not k.startswith("loss.")} for start in load_space("quick").starts
    ]
    assert _waiting(url, "b") == [(start, f"start:{i}") for i, start in enumerate(lent)]

    none = load_space("quick").to_dict() | {"starts": []}  # asks for none: nothing borrowed either
    create_study("z", space=_write(workdir / "none.yaml", json.dumps(none)), data=str(small_csv), storage=url)
    assert _waiting(url, "z") == []

    nothing_shared = _write(
        workdir / "odd.yaml", FIXED + "params:\n  budget.patience: {type: int, low: 1, high: 3}\n"
    )
    notes.clear()
    create_study("n", space=nothing_shared, data=str(small_csv), storage=url, on_note=notes.append)
    assert notes == [] and _waiting(url, "n") == []


@pytest.mark.parametrize("mode", ["postgresql"])
def test_racing_creates_enqueue_the_starts_once(mode: str, workdir: Path, small_csv: Path) -> None:
    space = _write(workdir / "new.yaml", NEW_SPACE)
    with fresh_storage_url(mode, workdir) as url:
        created = race(lambda: create_study("r", space=space, data=str(small_csv), storage=url)[1])
        assert sorted(created) == [False, True]
        assert [origin for _, origin in _waiting(url, "r")] == ["start:0", "start:1"]


# --------------------------------------------------------------------------------- warm start


def _old_study(workdir: Path, data: Path, url: str) -> None:
    """Study 'old' on OLD_SPACE with 6 COMPLETE trials (two the same) and a PRUNED one."""
    space_path = _write(workdir / "old.yaml", OLD_SPACE)
    old, _ = create_study("old", space=space_path, data=str(data), storage=url, starts=False)
    space = load_space(space_path)
    _add(
        old, space, {"optim.name": "adamw", "optim.lr": 0.05, "loss.name": "ce"}, 0.9
    )  # lr out of the new range
    _add(old, space, {"optim.name": "sgd", "optim.lr": 1e-3, "optim.momentum": 0.95, "loss.name": "ce"}, 0.8)
    _add(
        old, space, {"optim.name": "sgd", "optim.lr": 1e-3, "optim.momentum": 0.95, "loss.name": "focal"}, 0.7
    )
    _add(old, space, {"optim.name": "adamw", "optim.lr": 2e-3, "loss.name": "ce"}, 0.6)
    _add(old, space, {"optim.name": "adamw", "optim.lr": 1e-4, "loss.name": "ce"}, 0.5)
    _add(old, space, {"optim.name": "adamw", "optim.lr": 5e-4, "loss.name": "ce"}, 0.1)
    _add(old, space, {"optim.name": "adamw", "optim.lr": 5e-3, "loss.name": "ce"}, None, TrialState.PRUNED)


def test_warm_start_maps_the_best_configs_before_the_starts(workdir: Path, small_csv: Path) -> None:
    url = f"sqlite:///{workdir / 's.db'}"
    _old_study(workdir, small_csv, url)
    other = make_csv_dataset(workdir / "other", classes=("a", "b", "c", "d"), per_class=13, size=(32, 32))
    # The new space conditions momentum on a choice the old trials made otherwise: drop what is inactive.
    new = NEW_SPACE.replace("when: {optim.name: sgd}", "when: {optim.name: adamw}").replace(
        "optim.name: sgd, optim.momentum: 0.9", "optim.name: adamw, optim.momentum: 0.9"
    )
    notes: list[str] = []
    create_study(
        "new",
        space=_write(workdir / "new.yaml", new),
        data=str(other),
        storage=url,
        warm_start=["old"],
        on_note=notes.append,
    )
    assert _waiting(url, "new") == [
        # trial 0 (best) keeps optim.name only: lr is out of range (a note), loss.name is not searched
        ({"optim.name": "adamw"}, "warm:old#0"),
        # trials 1 and 2 differ only in loss.name: one config; momentum is inactive under sgd now
        ({"optim.name": "sgd", "optim.lr": 1e-3}, "warm:old#1"),
        ({"optim.name": "adamw", "optim.lr": 2e-3}, "warm:old#3"),
        ({"optim.name": "adamw", "optim.lr": 1e-4}, "warm:old#4"),
        ({"optim.name": "adamw", "optim.lr": 3e-3}, "start:0"),
        ({"optim.name": "adamw", "optim.momentum": 0.9}, "start:1"),
    ]
    assert notes == ["warm start old#0: optim.lr: 0.05 is outside float 0.0001 .. 0.01 log; dropped"]
    study, _ = open_study("new", url)
    assert len(study.trials) == 6  # other data: nothing copied


def test_same_data_warm_start_copies_finished_trials_outside_the_budget(
    workdir: Path, small_csv: Path
) -> None:
    url = f"sqlite:///{workdir / 's.db'}"
    _old_study(workdir, small_csv, url)
    create_study(
        "new",
        space=_write(workdir / "new.yaml", NEW_SPACE),
        data=str(small_csv),
        storage=url,
        warm_start=["old"],
    )
    study, spec = open_study("new", url)
    copied = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert [t.user_attrs["origin"] for t in copied] == [f"copied:old#{n}" for n in range(7)]
    assert [t.value for t in copied[:6]] == [0.9, 0.8, 0.7, 0.6, 0.5, 0.1]
    assert copied[0].params == {"optim.name": "adamw"}  # mapped as warm starts are
    assert copied[1].params == {"optim.name": "sgd", "optim.lr": 1e-3, "optim.momentum": 0.95}
    assert copied[0].intermediate_values == {1: 0.9}  # the same folds and epochs: the curve means the same

    longer = _write(
        workdir / "longer.yaml", NEW_SPACE.replace("budget.max_epochs: 1", "budget.max_epochs: 2")
    )
    create_study("longer", space=longer, data=str(small_csv), storage=url, warm_start=["old"])
    assert all(
        not t.intermediate_values
        for t in open_study("longer", url)[0].get_trials(states=(TrialState.COMPLETE,))
    )

    status = study_status(study, target=1)
    assert status.copied == 7 and status.finished == 0
    assert status.origins == {"warm": 4, "start": 2, "copied": 7}
    # The budget counts none of them: a budget of 1 still hands out a trial.
    budgeted = BudgetedStudy("new", url, spec, n_trials=1, deadline=None, seed=0)
    trial = budgeted.ask()
    assert trial.number == 7
    budgeted.tell(trial, 0.5)
    with pytest.raises(BudgetReached):
        budgeted.ask()


# --------------------------------------------------------------------------------- origin, end to end


@pytest.mark.slow
def test_origin_of_every_trial_end_to_end(workdir: Path, small_csv: Path) -> None:
    url = f"sqlite:///{workdir / 's.db'}"
    old_space = _write(workdir / "old.yaml", OLD_SPACE)
    old, _ = create_study("old", space=old_space, data=str(small_csv), storage=url, starts=False)
    _add(old, load_space(old_space), {"optim.name": "adamw", "optim.lr": 2e-3, "loss.name": "ce"}, 0.5)
    other = make_csv_dataset(workdir / "other", classes=("a", "b", "c", "d"), per_class=13, size=(32, 32))
    one_start = NEW_SPACE.replace("  - {optim.name: sgd, optim.momentum: 0.9}\n", "")
    runner = CliRunner()
    args = [
        "study",
        "create",
        "e",
        "--space",
        str(_write(workdir / "new.yaml", one_start)),
        "--data",
        str(other),
    ]
    result = runner.invoke(app, [*args, "--storage", url, "--folds", "2", "--warm-start", "old"])
    assert result.exit_code == 0, result.output
    assert run_workers("e", storage=url, devices="cpu", n_trials=3).exit_codes == [0]

    result = runner.invoke(app, ["study", "trials", "e", "--storage", url, "--json"])
    origins = [row["origin"] for row in json.loads(result.stdout)]
    assert origins == ["warm:old#0", "start:0", "sampled"]
    result = runner.invoke(app, ["status", "e", "--storage", url, "--json"])
    assert json.loads(result.stdout)["origins"] == {"warm": 1, "start": 1, "sampled": 1}
