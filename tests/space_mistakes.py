"""A catalog of search-space mistakes: each name -> (YAML text, the key the error must name, words it
must hold). tests/test_space.py checks every case against the loader; tests/test_bad_inputs.py runs
some of them through the CLI."""

from __future__ import annotations

__all__ = ["BAD", "OK_PARAM"]

OK_PARAM = "  optim.lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}\n"

# name -> (yaml text, key the message must name, further words it must contain)
BAD = {
    "unknown_top_key": ("description: x\nparam:\n" + OK_PARAM, "param", ["did you mean 'params'"]),
    "unknown_param_key": (
        "params:\n  optim.lr: {type: float, lo: 0.1, high: 1.0}\n",
        "params.optim.lr",
        ["unknown key 'lo'", "did you mean 'low'"],
    ),
    "unknown_type": (
        "params:\n  optim.lr: {type: floaty, low: 0.1, high: 1.0}\n",
        "params.optim.lr",
        ["unknown type 'floaty'", "float, int, categorical"],
    ),
    "missing_type": ("params:\n  optim.lr: {low: 0.1, high: 1.0}\n", "params.optim.lr", ["missing type"]),
    "missing_low": ("params:\n  optim.lr: {type: float, high: 1.0}\n", "params.optim.lr", ["missing 'low'"]),
    "value_not_mapping": ("params:\n  optim.lr: 0.1\n", "params.optim.lr", ["expected a mapping", "fixed"]),
    "unknown_param_path": (
        "params:\n  optim.lrr: {type: float, low: 0.1, high: 1.0}\n",
        "params.optim.lrr",
        ["not a RunConfig path", "did you mean 'optim.lr'"],
    ),
    "unknown_fixed_path": (
        "fixed:\n  budget.max_epoch: 3\nparams:\n" + OK_PARAM,
        "fixed.budget.max_epoch",
        ["did you mean 'budget.max_epochs'"],
    ),
    "nested_fixed": (
        "fixed:\n  model: {name: resnet18}\nparams:\n" + OK_PARAM,
        "fixed.model",
        ["dotted paths"],
    ),
    "low_above_high": (
        "params:\n  optim.lr: {type: float, low: 0.1, high: 0.01}\n",
        "params.optim.lr",
        ["low (0.1) is greater than high (0.01)", "swap them"],
    ),
    "log_low_not_positive": (
        "params:\n  optim.weight_decay: {type: float, low: 0.0, high: 0.01, log: true}\n",
        "params.optim.weight_decay",
        ["log needs low > 0", "set log: false"],
    ),
    "log_with_step": (
        "params:\n  budget.batch_size: {type: int, low: 16, high: 128, step: 16, log: true}\n",
        "params.budget.batch_size",
        ["log and step cannot be combined"],
    ),
    "step_not_dividing": (
        "params:\n  budget.batch_size: {type: int, low: 32, high: 100, step: 32}\n",
        "params.budget.batch_size",
        ["set high to 96 or 128"],
    ),
    "int_with_fraction": (
        "params:\n  budget.batch_size: {type: int, low: 16.5, high: 64}\n",
        "params.budget.batch_size",
        ["low", "valid integer"],
    ),
    "empty_choices": (
        "params:\n  optim.name: {type: categorical, choices: []}\n",
        "params.optim.name",
        ["choices is empty"],
    ),
    "duplicate_choices": (
        "params:\n  optim.name: {type: categorical, choices: [sgd, adam, sgd]}\n",
        "params.optim.name",
        ["'sgd' is listed twice"],
    ),
    "condition_on_unknown": (
        "params:\n  optim.name: {type: categorical, choices: [sgd, adam]}\n"
        "  optim.momentum: {type: float, low: 0.8, high: 0.9, when: {optim.nme: sgd}}\n",
        "params.optim.momentum",
        ["'optim.nme'", "did you mean 'optim.name'"],
    ),
    "condition_on_later": (
        "params:\n  optim.momentum: {type: float, low: 0.8, high: 0.9, when: {optim.name: sgd}}\n"
        "  optim.name: {type: categorical, choices: [sgd, adam]}\n",
        "params.optim.momentum",
        ["comes later", "move 'optim.name' above"],
    ),
    "condition_on_itself": (
        "params:\n  optim.name: {type: categorical, choices: [sgd], when: {optim.name: sgd}}\n",
        "params.optim.name",
        ["conditioned on itself"],
    ),
    "condition_on_numeric": (
        "params:\n"
        + OK_PARAM
        + "  optim.momentum: {type: float, low: 0.8, high: 0.9, when: {optim.lr: 1}}\n",
        "params.optim.momentum",
        ["categorical"],
    ),
    "condition_value_not_a_choice": (
        "params:\n  optim.name: {type: categorical, choices: [sgd, adam]}\n"
        "  optim.momentum: {type: float, low: 0.8, high: 0.9, when: {optim.name: [sgd, sdg]}}\n",
        "params.optim.momentum",
        ["sdg is not among the choices of 'optim.name'"],
    ),
    "condition_without_values": (
        "params:\n  optim.name: {type: categorical, choices: [sgd, adam]}\n"
        "  optim.momentum: {type: float, low: 0.8, high: 0.9, when: {optim.name: []}}\n",
        "params.optim.momentum",
        ["lists no values"],
    ),
    "fixed_and_searched": (
        "fixed:\n  optim.lr: 0.01\nparams:\n" + OK_PARAM,
        "params.optim.lr",
        ["also set in fixed"],
    ),
    "fixed_value_rejected": (
        "fixed:\n  model.drop_rate: 1.5\nparams:\n" + OK_PARAM,
        "fixed.model.drop_rate",
        ["less than 1", "1.5"],
    ),
    "fixed_name_rejected": (
        "fixed:\n  loss.name: focall\nparams:\n" + OK_PARAM,
        "fixed.loss.name",
        ["'focal'", "focall"],
    ),
    "choice_rejected_by_run_config": (
        "params:\n  loss.name: {type: categorical, choices: [ce, focall]}\n",
        "params.loss.name",
        ["choice 'focall' is rejected by the run config"],
    ),
    "range_rejected_by_run_config": (
        "params:\n  optim.momentum: {type: float, low: 0.8, high: 1.0}\n",
        "params.optim.momentum",
        ["high (1) is rejected by the run config"],
    ),
    "float_for_int_setting": (
        "params:\n  budget.batch_size: {type: float, low: 16, high: 64}\n",
        "params.budget.batch_size",
        ["use type: int"],
    ),
    "number_for_bool_setting": (
        "params:\n  augment.hflip: {type: int, low: 0, high: 1}\n",
        "params.augment.hflip",
        ["type: categorical"],
    ),
    "nothing_searched": ("description: only fixed\nfixed:\n  optim.lr: 0.01\n", "params", ["at least one"]),
    "top_level_list": ("- optim.lr\n", "", ["expected a mapping"]),
    "malformed_yaml": (
        "params:\n  optim.lr: {type: float, low: 0.1, high: 1.0\n  x: [\n",
        "line 3, column 4",
        ["malformed YAML"],
    ),
    "duplicate_yaml_key": ("params:\n" + OK_PARAM + OK_PARAM, "line 3", ["duplicate key 'optim.lr'"]),
    "empty_file": ("# only a comment\n", "", ["empty"]),
    # starts: each names the start (its index) and the key
    "start_unknown_path": (
        "params:\n" + OK_PARAM + "starts:\n  - {optim.lrr: 0.01}\n",
        "starts[0].optim.lrr",
        ["not a param of this space", "did you mean 'optim.lr'"],
    ),
    "start_sets_a_fixed_key": (
        "fixed:\n  optim.name: sgd\nparams:\n" + OK_PARAM + "starts:\n  - {optim.name: adam}\n",
        "starts[0].optim.name",
        ["fixed to sgd by the space, not searched"],
    ),
    "start_out_of_range": (
        "params:\n" + OK_PARAM + "starts:\n  - {optim.lr: 0.01}\n  - {optim.lr: 0.5}\n",
        "starts[1].optim.lr",
        ["0.5 is outside float 0.001 .. 0.1 log"],
    ),
    "start_not_a_choice": (
        "params:\n  optim.name: {type: categorical, choices: [sgd, adam]}\nstarts:\n  - {optim.name: sdg}\n",
        "starts[0].optim.name",
        ["sdg is not one of sgd, adam"],
    ),
    "start_condition_does_not_hold": (
        "params:\n  optim.name: {type: categorical, choices: [sgd, adam]}\n"
        "  optim.momentum: {type: float, low: 0.8, high: 0.99, when: {optim.name: sgd}}\n"
        "starts:\n  - {optim.name: adam, optim.momentum: 0.9}\n",
        "starts[0].optim.momentum",
        ["applies only when optim.name = sgd"],
    ),
    "too_many_starts": (
        "params:\n" + OK_PARAM + "starts:\n" + "  - {optim.lr: 0.01}\n" * 5,
        "starts",
        ["5 starts", "at most 4"],
    ),
    "starts_not_a_list": (
        "params:\n" + OK_PARAM + "starts: {optim.lr: 0.01}\n",
        "starts",
        ["expected a list"],
    ),
}
