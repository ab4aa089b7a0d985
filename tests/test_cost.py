"""What a model costs to serve: the figures, every trial's record of them, and limits on a study."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.errors import UserError
from hpo.study import build_sampler, create_study, open_study, study_status, trial_rows
from hpo.workers import Objective
from hpo.workers._pool import _TrialLine
from tests.helpers import invoke
from training.config import ModelConfig, RunConfig
from training.cost import measure_cost, static_cost

SMALL, BIG = "test_efficientnet", "test_resnet"  # 0.10 M and 0.37 M parameters at 10 classes

SPACE = f"""
fixed: {{data.image_size: 32, budget.max_epochs: 1, budget.batch_size: 16, budget.patience: null,
        augment.preset: none}}
params:
  model.name: {{type: categorical, choices: [{SMALL}, {BIG}]}}
  optim.lr: {{type: float, low: 1.0e-3, high: 1.0e-2, log: true}}
"""


def test_cost_figures_are_positive_and_name_the_device() -> None:
    config = RunConfig.from_dict(
        {"model": {"name": "test_resnet"}, "data": {"image_size": 32}, "budget": {"batch_size": 8}}
    )
    cost = measure_cost(config, num_classes=10, device="cpu")
    assert cost.params_m > 0 and cost.gflops > 0 and cost.latency_ms > 0 and cost.throughput > 0
    assert cost.batch_size == 8 and cost.device.startswith("cpu (") and "thread" in cost.device
    # the same architecture counted on the meta device gives the same parameters and FLOPs
    static = static_cost(config.model, num_classes=10, image_size=32)
    assert (static.params_m, static.gflops) == (cost.params_m, cost.gflops)


def test_flops_grow_with_the_square_of_the_image_size() -> None:
    model = ModelConfig(name="test_resnet")
    small, large = (static_cost(model, num_classes=10, image_size=size) for size in (32, 64))
    assert 3.5 < large.gflops / small.gflops < 4.5
    assert large.params_m == small.params_m


def test_a_bigger_model_has_more_parameters_and_flops() -> None:
    small, big = (static_cost(ModelConfig(name=n), num_classes=10, image_size=32) for n in (SMALL, BIG))
    assert big.params_m > 2 * small.params_m and big.gflops > small.gflops


def _study(workdir: Path, csv: Path, *limits: str) -> optuna.Study:
    space = workdir / "space.yaml"
    space.write_text(SPACE)
    url = f"sqlite:///{workdir / 'study.db'}"
    create_study(
        "s", space=space, data=str(csv), storage=url, folds=2, pruner="none", limits=limits, starts=False
    )
    _, spec = open_study("s", url)
    sampler = build_sampler(spec.sampler, seed=0, space=spec.space)  # the workers' sampler: TPE
    return optuna.load_study(study_name="s", storage=url, sampler=sampler)


def test_a_config_over_a_params_limit_is_pruned_before_training_and_latency_makes_a_trial_infeasible(
    workdir: Path, small_csv: Path
) -> None:
    study = _study(workdir, small_csv, "params_m=0.2", "latency_ms=0.000001")
    _, spec = open_study("s", f"sqlite:///{workdir / 'study.db'}")
    assert spec.limits == {"params_m": 0.2, "latency_ms": 0.000001}
    study.enqueue_trial({"model.name": BIG, "optim.lr": 0.005})
    study.enqueue_trial({"model.name": SMALL, "optim.lr": 0.005})
    objective = Objective(spec, device="cpu", checkpoint_root=workdir / "ckpt")
    study.optimize(objective, n_trials=2)
    big, small = study.get_trials()

    assert big.state == TrialState.PRUNED
    assert "params_m 0.3" in big.user_attrs["prune_reason"] and "limit 0.2" in big.user_attrs["prune_reason"]
    assert big.intermediate_values == {} and "epochs" not in big.user_attrs  # not one step trained
    assert "fold_f1" not in big.user_attrs and "latency_ms" not in big.user_attrs  # not timed either
    # Optuna's constraints, from which the sampler learns (the latency was never measured)
    assert list(big.constraints) == ["params_m"] and big.constraints["params_m"] > 0

    # under the params limit it trained to the end, but no model is that fast: complete, infeasible
    assert small.state == TrialState.COMPLETE and len(small.user_attrs["fold_f1"]) == 2
    attrs = small.user_attrs
    assert all(attrs[k] > 0 for k in ("params_m", "gflops", "latency_ms", "throughput"))
    assert attrs["params_m"] < 0.2 and attrs["cost_device"].startswith("cpu (")
    assert small.constraints["params_m"] <= 0 < small.constraints["latency_ms"]
    with pytest.raises(ValueError):  # Optuna's own view agrees: no feasible trial yet
        _ = study.best_trial
    lines: list[str] = []
    _TrialLine("w", lines.append)(study, small)  # a worker's line for the trial says so too
    assert "complete: macro-F1" in lines[0] and "no trial within the study's limits yet" in lines[0]

    status = study_status(study)
    assert status.best_number is None and status.infeasible == 1
    assert status.cost_devices == [attrs["cost_device"]]
    rows = {r["number"]: r for r in trial_rows(study)}
    assert rows[1]["latency_ms"] == attrs["latency_ms"] and rows[1]["feasible"] is False
    assert rows[0]["params_m"] == big.user_attrs["params_m"] and rows[0]["latency_ms"] is None


def _finished(study: optuna.Study, value: float, *, params_m: float, latency_ms: float) -> None:
    """A complete trial as the objective records one, with its constraints for the study's limits."""
    limits = {"params_m": 0.5, "latency_ms": 5.0}
    figures = {"params_m": params_m, "latency_ms": latency_ms}
    study.add_trial(
        optuna.trial.create_trial(
            value=value,
            params={"model.name": SMALL, "optim.lr": 0.005},
            distributions={
                "model.name": optuna.distributions.CategoricalDistribution([SMALL, BIG]),
                "optim.lr": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True),
            },
            user_attrs={**figures, "cost_device": "cpu (2 threads)"},
            constraints={m: figures[m] - v for m, v in limits.items()},
        )
    )


def test_status_study_list_and_trials_show_the_best_feasible_trial(workdir: Path, small_csv: Path) -> None:
    study = _study(workdir, small_csv, "params_m=0.5", "latency_ms=5")
    _finished(study, 0.9, params_m=0.3, latency_ms=9.0)  # the best F1, but too slow
    _finished(study, 0.7, params_m=0.3, latency_ms=2.0)  # the best feasible
    _finished(study, 0.6, params_m=0.1, latency_ms=1.0)
    url = f"sqlite:///{workdir / 'study.db'}"

    shown = invoke("status", "s", "--storage", url)
    assert shown.exit_code == 0, shown.output
    assert "best feasible trial 1: macro-F1 0.7000" in shown.stdout
    assert "1 complete trial(s) infeasible" in shown.stdout and "cpu (2 threads)" in shown.stdout
    as_json = json.loads(invoke("status", "s", "--storage", url, "--json").stdout)
    assert as_json["best"]["number"] == 1 and as_json["infeasible"] == 1
    assert as_json["limits"] == {"params_m": 0.5, "latency_ms": 5.0}

    listed = json.loads(invoke("study", "list", "--storage", url, "--json").stdout)
    assert [(s["name"], s["best_number"], s["best_value"]) for s in listed] == [("s", 1, 0.7)]
    assert study.best_trial.number == 1  # as Optuna itself sees the constraints

    rows = json.loads(invoke("study", "trials", "s", "--storage", url, "--json").stdout)
    assert [r["feasible"] for r in rows] == [False, True, True]
    assert [r["latency_ms"] for r in rows] == [9.0, 2.0, 1.0]
    csv = invoke("study", "trials", "s", "--storage", url, "--csv").stdout.splitlines()
    assert "params_m,gflops,latency_ms,throughput,cost_device,feasible" in csv[0]


def test_limits_are_part_of_the_study(workdir: Path, small_csv: Path) -> None:
    _study(workdir, small_csv, "params_m=0.5")
    url = f"sqlite:///{workdir / 'study.db'}"
    space = str(workdir / "space.yaml")
    again = [
        "study",
        "create",
        "s",
        "--storage",
        url,
        "--space",
        space,
        "--data",
        str(small_csv),
        "--folds",
        "2",
    ]
    assert invoke(*again, "--pruner", "none", "--limit", "params_m=0.5").exit_code == 0
    other = invoke(*again, "--pruner", "none", "--limit", "params_m=0.4")
    assert other.exit_code == 2 and "limits" in other.stderr and "0.4" in other.stderr


def test_retrain_chooses_only_trials_within_the_limits(tmp_path: Path) -> None:
    """The best trial over a limit is skipped by --top-k; named by --trial it is taken as asked."""
    from hpo.models._retrain_plan import select_trials

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize")
    for value, over in [(0.9, 1.0), (0.8, -1.0), (0.7, 0.0), (0.6, 2.0)]:  # over > 0: infeasible
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        trial.set_user_attr("config", {})
        trial.set_constraint("latency_ms", over)
        study.tell(trial, value)
    assert [t.number for t in select_trials(study, top_k=4)] == [1, 2]
    assert [t.number for t in select_trials(study, trial=0)] == [0]


def test_retrain_refuses_a_study_with_no_feasible_trial(tmp_path: Path) -> None:
    from hpo.models._retrain_plan import select_trials

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize")
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    trial.set_user_attr("config", {})
    trial.set_constraint("params_m", 3.0)
    study.tell(trial, 0.9)
    with pytest.raises(UserError, match="no completed trial is within its cost limits"):
        select_trials(study)
