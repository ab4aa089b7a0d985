"""Where pretrained weights come from: timm's Hugging Face repo of a model, in the local cache or
downloaded once, as ``timm.create_model(name, pretrained=True)`` would on any user's machine.

The Hub is reached through huggingface_hub, so ``HF_HOME``/``HF_HUB_CACHE`` (where the cache is),
``HF_ENDPOINT`` (a mirror) and ``HF_HUB_OFFLINE`` apply as usual; all three are read when called,
not when huggingface_hub was imported. A model whose weights are cached never touches the network.
Before downloading, one request without retries asks the Hub for the file, so a machine that cannot
reach it fails within ``HF_HUB_ETAG_TIMEOUT`` seconds instead of retrying for half a minute.

    >>> weights = weights_for("test_resnet")        # doctest: +SKIP
    >>> fetch(weights).path                          # doctest: +SKIP

Only :func:`weights_for` imports timm (and so torch): the rest needs huggingface_hub alone.
"""

from __future__ import annotations

import difflib
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from httpx2 import HTTPError  # what huggingface_hub raises for network and HTTP failures alike
from huggingface_hub import (
    constants as hf_constants,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    try_to_load_from_cache,
)
from huggingface_hub.errors import (
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from training.config import ConfigError

__all__ = [
    "Fetched",
    "Weights",
    "cached_file",
    "check_model_name",
    "fetch",
    "hf_cache_dir",
    "hub_offline",
    "weights_for",
]

log = logging.getLogger(__name__)

# timm's order of preference for a repo without a named file: safetensors first, then the pickle
_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class Weights:
    """The pretrained weights of one timm model: a Hugging Face repo (most), else a download URL."""

    model: str  # the timm model name
    repo: str | None = None  # Hugging Face repo id, e.g. "timm/test_resnet.r160_in1k"
    revision: str | None = None  # None: the repo's main branch
    filenames: tuple[str, ...] = ()  # candidates in the repo, the preferred one first
    url: str | None = None  # for the few timm weights not on the Hub (torch hub cache)

    @property
    def where(self) -> str:
        return self.repo or str(self.url)

    def to_dict(self) -> dict[str, Any]:
        """JSON for a study's attrs: a worker checks the cache without importing timm."""
        return {key: list(value) if key == "filenames" else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Weights:
        return cls(**{**raw, "filenames": tuple(raw.get("filenames", ()))})


@dataclass(frozen=True)
class Fetched:
    weights: Weights
    path: Path  # the weights file in the cache
    downloaded: bool  # False: it was in the cache already

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def weights_for(name: str) -> Weights:
    """Where timm loads ``name``'s pretrained weights from (its default pretrained tag).

    Raises:
        ConfigError: timm has no such model, or no pretrained weights for it.
    """
    from timm.models import get_pretrained_cfg

    check_model_name(name)
    cfg = get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise ConfigError(
            f"model.pretrained: timm has no pretrained weights for '{name}'; "
            "set model.pretrained to a local weights file or to false"
        )
    if not cfg.hf_hub_id:
        return Weights(name, url=cfg.url)
    repo, _, revision = cfg.hf_hub_id.partition("@")
    filenames = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HF_WEIGHT_FILES
    return Weights(name, repo=repo, revision=revision or None, filenames=filenames)


def check_model_name(name: str) -> None:
    """Raise a ConfigError naming close matches when timm has no model ``name``."""
    import timm

    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models() for the names"
    raise ConfigError(f"model.name: unknown timm model '{name}'; {hint}")


def cached_file(weights: Weights) -> Path | None:
    """The weights file in the local cache, or None; never touches the network."""
    if weights.repo is None:
        checkpoint = _torch_hub_checkpoint(weights)
        return checkpoint if checkpoint.is_file() else None
    for filename in weights.filenames:
        found = try_to_load_from_cache(
            weights.repo, filename, cache_dir=hf_cache_dir(), revision=weights.revision
        )
        if isinstance(found, str):
            return Path(found)
    return None


def fetch(weights: Weights, *, fix: str | None = None) -> Fetched:
    """The cached weights file, downloading it first when it is not in the cache.

    ``fix`` is the command the error names for filling the cache (default ``hpo weights fetch MODEL``).

    Raises:
        ConfigError: not cached and the Hub is offline or unreachable, or it has no such weights.
    """
    if (path := cached_file(weights)) is not None:
        return Fetched(weights, path, downloaded=False)
    if hub_offline():
        raise _not_available(weights, "the Hub is offline (HF_HUB_OFFLINE=1)", fix)
    path = _download_url(weights, fix) if weights.repo is None else _download_hub(weights, fix)
    log.info("downloaded %s weights from %s to %s", weights.model, weights.where, path)
    return Fetched(weights, path, downloaded=True)


def hf_cache_dir() -> str:
    """The Hugging Face cache: HF_HUB_CACHE, else HF_HOME/hub, else huggingface_hub's default."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return hf_constants.HF_HUB_CACHE


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now, or as it was when huggingface_hub was imported."""
    return hf_constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {
        "1",
        "ON",
        "YES",
        "TRUE",
    }


def _endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or hf_constants.ENDPOINT).rstrip("/")


def _download_hub(weights: Weights, fix: str | None) -> Path:
    assert weights.repo is not None
    endpoint, timeout = _endpoint(), hf_constants.HF_HUB_ETAG_TIMEOUT
    for filename in weights.filenames:
        url = hf_hub_url(weights.repo, filename, revision=weights.revision, endpoint=endpoint)
        try:  # one quick request: hf_hub_download itself retries a dead endpoint for ~25 s
            get_hf_file_metadata(url, timeout=timeout)
        except RemoteEntryNotFoundError:
            continue  # timm falls back to the next file name, so do we
        except (RepositoryNotFoundError, RevisionNotFoundError):
            break
        except OfflineModeIsEnabled:
            raise _not_available(weights, "the Hub is offline (HF_HUB_OFFLINE=1)", fix) from None
        except HfHubHTTPError as exc:  # a server that is no Hub, or a Hub that refuses (401, 5xx)
            reason = f"the Hub at {endpoint} answered HTTP {exc.response.status_code} for {url}"
            raise _not_available(weights, reason, fix) from None
        except HTTPError as exc:
            reason = f"the Hub at {endpoint} is unreachable ({type(exc).__name__}: {_short(exc)})"
            raise _not_available(weights, reason, fix) from None
        path = hf_hub_download(
            weights.repo,
            filename,
            revision=weights.revision,
            cache_dir=hf_cache_dir(),
            endpoint=endpoint,
            etag_timeout=timeout,
        )
        return Path(path)
    raise ConfigError(
        f"model.pretrained: the Hub at {endpoint} has no weights for '{weights.model}' "
        f"({weights.repo}: none of {', '.join(weights.filenames)}); check HF_ENDPOINT, point "
        "model.pretrained at a local weights file, or set it to false"
    )


def _download_url(weights: Weights, fix: str | None) -> Path:
    import torch

    assert weights.url is not None
    checkpoint = _torch_hub_checkpoint(weights)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(weights.url, str(checkpoint), progress=False)
    except OSError as exc:  # urllib's URLError is an OSError
        raise _not_available(weights, f"{weights.url} is unreachable ({_short(exc)})", fix) from None
    return checkpoint


def _torch_hub_checkpoint(weights: Weights) -> Path:
    import torch

    assert weights.url is not None
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def _not_available(weights: Weights, reason: str, fix: str | None) -> ConfigError:
    cache = hf_cache_dir() if weights.repo else str(_torch_hub_checkpoint(weights).parent)
    fix = fix or f"hpo weights fetch {weights.model}"
    return ConfigError(
        f"model.pretrained: weights for '{weights.model}' ({weights.where}) are not in the cache "
        f"({cache}) and {reason}; run `{fix}` on a machine with internet, with the same HF_HOME, "
        "or set HF_ENDPOINT to a mirror"
    )


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:160] or type(exc).__name__
