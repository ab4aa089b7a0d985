"""Loading search spaces: YAML files or the spaces shipped in ``search_spaces/``."""

from __future__ import annotations

import difflib
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from hpo.space._space import SearchSpace
from training.config import ConfigError

__all__ = ["load_space", "shipped_spaces"]

_SHIPPED_PACKAGE = "search_spaces"


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
