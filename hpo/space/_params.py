"""Param kinds of a search space: float and int ranges, categorical choices, and ``when`` conditions."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import optuna
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "PARAM_TYPES",
    "CategoricalParam",
    "Choice",
    "FloatParam",
    "IntParam",
    "Param",
    "fmt",
    "kind_of",
    "same",
]

# A value optuna can store as a categorical choice (and YAML can write as a scalar).
Choice = str | bool | int | float | None

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
            ref in sampled and any(same(sampled[ref], v) for v in allowed)
            for ref, allowed in self.when.items()
        )

    def to_dict(self) -> dict[str, Any]:
        body = self.model_dump(mode="json", exclude_defaults=True, exclude={"type"})
        return {"type": self.type, **body}  # type: ignore[attr-defined]

    def describe(self) -> str:
        raise NotImplementedError

    def admit(self, value: Any) -> Any:
        """``value`` as this param would suggest it (an int for a float param becomes a float); a
        ValueError saying what the param takes when it could never be suggested."""
        raise NotImplementedError

    def distribution(self) -> optuna.distributions.BaseDistribution:
        """The Optuna distribution :meth:`suggest` samples from (for trials added with their values)."""
        raise NotImplementedError

    def condition_text(self) -> str:
        parts = []
        for ref, allowed in self.when.items():
            if len(allowed) == 1:
                parts.append(f"{ref} = {fmt(allowed[0])}")
            else:
                parts.append(f"{ref} in ({', '.join(fmt(v) for v in allowed)})")
        return " and ".join(parts)


class _RangeParam(_ParamBase):
    log: bool = False  # sample uniformly in log space (needs low > 0, no step)

    def _check_range(self, low: float, high: float, step: float | None) -> None:
        if low > high:
            raise ValueError(f"low ({fmt(low)}) is greater than high ({fmt(high)}); swap them")
        if self.log and step is not None:
            raise ValueError("log and step cannot be combined; remove step or set log: false")
        if self.log and low <= 0:
            raise ValueError(f"log needs low > 0 (got {fmt(low)}); raise low or set log: false")
        if step is not None and step <= 0:
            raise ValueError(f"step must be greater than 0 (got {fmt(step)})")
        if step is not None:
            n = (high - low) / step
            if abs(n - round(n)) > 1e-9 * max(1.0, abs(n)):
                below = low + int(n) * step
                raise ValueError(
                    f"high ({fmt(high)}) is not low plus a multiple of step ({fmt(step)}); "
                    f"set high to {fmt(below)} or {fmt(below + step)}"
                )

    def _admit_number(self, value: Any, low: float, high: float, step: float | None, kind: type) -> Any:
        whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and not whole):
            raise ValueError(f"{fmt(value)} is not {'a whole number' if kind is int else 'a number'}")
        number = kind(value)
        if not low <= number <= high:
            raise ValueError(f"{fmt(number)} is outside {self.describe()}")
        if step is not None:
            n = (number - low) / step
            if abs(n - round(n)) > 1e-9 * max(1.0, abs(n)):
                raise ValueError(f"{fmt(number)} is not on the grid of {self.describe()}")
        return number

    def _range_text(self, kind: str, low: float, high: float, step: float | None) -> str:
        text = f"{kind} {fmt(low)} .. {fmt(high)}"
        if step is not None:
            text += f" step {fmt(step)}"
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

    def admit(self, value: Any) -> float:
        return self._admit_number(value, self.low, self.high, self.step, float)

    def distribution(self) -> optuna.distributions.FloatDistribution:
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log, step=self.step)


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

    def admit(self, value: Any) -> int:
        return self._admit_number(value, self.low, self.high, self.step, int)

    def distribution(self) -> optuna.distributions.IntDistribution:
        return optuna.distributions.IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)


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
            if any(same(choice, earlier) for earlier in value[:i]):
                raise ValueError(f"choice '{fmt(choice)}' is listed twice; remove the duplicate")
        return value

    def suggest(self, trial: optuna.trial.BaseTrial, name: str) -> Choice:
        return trial.suggest_categorical(name, self.choices)

    def describe(self) -> str:
        return "one of " + ", ".join(fmt(c) for c in self.choices)

    def admit(self, value: Any) -> Choice:
        for choice in self.choices:
            if same(value, choice):
                return choice
        raise ValueError(f"{fmt(value)} is not {self.describe()}")

    def distribution(self) -> optuna.distributions.CategoricalDistribution:
        return optuna.distributions.CategoricalDistribution(self.choices)


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]
PARAM_TYPES: dict[str, type[_ParamBase]] = {
    "float": FloatParam,
    "int": IntParam,
    "categorical": CategoricalParam,
}


# --------------------------------------------------------------------------- small helpers


def same(a: Any, b: Any) -> bool:
    """Equality that keeps ``True``, ``1`` and ``1.0`` apart, as YAML and optuna do."""
    return type(a) is type(b) and a == b


def fmt(value: Any) -> str:
    """A value as it would be written in the YAML file."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def kind_of(value: Any) -> str:
    return "nothing" if value is None else f"a {type(value).__name__}"
