"""Pre-flight checks of `hpo study create`: refuse inputs on which every trial would fail, before any
worker starts, and put the pretrained weights the trials load in the cache.

Workers would otherwise fail trial after trial and never reach the budget on: an unknown model, or one
that takes no dropout the space sets; images smaller than a model needs; too few images or groups per
class for the folds.

The checks import none of the training stack (torch, timm, scikit-learn: seconds that every trial
process pays anyway) when they need not. Folds are checked with numpy alone
(:func:`training.folds.check_folds`). What a model needs is a fact of the model and the installed
timm and torch: the smallest image side it takes with or without dropout and drop path. Those facts
come from a table shipped for the models of the shipped spaces (:mod:`hpo.study._model_facts`), then
from a per-user cache (``$XDG_CACHE_HOME/foldtune``, one file per timm and torch version) of the facts
earlier checks learned. Only a model, dropout use and versions found in neither is built, on the meta
device as before, and what it showed is added to the cache. A fact that refuses the space is never
trusted: the model is built again, so every refusal reads as the build itself reports it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from hpo.space import SearchSpace, load_space, shipped_spaces
from hpo.study._model_facts import MIN_SIZES, TIMM, TORCH
from training.config import ConfigError, RunConfig, apply_overrides
from training.data import ImageTable
from training.folds import check_folds

__all__ = [
    "ModelFacts",
    "fact_key",
    "installed_versions",
    "learn_min_sizes",
    "preflight",
    "shipped_min_sizes",
    "user_cache_dir",
]

log = logging.getLogger(__name__)

DROP_KEYS = ("model.drop_rate", "model.drop_path_rate")


def preflight(
    space: SearchSpace, base: RunConfig, table: ImageTable, *, space_arg: str, data_arg: str
) -> list[dict]:
    """Raise a ConfigError naming ``--space``/``--data`` when no trial of ``space`` on ``table`` can
    run; else fetch the pretrained weights trials can load and return them as stored in the study."""
    for folds in space.values_of("cv.folds", base):
        try:
            check_folds(table.labels, table.groups, folds, base.cv.seed, classes=table.classes)
        except ConfigError as exc:
            raise ConfigError(f"--data {data_arg} with {folds} folds: {exc}") from None
    _check_models(space, base, len(table.classes), space_arg=space_arg)
    return _fetch_weights(space, base, space_arg=space_arg)


def installed_versions() -> tuple[str, str]:
    """(timm, torch) as installed, read from their package metadata without importing them."""
    return version("timm"), version("torch")


@dataclass
class ModelFacts:
    """Smallest image side per (model name, uses dropout, uses drop path), for one timm and torch."""

    versions: tuple[str, str]
    cache_dir: Path  # the per-user cache: one file per versions
    min_sizes: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, *, versions: tuple[str, str] | None = None, cache_dir: Path | None = None) -> ModelFacts:
        """The shipped facts when made with ``versions`` (default: installed), plus the user cache's."""
        versions = versions or installed_versions()
        cache_dir = cache_dir or user_cache_dir()
        facts = cls(versions, cache_dir)
        if versions == (TIMM, TORCH):
            facts.min_sizes.update(MIN_SIZES)
        with contextlib.suppress(OSError, ValueError):  # none yet, or unreadable: learn again
            facts.min_sizes.update(json.loads(facts.cache_file().read_text()))
        return facts

    def cache_file(self) -> Path:
        timm, torch = self.versions
        return self.cache_dir / f"model-facts-timm{timm}-torch{torch}.json"

    def fits(self, name: str, drop: dict[str, float], image_size: int) -> bool:
        """True when the facts say ``name`` builds with ``drop`` and takes ``image_size`` px."""
        smallest = self.min_sizes.get(fact_key(name, drop))
        return smallest is not None and image_size >= smallest

    def remember(self, learned: dict[str, int]) -> None:
        """Add ``learned`` to the user cache; a cache that cannot be written is skipped, not an error."""
        self.min_sizes.update(learned)
        path = self.cache_file()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            known = json.loads(path.read_text()) if path.exists() else {}
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({**known, **learned}, indent=0, sort_keys=True))
            os.replace(tmp, path)  # a concurrent create reads the old file or the new, never half of one
        except (OSError, ValueError) as exc:
            log.debug("model facts not cached in %s: %s", path, exc)


def user_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "foldtune"


def fact_key(name: str, drop: dict[str, float]) -> str:
    """Facts differ only by whether a dropout kind is used (a model without it rejects any rate)."""
    rate, path = (int(drop[key] > 0) for key in DROP_KEYS)
    return f"{name} drop_rate={rate} drop_path_rate={path}"


def learn_min_sizes(
    names: list[str],
    drop: dict[str, float],
    num_classes: int,
    *,
    base: RunConfig,
    where: str,
    image_size: int | None = None,
) -> dict[str, int]:
    """Build each model of ``names`` with ``drop`` on the meta device (the architecture only: no memory,
    no weights); returns the smallest image side of each by :func:`fact_key`.

    Raises:
        ConfigError: an unknown model, one rejecting a dropout kind ``drop`` uses, or one that needs
            more than ``image_size`` px.
    """
    import torch

    from training.models import build_model, check_image_size, min_input_size

    learned = {}
    for name in names:
        cfg = apply_overrides(base, {"model.name": name, "model.pretrained": False, **drop}, where=where)
        with torch.device("meta"):
            model = build_model(cfg.model, num_classes)
        learned[fact_key(name, drop)] = min_input_size(model)
        if image_size is not None:
            check_image_size(model, name, image_size)
    return learned


def shipped_min_sizes() -> dict[str, int]:
    """The facts of every model, with the dropout use, of the shipped spaces (what
    :mod:`hpo.study._model_facts` holds), learned from the installed timm and torch."""
    learned: dict[str, int] = {}
    for name in shipped_spaces():
        space = load_space(name)
        base = space.resolve(RunConfig(), {})
        drop = {key: max(space.values_of(key, base)) for key in DROP_KEYS}
        learned |= learn_min_sizes(space.values_of("model.name", base), drop, 2, base=base, where=name)
    return dict(sorted(learned.items()))


def _check_models(space: SearchSpace, base: RunConfig, num_classes: int, *, space_arg: str) -> None:
    smallest = min(space.values_of("data.image_size", base))
    # the highest dropout rates a trial can draw: a model without dropout (or drop path) rejects any
    drop = {key: max(space.values_of(key, base)) for key in DROP_KEYS}
    facts = ModelFacts.load()
    unsure = [name for name in space.values_of("model.name", base) if not facts.fits(name, drop, smallest)]
    if not unsure:
        return
    where = f"--space {space_arg}"
    try:
        learned = learn_min_sizes(unsure, drop, num_classes, base=base, where=where, image_size=smallest)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    facts.remember(learned)


def _fetch_weights(space: SearchSpace, base: RunConfig, *, space_arg: str) -> list[dict]:
    """The pretrained weights trials can load, put in the cache now (downloaded here, once, when
    they are not there) so that a worker finds them all and runs its trials offline."""
    names = space.pretrained_models(base)
    if not names:
        return []
    from training.weights import fetch, weights_for

    found = []
    for name in names:
        try:
            fetched = fetch(weights_for(name), fix=f"hpo weights fetch --space {space_arg}")
        except ConfigError as exc:
            raise ConfigError(f"--space {space_arg}: {exc}") from None
        if fetched.downloaded:
            log.info("downloaded the pretrained weights of %s to %s", name, fetched.path)
        found.append(fetched.weights.to_dict())
    return found


def write_shipped_facts(path: Path = Path(__file__).with_name("_model_facts.py")) -> None:
    """Rewrite :mod:`hpo.study._model_facts` with the installed versions and their facts."""
    text = path.read_text()
    head = text[: text.index("\nTIMM = ")]
    timm, torch = installed_versions()
    rows = "".join(f"    {json.dumps(key)}: {size},\n" for key, size in shipped_min_sizes().items())
    path.write_text(f'{head}\nTIMM = "{timm}"\nTORCH = "{torch}"\nMIN_SIZES: dict[str, int] = {{\n{rows}}}\n')
