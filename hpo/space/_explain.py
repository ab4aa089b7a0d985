"""One line for the most useful error of a search space that fails validation."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import ValidationError

from hpo.space._params import PARAM_TYPES, kind_of

__all__ = ["TOP_LEVEL_KEYS", "explain"]

TOP_LEVEL_KEYS = ("description", "fixed", "params", "starts")
_KEY_ORDER = ("type", "low", "high", "step", "log", "choices", "when")  # how errors list param keys


def explain(exc: ValidationError, raw: dict[str, Any]) -> str:
    """One line for the most useful error of a failed SearchSpace validation."""
    errors = exc.errors()
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = list(err["loc"])
    kind = err["type"]
    msg = str(err["msg"]).removeprefix("Value error, ")

    if not loc:  # a SearchSpace-level check; its message already names the key
        return msg
    if loc[0] not in TOP_LEVEL_KEYS:
        close = difflib.get_close_matches(str(loc[0]), TOP_LEVEL_KEYS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown top-level key '{loc[0]}'{hint}; use only {', '.join(TOP_LEVEL_KEYS)}"
    if loc[0] != "params" or len(loc) < 2:
        key = ".".join(str(p) for p in loc)
        if loc[0] == "starts" and kind == "list_type":
            got = kind_of(err.get("input"))
            return f"starts: expected a list of mappings such as - {{optim.lr: 1.0e-3}}; got {got}"
        if loc[0] == "starts" and kind == "dict_type":
            got = kind_of(err.get("input"))
            return f"starts[{loc[1]}]: expected a mapping of param paths to values; got {got}"
        if kind in ("dict_type", "model_attributes_type"):
            return f"{key}: expected a mapping of dotted config paths; got {kind_of(err.get('input'))}"
        return f"{key}: {msg}; got {err.get('input')!r}"

    key = f"params.{loc[1]}"
    if kind == "union_tag_invalid":
        tag = err.get("ctx", {}).get("tag")
        return f"{key}: unknown type '{tag}'; use one of: {', '.join(PARAM_TYPES)}"
    if kind == "union_tag_not_found":
        return f"{key}: missing type; add type: {' | '.join(PARAM_TYPES)}"
    if kind in ("model_attributes_type", "dict_type", "model_type"):
        return (
            f"{key}: expected a mapping such as {{type: float, low: 0.1, high: 1.0}}; "
            f"got {err.get('input')!r} (to set one value for every trial, move it under fixed)"
        )
    tag, field = loc[2], [str(p) for p in loc[3:]]
    if not field:
        return f"{key}: {msg}"
    name = ".".join(field)
    allowed = sorted(PARAM_TYPES[str(tag)].model_fields, key=_KEY_ORDER.index)
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
