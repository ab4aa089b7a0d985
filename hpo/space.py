"""Search spaces: YAML files that say which RunConfig paths a study fixes and which it searches.

A space is data (``search_spaces/*.yaml``) validated into a typed model here::

    description: CPU demo on the built-in sample data.
    fixed:                      # dotted RunConfig paths -> values applied to every trial
      data.image_size: 32
    params:                     # searched, in this order
      optim.name: {type: categorical, choices: [sgd, adamw]}
      optim.lr: {type: float, low: 1.0e-4, high: 3.0e-2, log: true}
      optim.momentum: {type: float, low: 0.8, high: 0.99, when: {optim.name: sgd}}

Param kinds are ``float`` and ``int`` (``low``, ``high``, ``log``, ``step``) and ``categorical``
(``choices``). ``when: {param: value}`` or ``{param: [v1, v2]}`` makes a param conditional: it is
suggested only when every referenced param was suggested with one of the listed values. A condition
may only reference a categorical param defined earlier in ``params``, so sampling in file order
always knows the answer.

Everything is checked at load time, including every fixed value, every choice and both ends of every
range against RunConfig itself, so a space that loads never produces a trial the run config rejects.
Each problem is one :class:`~training.config.ConfigError` naming the file, the key and the fix.

Example::

    space = load_space("quick")
    study.optimize(lambda trial: train(space.resolve(base, space.sample(trial))), n_trials=10)
"""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import optuna
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from training.config import ConfigError, RunConfig, apply_overrides, config_paths

__all__ = [
    "CategoricalParam",
    "FloatParam",
    "IntParam",
    "Param",
    "SearchSpace",
    "load_space",
    "shipped_spaces",
]

# A value optuna can store as a categorical choice (and YAML can write as a scalar).
Choice = str | bool | int | float | None

_SHIPPED_PACKAGE = "search_spaces"
_TOP_LEVEL_KEYS = ("description", "fixed", "params")
_KEY_ORDER = ("type", "low", "high", "step", "log", "choices", "when")  # how errors list param keys


# --------------------------------------------------------------------------- params


class _ParamBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # {earlier categorical param: allowed values}; every entry must hold for the param to be sampled
    when: dict[str, list[Choice]] = Field(default_factory=dict)

    @field_validator("when", mode="before")
    @classmethod
    def _values_as_lists(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, dict):
            return {k: v if isinstance(v, list | tuple) else [v] for k, v in value.items()}
        return value

    @field_validator("when")
    @classmethod
    def _values_present(cls, value: dict[str, list[Choice]]) -> dict[str, list[Choice]]:
        for ref, allowed in value.items():
            if not allowed:
                raise ValueError(f"when.{ref} lists no values; give the value(s) of '{ref}' it applies to")
        return value

    def applies(self, sampled: dict[str, Any]) -> bool:
        """True when every condition holds for the values sampled so far (unsampled = does not hold)."""
        return all(
            ref in sampled and any(_same(sampled[ref], v) for v in allowed)
            for ref, allowed in self.when.items()
        )

    def to_dict(self) -> dict[str, Any]:
        body = self.model_dump(mode="json", exclude_defaults=True, exclude={"type"})
        return {"type": self.type, **body}  # type: ignore[attr-defined]

    def describe(self) -> str:
        raise NotImplementedError

    def condition_text(self) -> str:
        parts = []
        for ref, allowed in self.when.items():
            if len(allowed) == 1:
                parts.append(f"{ref} = {_fmt(allowed[0])}")
            else:
                parts.append(f"{ref} in ({', '.join(_fmt(v) for v in allowed)})")
        return " and ".join(parts)


class _RangeParam(_ParamBase):
    log: bool = False  # sample uniformly in log space (needs low > 0, no step)

    def _check_range(self, low: float, high: float, step: float | None) -> None:
        if low > high:
            raise ValueError(f"low ({_fmt(low)}) is greater than high ({_fmt(high)}); swap them")
        if self.log and step is not None:
            raise ValueError("log and step cannot be combined; remove step or set log: false")
        if self.log and low <= 0:
            raise ValueError(f"log needs low > 0 (got {_fmt(low)}); raise low or set log: false")
        if step is not None and step <= 0:
            raise ValueError(f"step must be greater than 0 (got {_fmt(step)})")
        if step is not None:
            n = (high - low) / step
            if abs(n - round(n)) > 1e-9 * max(1.0, abs(n)):
                below = low + int(n) * step
                raise ValueError(
                    f"high ({_fmt(high)}) is not low plus a multiple of step ({_fmt(step)}); "
                    f"set high to {_fmt(below)} or {_fmt(below + step)}"
                )

    def _range_text(self, kind: str, low: float, high: float, step: float | None) -> str:
        text = f"{kind} {_fmt(low)} .. {_fmt(high)}"
        if step is not None:
            text += f" step {_fmt(step)}"
        if self.log:
            text += " log"
        return text


class FloatParam(_RangeParam):
    """``trial.suggest_float(path, low, high, step=step, log=log)``."""

    type: Literal["float"] = "float"
    low: float
    high: float
    step: float | None = None

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        self._check_range(self.low, self.high, self.step)
        return self

    def suggest(self, trial: optuna.trial.BaseTrial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def describe(self) -> str:
        return self._range_text("float", self.low, self.high, self.step)


class IntParam(_RangeParam):
    """``trial.suggest_int(path, low, high, step=step, log=log)``."""

    type: Literal["int"] = "int"
    low: int
    high: int
    step: int | None = None

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        self._check_range(self.low, self.high, self.step)
        return self

    def suggest(self, trial: optuna.trial.BaseTrial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step or 1, log=self.log)

    def describe(self) -> str:
        return self._range_text("int", self.low, self.high, self.step)


class CategoricalParam(_ParamBase):
    """``trial.suggest_categorical(path, choices)``."""

    type: Literal["categorical"] = "categorical"
    choices: list[Choice]

    @field_validator("choices")
    @classmethod
    def _distinct(cls, value: list[Choice]) -> list[Choice]:
        if not value:
            raise ValueError("choices is empty; list at least one value")
        for i, choice in enumerate(value):
            if any(_same(choice, earlier) for earlier in value[:i]):
                raise ValueError(f"choice '{_fmt(choice)}' is listed twice; remove the duplicate")
        return value

    def suggest(self, trial: optuna.trial.BaseTrial, name: str) -> Choice:
        return trial.suggest_categorical(name, self.choices)

    def describe(self) -> str:
        return "one of " + ", ".join(_fmt(c) for c in self.choices)


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]
_PARAM_TYPES: dict[str, type[_ParamBase]] = {
    "float": FloatParam,
    "int": IntParam,
    "categorical": CategoricalParam,
}


# --------------------------------------------------------------------------- the space


class SearchSpace(BaseModel):
    """What a study fixes and what it searches; see the module docstring for the YAML format."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    fixed: dict[str, Any] = Field(default_factory=dict)  # dotted RunConfig path -> value, every trial
    params: dict[str, Param] = Field(default_factory=dict)  # path -> how to sample it; in this order

    @field_validator("fixed", "params", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @model_validator(mode="after")
    def _check_against_run_config(self) -> SearchSpace:
        if not self.params:
            raise ValueError("params: nothing is searched; add at least one param")
        known = config_paths()
        base = RunConfig()
        for path, value in self.fixed.items():
            _check_path(f"fixed.{path}", path, known)
            # apply_overrides is the authority; the key is named by `where`
            resolved = apply_overrides(base, {path: value}, where=f"fixed.{path}")
            section, key = path.split(".", 1)
            self.fixed[path] = resolved.to_dict()[section][key]  # normalised, JSON-able
        apply_overrides(base, self.fixed, where="fixed")

        for index, (path, param) in enumerate(self.params.items()):
            where = f"params.{path}"
            _check_path(where, path, known)
            if path in self.fixed:
                raise ValueError(f"{where}: also set in fixed; remove it from fixed or from params")
            _check_param_fits(where, path, param, base)
            earlier = list(self.params)[:index]
            for ref, allowed in param.when.items():
                _check_condition(where, ref, allowed, earlier, self.params, known)
        return self

    # ---- use

    def sample(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        """Suggest every param in order, skipping those whose condition does not hold.

        Returns ``{path: value}`` of what was suggested. The optuna param names are the dotted
        paths, so the dashboard and ``trial.params`` read the same as the YAML. Works on a
        ``FrozenTrial`` too, which replays the stored values.
        """
        sampled: dict[str, Any] = {}
        for path, param in self.params.items():
            if param.applies(sampled):
                sampled[path] = param.suggest(trial, path)
        return sampled

    def resolve(self, base: RunConfig, sampled: dict[str, Any]) -> RunConfig:
        """``base`` + ``fixed`` + ``sampled``, validated into a new RunConfig."""
        stray = [path for path in sampled if path not in self.params]
        if stray:
            raise ConfigError(
                f"search space: sampled value for '{stray[0]}', which is not a param of this space; "
                f"pass only what sample() returned (params: {', '.join(self.params)})"
            )
        return apply_overrides(base, {**self.fixed, **sampled}, where="search space")

    def values_of(self, path: str, base: RunConfig) -> list[Any]:
        """What ``path`` can be in a trial, as far as feasibility goes: each choice, both ends of a
        range, or the value of ``base`` (which holds the fixed values) when it is not searched."""
        param = self.params.get(path)
        if isinstance(param, CategoricalParam):
            return list(param.choices)
        if isinstance(param, FloatParam | IntParam):
            return [param.low, param.high]
        section, key = path.split(".", 1)
        return [base.to_dict()[section][key]]

    # ---- storage and display

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (stored in the study attrs) that :meth:`from_dict` turns back into this."""
        return {
            "description": self.description,
            "fixed": dict(self.fixed),
            "params": {path: param.to_dict() for path, param in self.params.items()},
        }

    @classmethod
    def from_dict(cls, raw: Any, *, where: str) -> SearchSpace:
        """Validate a parsed YAML/JSON dict; any problem is one ConfigError starting with ``where``."""
        if not isinstance(raw, dict):
            raise ConfigError(
                f"{where}: expected a mapping with keys {', '.join(_TOP_LEVEL_KEYS)} at the top; "
                f"got {_kind(raw)}"
            )
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(f"{where}: {_explain(exc, raw)}") from None

    def rows(self) -> list[tuple[str, str, str]]:
        """``(path, kind/range, condition)`` per searched param in order, then ``(path, "fixed: v", "")``
        per fixed value, for a CLI table."""
        rows = [(path, p.describe(), p.condition_text()) for path, p in self.params.items()]
        rows += [(path, f"fixed: {_fmt(value)}", "") for path, value in self.fixed.items()]
        return rows


# --------------------------------------------------------------------------- loading


def shipped_spaces() -> list[str]:
    """Names of the spaces shipped in the ``search_spaces`` package (``quick``, ``default``, ...)."""
    root = resources.files(_SHIPPED_PACKAGE)
    return sorted(entry.name[: -len(".yaml")] for entry in root.iterdir() if entry.name.endswith(".yaml"))


def load_space(path_or_name: str | Path) -> SearchSpace:
    """Load a space from a YAML file path, or a shipped space by name (``"quick"``)."""
    path = Path(path_or_name)
    if path.is_file():
        where = str(path_or_name)
        text = _read(path, where)
    else:
        name = str(path_or_name)
        name = name[: -len(".yaml")] if name.endswith(".yaml") else name
        shipped = shipped_spaces()
        if "/" in name or "\\" in name or name not in shipped:
            close = difflib.get_close_matches(name, shipped, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(
                f"search space '{path_or_name}' not found: no such file and no shipped space of that "
                f"name; {hint}use a path to a .yaml file or one of: {', '.join(shipped)}"
            )
        where = f"{_SHIPPED_PACKAGE}/{name}.yaml"
        text = resources.files(_SHIPPED_PACKAGE).joinpath(f"{name}.yaml").read_text(encoding="utf-8")

    raw = _parse_yaml(text, where)
    if raw is None:
        raise ConfigError(
            f"{where}: the file is empty; write description, fixed and params "
            f"(see {_SHIPPED_PACKAGE}/quick.yaml)"
        )
    return SearchSpace.from_dict(raw, where=where)


def _read(path: Path, where: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not UTF-8 text; save the search space as a UTF-8 YAML file") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the file ({exc.strerror}); check the path") from None


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and reads ``1e-4`` as a float (YAML 1.2), not a string."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise ConfigError(
                    f"line {mark.line + 1}, column {mark.column + 1}: duplicate key '{key}'; "
                    "keep only one of them"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _parse_yaml(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"{where}: {at}malformed YAML ({problem}); fix the indentation or quoting there"
        ) from None


# --------------------------------------------------------------------------- checks


def _check_path(where: str, path: str, known: set[str]) -> None:
    if path in known:
        return
    if path in {p.split(".", 1)[0] for p in known}:
        raise ValueError(
            f"{where}: '{path}' is a config section, not a setting; write dotted paths such as "
            f"'{min(p for p in known if p.startswith(path + '.'))}: ...'"
        )
    close = difflib.get_close_matches(path, sorted(known), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else "see training/config.py for the settings"
    raise ValueError(f"{where}: '{path}' is not a RunConfig path; {hint}")


def _field_types(path: str) -> set[type]:
    section, key = path.split(".", 1)
    section_model = RunConfig.model_fields[section].annotation
    annotation = section_model.model_fields[key].annotation  # type: ignore[union-attr]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return set(typing.get_args(annotation))
    return {annotation}


def _check_param_fits(where: str, path: str, param: _ParamBase, base: RunConfig) -> None:
    """Every value the param can produce must be accepted by RunConfig at ``path``."""
    if isinstance(param, FloatParam | IntParam):
        accepted = _field_types(path)
        if float not in accepted and int not in accepted:
            raise ValueError(f"{where}: '{path}' is not a number; use type: categorical with its values")
        if isinstance(param, FloatParam) and float not in accepted:
            raise ValueError(f"{where}: '{path}' takes whole numbers; use type: int")
        probes = [("low", param.low), ("high", param.high)]
    else:
        probes = [("choice", c) for c in param.choices]  # type: ignore[attr-defined]
    section, key = path.split(".", 1)
    for label, value in probes:
        raw = base.to_dict()
        raw[section][key] = value
        try:
            RunConfig.model_validate(raw)
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"]
            fix = "fix or remove it" if label == "choice" else f"change {label} to a value it accepts"
            what = f"choice '{_fmt(value)}'" if label == "choice" else f"{label} ({_fmt(value)})"
            raise ValueError(f"{where}: {what} is rejected by the run config ({reason}); {fix}") from None


def _check_condition(
    where: str,
    ref: str,
    allowed: list[Choice],
    earlier: list[str],
    params: dict[str, Any],
    known: set[str],
) -> None:
    if ref not in earlier:
        if ref == where.removeprefix("params."):
            raise ValueError(f"{where}: when: a param cannot be conditioned on itself; remove when.{ref}")
        if ref in params:
            raise ValueError(
                f"{where}: when: condition on '{ref}', which comes later in params; "
                f"move '{ref}' above this param"
            )
        close = difflib.get_close_matches(ref, earlier, n=1) or difflib.get_close_matches(
            ref, sorted(known), n=1
        )
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(
            f"{where}: when: condition on '{ref}', which is not a param of this space{hint}; "
            "conditions may only reference params listed earlier in params"
        )
    target = params[ref]
    if not isinstance(target, CategoricalParam):
        raise ValueError(
            f"{where}: when: condition on '{ref}', which is a {target.type} param; "
            "conditions may only reference categorical params"
        )
    for value in allowed:
        if not any(_same(value, c) for c in target.choices):
            raise ValueError(
                f"{where}: when.{ref}: {_fmt(value)} is not among the choices of '{ref}' "
                f"({', '.join(_fmt(c) for c in target.choices)}); use one of them"
            )


def _explain(exc: ValidationError, raw: dict[str, Any]) -> str:
    """One line for the most useful error of a failed SearchSpace validation."""
    errors = exc.errors()
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = list(err["loc"])
    kind = err["type"]
    msg = str(err["msg"]).removeprefix("Value error, ")

    if not loc:  # a SearchSpace-level check; its message already names the key
        return msg
    if loc[0] not in _TOP_LEVEL_KEYS:
        close = difflib.get_close_matches(str(loc[0]), _TOP_LEVEL_KEYS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown top-level key '{loc[0]}'{hint}; use only {', '.join(_TOP_LEVEL_KEYS)}"
    if loc[0] != "params" or len(loc) < 2:
        key = ".".join(str(p) for p in loc)
        if kind in ("dict_type", "model_attributes_type"):
            return f"{key}: expected a mapping of dotted config paths; got {_kind(err.get('input'))}"
        return f"{key}: {msg}; got {err.get('input')!r}"

    key = f"params.{loc[1]}"
    if kind == "union_tag_invalid":
        tag = err.get("ctx", {}).get("tag")
        return f"{key}: unknown type '{tag}'; use one of: {', '.join(_PARAM_TYPES)}"
    if kind == "union_tag_not_found":
        return f"{key}: missing type; add type: {' | '.join(_PARAM_TYPES)}"
    if kind in ("model_attributes_type", "dict_type", "model_type"):
        return (
            f"{key}: expected a mapping such as {{type: float, low: 0.1, high: 1.0}}; "
            f"got {err.get('input')!r} (to set one value for every trial, move it under fixed)"
        )
    tag, field = loc[2], [str(p) for p in loc[3:]]
    if not field:
        return f"{key}: {msg}"
    name = ".".join(field)
    allowed = sorted(_PARAM_TYPES[str(tag)].model_fields, key=_KEY_ORDER.index)
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"{key}: unknown key '{name}'{hint}; {tag} params take: {', '.join(allowed)}"
    if kind == "missing":
        return f"{key}: missing '{name}'; {tag} params need it"
    if kind == "value_error":  # our own validators: the message names what and how
        return f"{key}: {msg}"
    if field == ["when"] and kind == "dict_type":
        return f"{key}: when must be a mapping such as {{optim.name: sgd}}; got {err.get('input')!r}"
    return f"{key}: {name}: {msg}; got {err.get('input')!r}"


# --------------------------------------------------------------------------- small helpers


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps ``True``, ``1`` and ``1.0`` apart, as YAML and optuna do."""
    return type(a) is type(b) and a == b


def _fmt(value: Any) -> str:
    """A value as it would be written in the YAML file."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _kind(value: Any) -> str:
    return "nothing" if value is None else f"a {type(value).__name__}"
