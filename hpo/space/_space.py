"""The search space model: fixed values and searched params at RunConfig paths, checked at load time."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

import optuna
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hpo.space._explain import TOP_LEVEL_KEYS, explain
from hpo.space._params import CategoricalParam, Choice, FloatParam, IntParam, Param, fmt, kind_of, same
from training.config import ConfigError, RunConfig, apply_overrides, config_paths

__all__ = ["MAX_STARTS", "SearchSpace"]

MAX_STARTS = 4  # a start costs a whole trial; a handful covers a portfolio, the sampler does the rest


class SearchSpace(BaseModel):
    """What a study fixes and what it searches; see the module docstring for the YAML format."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    fixed: dict[str, Any] = Field(default_factory=dict)  # dotted RunConfig path -> value, every trial
    params: dict[str, Param] = Field(default_factory=dict)  # path -> how to sample it; in this order
    # the first trials of a study, before the sampler's: each {param path: value}; params a start
    # leaves out are sampled (or keep the config default when their condition does not hold).
    # None (no `starts:` key): a study borrows those of the closest shipped space; []: none at all.
    starts: list[dict[str, Any]] | None = None

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

        if self.starts is None:
            return self
        if len(self.starts) > MAX_STARTS:
            raise ValueError(
                f"starts: {len(self.starts)} starts; keep at most {MAX_STARTS} "
                "(the sampler takes over after them)"
            )
        self.starts = [self._check_start(index, start, base) for index, start in enumerate(self.starts)]
        return self

    def _check_start(self, index: int, start: dict[str, Any], base: RunConfig) -> dict[str, Any]:
        """The start with each value as its param suggests it; a ValueError naming start and key."""
        where = f"starts[{index}]"
        if not start:
            raise ValueError(
                f"{where}: sets nothing; give it param values such as optim.lr: 1.0e-3, or remove it"
            )
        checked: dict[str, Any] = {}
        for path, value in start.items():
            param = self.params.get(path)
            if param is None:
                raise ValueError(f"{where}.{path}: {self._not_a_param(path)}")
            try:
                checked[path] = param.admit(value)
            except ValueError as exc:
                raise ValueError(f"{where}.{path}: {exc}; use a value the param can take") from None
        for path, param in self.params.items():
            if path in checked and not param.applies(checked):
                raise ValueError(
                    f"{where}.{path}: the param applies only when {param.condition_text()}; set that in "
                    f"this start too, or remove {path} from it"
                )
        apply_overrides(base, {**self.fixed, **checked}, where=where)  # what RunConfig checks across keys
        return checked

    def _not_a_param(self, path: str) -> str:
        if path in self.fixed:
            return f"fixed to {fmt(self.fixed[path])} by the space, not searched; remove it from the start"
        close = difflib.get_close_matches(path, list(self.params), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"not a param of this space; {hint}a start sets only params ({', '.join(self.params)})"

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

    def adapt(self, values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Another space's param values as a start of this one: ``(values kept, notes)``.

        A path this space does not search (not a param, or fixed here) is dropped; so is a param
        whose condition no longer holds. A value this space's param cannot take is dropped too, with
        a note saying which and why.
        """
        kept: dict[str, Any] = {}
        notes: list[str] = []
        for path, param in self.params.items():
            if path not in values or not param.applies(kept):
                continue
            try:
                kept[path] = param.admit(values[path])
            except ValueError as exc:
                notes.append(f"{path}: {exc}; dropped")
        return kept, notes

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

    def pretrained_models(self, base: RunConfig) -> list[str]:
        """The model names whose timm weights a trial can load (``model.pretrained`` true in some
        trial, fixed or searched), each once, in the space's order."""
        if not any(value is True for value in self.values_of("model.pretrained", base)):
            return []
        return list(dict.fromkeys(self.values_of("model.name", base)))

    # ---- storage and display

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (stored in the study attrs) that :meth:`from_dict` turns back into this."""
        out = {
            "description": self.description,
            "fixed": dict(self.fixed),
            "params": {path: param.to_dict() for path, param in self.params.items()},
        }
        if self.starts is not None:  # studies stored before starts existed read back alike
            out["starts"] = [dict(start) for start in self.starts]
        return out

    @classmethod
    def from_dict(cls, raw: Any, *, where: str) -> SearchSpace:
        """Validate a parsed YAML/JSON dict; any problem is one ConfigError starting with ``where``."""
        if not isinstance(raw, dict):
            raise ConfigError(
                f"{where}: expected a mapping with keys {', '.join(TOP_LEVEL_KEYS)} at the top; "
                f"got {kind_of(raw)}"
            )
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(f"{where}: {explain(exc, raw)}") from None

    def rows(self) -> list[tuple[str, str, str]]:
        """``(path, kind/range, condition)`` per searched param in order, then ``(path, "fixed: v", "")``
        per fixed value, for a CLI table."""
        rows = [(path, p.describe(), p.condition_text()) for path, p in self.params.items()]
        rows += [(path, f"fixed: {fmt(value)}", "") for path, value in self.fixed.items()]
        return rows


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


def _check_param_fits(where: str, path: str, param: Param, base: RunConfig) -> None:
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
            what = f"choice '{fmt(value)}'" if label == "choice" else f"{label} ({fmt(value)})"
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
        if not any(same(value, c) for c in target.choices):
            raise ValueError(
                f"{where}: when.{ref}: {fmt(value)} is not among the choices of '{ref}' "
                f"({', '.join(fmt(c) for c in target.choices)}); use one of them"
            )
