"""`hpo weights fetch`: pretrained weights into the shared Hugging Face cache, once, before a study."""

from __future__ import annotations

from typing import Annotated

import typer

from hpo.cli._app import app, console, examples, user_errors
from hpo.errors import UserError

weights_app = typer.Typer(
    help="Pretrained weights: fill the Hugging Face cache (HF_HOME) before a study.", no_args_is_help=True
)
app.add_typer(weights_app, name="weights")


@weights_app.command(
    "fetch",
    epilog=examples(
        "# every model the space can load pretrained, into $HF_HOME, once",
        "hpo weights fetch --space competition",
        "# two models, from a mirror of the Hugging Face Hub",
        "HF_ENDPOINT=https://hf-mirror.example.com hpo weights fetch convnext_tiny",
    ),
)
@user_errors
def weights_fetch(
    models: Annotated[
        list[str] | None,
        typer.Argument(help="timm model names, e.g. resnet50 convnext_tiny.", show_default=False),
    ] = None,
    space: Annotated[
        str | None,
        typer.Option(
            help="A search space (YAML file or shipped name): every model its trials can load "
            "pretrained weights for.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Download the pretrained weights of each model once (cached ones are not downloaded again).

    One line per model: its repo, file, size, and cached or downloaded.
    Then `hpo study create` and the workers find them in the cache and run
    offline: one download per study instead of one per worker.
    HF_HOME (or HF_HUB_CACHE) says where the cache is; HF_ENDPOINT names a mirror
    of the Hugging Face Hub.
    """
    from training.weights import fetch, hf_cache_dir, weights_for

    if bool(models) == (space is not None):
        raise UserError("hpo weights fetch: give model names or --space, not both and not neither")
    names = list(dict.fromkeys(models)) if models else _space_models(space)
    fix = f"hpo weights fetch --space {space}" if space is not None else None
    if not names:
        console.print(f"the space {space} loads no pretrained weights (model.pretrained is never true)")
        return
    for name in names:
        fetched = fetch(weights_for(name), fix=fix)
        state = "downloaded" if fetched.downloaded else "cached"
        console.print(
            f"{name}  {fetched.weights.where}  {fetched.path.name}  {fetched.size / 1e6:.1f} MB  {state}",
            highlight=False,
        )
    console.print(f"cache: {hf_cache_dir()}", highlight=False)


def _space_models(space: str) -> list[str]:
    from hpo.space import load_space
    from training.config import RunConfig

    loaded = load_space(space)
    return loaded.pretrained_models(loaded.resolve(RunConfig(), {}))
