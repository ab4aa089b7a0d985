"""Search spaces: shipped files validate, sampling honours conditions, errors name file + key + fix."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch
from timm.utils import ModelEmaV3

from hpo.space import CategoricalParam, FloatParam, IntParam, SearchSpace, load_space, shipped_spaces
from tests.space_mistakes import BAD
from training.config import ConfigError, RunConfig, config_paths

SHIPPED = ["competition", "competition_cpu", "default", "efficientnet", "mask", "quick"]

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _random_study(seed: int = 0) -> optuna.Study:
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed), direction="maximize")


def _sample_many(space: SearchSpace, n: int = 200) -> list[dict]:
    study = _random_study()
    samples: list[dict] = []

    def objective(trial: optuna.Trial) -> float:
        sampled = space.sample(trial)
        samples.append(sampled)
        assert trial.params == sampled  # what optuna stored is exactly what sample() reports
        return 0.0

    study.optimize(objective, n_trials=n)
    return samples


def _holds(param, sampled: dict) -> bool:
    return all(ref in sampled and sampled[ref] in allowed for ref, allowed in param.when.items())


# --------------------------------------------------------------------------- shipped spaces


def test_shipped_spaces_are_listed():
    assert shipped_spaces() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_space_loads_and_resolves(name):
    space = load_space(name)
    assert space.description
    assert space.params
    assert set(space.params) <= config_paths()
    assert set(space.fixed) <= config_paths()
    config = space.resolve(RunConfig(), {})
    for path, value in space.fixed.items():
        section, key = path.split(".")
        assert getattr(getattr(config, section), key) == value


def test_quick_space_matches_the_cpu_demo():
    space = load_space("quick")
    assert space.fixed["model.name"] == "test_resnet"
    assert space.fixed["data.image_size"] == 32
    assert space.fixed["augment.hflip"] is False
    assert space.fixed["cv.folds"] == 3
    assert space.fixed["budget.max_epochs"] <= 6
    assert space.params["optim.momentum"].when == {"optim.name": ["sgd"]}
    assert space.params["loss.gamma"].when == {"loss.name": ["focal"]}
    assert space.params["optim.lr"].log


def test_mask_space_matches_the_competition_layout():
    space = load_space("mask")
    assert space.fixed["cv.folds"] == 5
    assert space.fixed["augment.hflip"] is True
    assert space.fixed["data.image_size"] == 224
    assert set(space.params["loss.name"].choices) == {"ce", "focal", "label_smoothing"}
    assert set(space.params["cv.oversample"].choices) == {True, False}


def test_competition_cpu_space_runs_on_the_cpu_sample_and_its_ema_decays_bind():
    space = load_space("competition_cpu")
    assert space.fixed["model.name"].startswith("test_") and space.fixed["model.pretrained"] is False
    assert space.fixed["data.image_size"] == 48 and space.fixed["cv.folds"] == 3
    # the fewest optimizer steps a fold takes: sample-mask's 1890 images, 2 of 3 folds, the larger batch
    steps = 1890 * 2 // 3 // max(space.params["budget.batch_size"].choices) * space.fixed["budget.max_epochs"]
    for decay in space.params["budget.ema_decay"].choices:
        ema = ModelEmaV3(torch.nn.Linear(1, 1), decay=decay, use_warmup=True, warmup_power=0.75)  # as fit
        assert ema.get_decay(steps) == decay  # the warm-up has reached it before the run ends


def test_load_space_by_name_by_file_name_and_by_path(tmp_path):
    by_name = load_space("quick")
    assert load_space("quick.yaml") == by_name
    copy = tmp_path / "mine.yaml"
    copy.write_text((Path(__file__).parents[1] / "search_spaces" / "quick.yaml").read_text())
    assert load_space(copy) == by_name
    assert load_space(str(copy)) == by_name


# --------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("name", SHIPPED)
def test_conditional_params_appear_exactly_when_their_condition_holds(name):
    space = load_space(name)
    samples = _sample_many(space)
    conditional = [path for path, p in space.params.items() if p.when]
    assert conditional, "every shipped space demonstrates conditions"
    for sampled in samples:
        for path, param in space.params.items():
            assert (path in sampled) == _holds(param, sampled), (path, sampled)
    # both branches of every condition were actually exercised
    for path in conditional:
        assert any(path in s for s in samples), path
        assert any(path not in s for s in samples), path


@pytest.mark.parametrize("name", SHIPPED)
def test_sampled_values_lie_in_their_ranges(name):
    space = load_space(name)
    for sampled in _sample_many(space, n=100):
        for path, value in sampled.items():
            param = space.params[path]
            if isinstance(param, CategoricalParam):
                assert value in param.choices
            else:
                assert param.low <= value <= param.high
                assert isinstance(value, int if isinstance(param, IntParam) else float)
                if param.step:
                    steps = (value - param.low) / param.step
                    assert steps == pytest.approx(round(steps))


def test_resolve_puts_fixed_and_sampled_values_in_place():
    space = load_space("quick")
    base = RunConfig.from_dict({"data": {"source": "somewhere", "cache_dir": "/tmp/cache"}})
    for sampled in _sample_many(space, n=50):
        config = space.resolve(base, sampled)
        assert isinstance(config, RunConfig)
        raw = config.to_dict()
        for path, value in {**space.fixed, **sampled}.items():
            section, key = path.split(".")
            assert raw[section][key] == value, path
        assert config.data.source == "somewhere"  # untouched base values survive
        assert config.data.cache_dir == "/tmp/cache"
        if "optim.momentum" not in sampled:
            assert config.optim.momentum == base.optim.momentum


def test_sample_replays_a_frozen_trial():
    space = load_space("default")
    study = _random_study(seed=3)
    study.optimize(lambda t: (space.sample(t), 0.0)[1], n_trials=5)
    for frozen in study.trials:
        assert space.sample(frozen) == frozen.params


def test_resolve_rejects_values_that_are_not_params():
    space = load_space("quick")
    with pytest.raises(ConfigError, match=r"'model\.drop_rate', which is not a param"):
        space.resolve(RunConfig(), {"model.drop_rate": 0.1})


def test_chained_conditions_skip_when_the_parent_was_skipped(tmp_path):
    path = tmp_path / "chain.yaml"
    path.write_text(
        "params:\n"
        "  optim.name: {type: categorical, choices: [sgd, adam]}\n"
        "  optim.nesterov: {type: categorical, choices: [true, false], when: {optim.name: sgd}}\n"
        "  optim.momentum: {type: float, low: 0.8, high: 0.9, when: {optim.nesterov: true}}\n"
    )
    space = load_space(path)
    for sampled in _sample_many(space, n=100):
        assert ("optim.momentum" in sampled) == (sampled.get("optim.nesterov") is True)


# --------------------------------------------------------------------------- storage and display


@pytest.mark.parametrize("name", SHIPPED)
def test_to_dict_round_trips_through_json(name):
    space = load_space(name)
    stored = json.loads(json.dumps(space.to_dict()))
    again = SearchSpace.from_dict(stored, where="study attrs")
    assert again == space
    assert list(again.params) == list(space.params)  # sampling order survives
    assert again.to_dict() == space.to_dict()


def test_to_dict_is_minimal_and_typed():
    stored = load_space("quick").to_dict()
    assert stored["params"]["optim.momentum"] == {
        "type": "float",
        "low": 0.8,
        "high": 0.99,
        "when": {"optim.name": ["sgd"]},
    }
    assert stored["params"]["budget.batch_size"] == {"type": "int", "low": 32, "high": 128, "step": 32}
    assert stored["fixed"]["model.name"] == "test_resnet"


def test_rows_describe_params_then_fixed():
    space = load_space("quick")
    rows = space.rows()
    assert len(rows) == len(space.params) + len(space.fixed)
    table = {path: (kind, cond) for path, kind, cond in rows}
    assert table["optim.lr"] == ("float 0.0001 .. 0.03 log", "")
    assert table["optim.momentum"][1] == "optim.name = sgd"
    assert table["budget.batch_size"][0] == "int 32 .. 128 step 32"
    assert table["optim.name"][0] == "one of sgd, adam, adamw"
    assert table["model.name"] == ("fixed: test_resnet", "")
    conditions = {path: cond for path, _, cond in load_space("default").rows()}
    assert conditions["augment.strength"] == "augment.preset in (light, medium, heavy)"


def test_direct_construction_is_validated_too():
    space = SearchSpace(
        params={
            "optim.name": CategoricalParam(choices=["sgd", "adam"]),
            "optim.momentum": FloatParam(low=0.8, high=0.9, when={"optim.name": "sgd"}),
            "budget.batch_size": IntParam(low=16, high=64, step=16),
        }
    )
    assert space.params["optim.momentum"].when == {"optim.name": ["sgd"]}
    with pytest.raises(ValueError, match="not a RunConfig path"):
        SearchSpace(params={"optim.lrr": FloatParam(low=0.1, high=1.0)})


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_problem_is_one_config_error_naming_file_and_key(tmp_path, case):
    text, key, words = BAD[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_space(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    assert key in message, message
    for word in words:
        assert word in message, message


def test_yaml_12_floats_are_numbers(tmp_path):
    path = tmp_path / "floats.yaml"
    path.write_text("params:\n  loss.smoothing: {type: categorical, choices: [1e-2, 5e-2]}\n")
    assert load_space(path).params["loss.smoothing"].choices == [0.01, 0.05]


def test_unknown_space_lists_the_shipped_ones():
    with pytest.raises(ConfigError) as info:
        load_space("quik")
    message = str(info.value)
    assert "'quik' not found" in message
    assert "did you mean 'quick'" in message
    for name in SHIPPED:
        assert name in message


def test_missing_file_path_is_not_found(tmp_path):
    with pytest.raises(
        ConfigError, match=r"not found.*competition, competition_cpu, default, efficientnet, mask, quick"
    ):
        load_space(tmp_path / "nope.yaml")


def test_from_dict_errors_name_where():
    with pytest.raises(ConfigError, match=r"^study attrs: params\.optim\.lr: low \(0\.1\)"):
        SearchSpace.from_dict(
            {"params": {"optim.lr": {"type": "float", "low": 0.1, "high": 0.01}}}, where="study attrs"
        )
