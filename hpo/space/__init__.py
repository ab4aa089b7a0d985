"""Search spaces: YAML files that say which RunConfig paths a study fixes and which it searches.

A space is data (``search_spaces/*.yaml``) validated into a typed model here::

    description: CPU demo on the built-in sample data.
    fixed:                      # dotted RunConfig paths -> values applied to every trial
      data.image_size: 32
    params:                     # searched, in this order
      optim.name: {type: categorical, choices: [sgd, adamw]}
      optim.lr: {type: float, low: 1.0e-4, high: 3.0e-2, log: true}
      optim.momentum: {type: float, low: 0.8, high: 0.99, when: {optim.name: sgd}}
    starts:                     # the first trials of a study, before the sampler's (at most 4)
      - {optim.name: adamw, optim.lr: 3.0e-3}

Param kinds are ``float`` and ``int`` (``low``, ``high``, ``log``, ``step``) and ``categorical``
(``choices``). ``when: {param: value}`` or ``{param: [v1, v2]}`` makes a param conditional: it is
suggested only when every referenced param was suggested with one of the listed values. A condition
may only reference a categorical param defined earlier in ``params``, so sampling in file order
always knows the answer.

A start sets some params (the rest are sampled); each value must be one its param can take, and a
conditional param only where the start also sets what its condition needs. A space without
``starts:`` borrows those of the shipped space sharing the most params when a study is created;
``starts: []`` asks for none.

Everything is checked at load time, including every fixed value, every choice and both ends of every
range against RunConfig itself, so a space that loads never produces a trial the run config rejects.
Each problem is one :class:`~training.config.ConfigError` naming the file, the key and the fix.

Example::

    space = load_space("quick")
    study.optimize(lambda trial: train(space.resolve(base, space.sample(trial))), n_trials=10)
"""

from hpo.space._loading import load_space, shipped_spaces
from hpo.space._params import CategoricalParam, FloatParam, IntParam, Param
from hpo.space._space import SearchSpace

__all__ = [
    "CategoricalParam",
    "FloatParam",
    "IntParam",
    "Param",
    "SearchSpace",
    "load_space",
    "shipped_spaces",
]
