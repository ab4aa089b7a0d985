"""`hpo data report`: a small EDA page for a dataset - class balance, groups, image sizes, samples.

Everything goes into one folder: PNG charts (matplotlib's Agg canvas, no GUI, no global pyplot
state), one sample grid per class, and ``index.html`` with the tables. Every file is written to a
temp name and renamed into place, the page last, so a reader never sees half a file or a page that
points at charts not yet written.
"""

from __future__ import annotations

import html
import io
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from training.config import ConfigError
from training.data import ImageTable, load_table

__all__ = ["ReportFiles", "write_report"]

logger = logging.getLogger(__name__)

_MAX_BARS = 60  # bars per chart; the rest are summarised in the title
_MAX_ROWS = 50  # rows per HTML table
_GRID_COLUMNS = 4


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`write_report` wrote: the page and every PNG it references (relative to ``out``)."""

    out: Path
    html: Path
    images: tuple[str, ...]


def write_report(
    source: str | Path,
    out: str | Path,
    *,
    fmt: str = "auto",
    samples_per_class: int = 8,
    thumb_size: int = 96,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> ReportFiles:
    """Write the EDA report of the labeled dataset at ``source`` into the folder ``out``.

    ``progress(done, total)`` follows the image headers being read.

    Raises:
        ConfigError: the dataset does not load (run ``hpo data check`` for the full list), or ``out``
            cannot be written (disk full: what this run wrote is removed, a folder it made as well).
    """
    try:
        table = load_table(source, fmt)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (`hpo data check` lists every problem at once)") from None
    out = Path(out)
    created = _first_missing(out / "samples")
    try:
        (out / "samples").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out: cannot create {out} ({exc.strerror}); choose a writable folder") from None

    sizes = _image_sizes(table, progress)
    written: list[str] = []
    try:
        _write_files(table, source, sizes, out, written, samples_per_class, thumb_size, seed)
    except OSError as exc:  # disk full, quota: take back what this run wrote
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        for name in written:
            (out / name).unlink(missing_ok=True)
        raise ConfigError(
            f"--out: cannot write the report into {out} ({exc.strerror or exc}); free some space or "
            "choose another folder"
        ) from None
    logger.info("wrote %s with %d images", out / "index.html", len(written))
    return ReportFiles(out=out, html=out / "index.html", images=tuple(written))


def _write_files(
    table: ImageTable,
    source: str | Path,
    sizes: np.ndarray,
    out: Path,
    written: list[str],
    samples_per_class: int,
    thumb_size: int,
    seed: int,
) -> None:
    """Charts, sample grids, then the page; each name goes into ``written`` once it is in place."""
    counts = table.class_counts()

    def save(name: str, data: bytes) -> str:
        _atomic_write(out / name, data)
        written.append(name)
        return name

    balance = save("class_balance.png", _bar_chart(table.class_names, counts, "images per class", "images"))
    group_png, group_rows = None, []
    if table.groups is not None:
        group_png, group_rows = _group_section(table, save)
    size_png = save("image_sizes.png", _size_histogram(sizes))

    rng = np.random.default_rng(seed)
    grids = []
    for c in range(len(table.classes)):
        members = np.flatnonzero(table.labels == c)
        chosen = np.sort(rng.choice(members, size=min(samples_per_class, len(members)), replace=False))
        grids.append(save(f"samples/class_{c:03d}.png", _grid(table, chosen, thumb_size)))

    page = _page(
        table=table,
        source=str(source),
        counts=counts,
        sizes=sizes,
        balance=balance,
        group_png=group_png,
        group_rows=group_rows,
        size_png=size_png,
        grids=grids,
    )
    _atomic_write(out / "index.html", page.encode())


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def _image_sizes(table: ImageTable, progress: Callable[[int, int], None] | None) -> np.ndarray:
    """(N, 2) width, height from the file headers; -1 for files that do not open."""

    def size(i: int) -> tuple[int, int]:
        try:
            with Image.open(table.file(i)) as im:
                return im.size
        except (OSError, SyntaxError, ValueError):
            return (-1, -1)

    out = np.empty((len(table), 2), dtype=np.int64)
    with ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 1) + 4)) as pool:
        for i, wh in enumerate(pool.map(size, range(len(table)))):
            out[i] = wh
            if progress is not None:
                progress(i + 1, len(table))
    return out


def _group_section(table: ImageTable, save: Callable[[str, bytes], str]) -> tuple[str, list[tuple]]:
    groups = table.groups
    assert groups is not None
    per_group = Counter(groups.tolist())
    classes_of: dict[str, set[int]] = {}
    for g, label in zip(groups.tolist(), table.labels.tolist(), strict=True):
        classes_of.setdefault(g, set()).add(label)
    ordered = sorted(per_group.items(), key=lambda kv: (-kv[1], str(kv[0])))
    if len(ordered) <= _MAX_BARS:
        png = _bar_chart([str(g) for g, _ in ordered], [n for _, n in ordered], "images per group", "images")
    else:  # thousands of people: how many groups have 1, 2, 3... images
        sizes = Counter(per_group.values())
        keys = sorted(sizes)
        png = _bar_chart(
            [str(k) for k in keys], [sizes[k] for k in keys], "groups by number of images", "groups",
            horizontal=False, xlabel="images in the group",
        )  # fmt: skip
    rows = [
        (str(g), n, ", ".join(table.class_names[c] for c in sorted(classes_of[g])))
        for g, n in ordered[:_MAX_ROWS]
    ]
    return save("group_sizes.png", png), rows


# ---------------------------------------------------------------------------------------------
# Charts
# ---------------------------------------------------------------------------------------------


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _bar_chart(
    names, values, title: str, unit: str, *, horizontal: bool = True, xlabel: str | None = None
) -> bytes:
    names, values = [str(n) for n in names], [int(v) for v in values]
    if len(names) > _MAX_BARS:
        title += f" (first {_MAX_BARS} of {len(names)})"
        names, values = names[:_MAX_BARS], values[:_MAX_BARS]
    if horizontal:
        fig = _figure(7, 1.2 + 0.28 * len(names))
        ax = fig.add_subplot()
        ax.barh(range(len(names)), values, color="#4c72b0")
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        ax.set_xlabel(unit)
    else:
        fig = _figure(7, 3.5)
        ax = fig.add_subplot()
        ax.bar(range(len(names)), values, color="#4c72b0")
        ax.set_xticks(range(len(names)), names, rotation=90 if len(names) > 20 else 0)
        ax.set_xlabel(xlabel or "")
        ax.set_ylabel(unit)
    ax.set_title(title)
    return _png(fig)


def _size_histogram(sizes: np.ndarray) -> bytes:
    from matplotlib.ticker import MaxNLocator

    ok = sizes[sizes[:, 0] > 0]
    fig = _figure(9, 3.2)
    for k, (name, col) in enumerate((("width", 0), ("height", 1))):
        ax = fig.add_subplot(1, 2, k + 1)
        values = ok[:, col] if len(ok) else np.zeros(0)
        lo, hi = (int(values.min()), int(values.max())) if len(values) else (0, 1)
        ax.hist(values, bins=min(30, max(1, hi - lo + 1)), range=(lo - 0.5, hi + 0.5), color="#55a868")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"image {name} (px)")
        ax.set_xlabel(name)
        ax.set_ylabel("images")
    return _png(fig)


def _grid(table: ImageTable, indices: np.ndarray, size: int) -> bytes:
    """Thumbnails through the training decoder (so modes and EXIF rotation look as training sees them);
    files that do not decode show as a red tile."""
    from training.cache import decode_image

    cols = min(_GRID_COLUMNS, max(1, len(indices)))
    rows = max(1, -(-len(indices) // cols))
    pad = 4
    canvas = Image.new("RGB", (cols * (size + pad) + pad, rows * (size + pad) + pad), (255, 255, 255))
    for k, i in enumerate(indices):
        try:
            tile = Image.fromarray(decode_image(table.file(int(i)), size), "RGB")
        except ConfigError:
            tile = Image.new("RGB", (size, size), (200, 30, 30))
        canvas.paste(tile, (pad + (k % cols) * (size + pad), pad + (k // cols) * (size + pad)))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Page
# ---------------------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
td.n { text-align: right; }
img { max-width: 100%; }
.grid { display: inline-block; margin: 0 1.5em 1.5em 0; vertical-align: top; }
"""


def _page(
    *,
    table: ImageTable,
    source: str,
    counts: np.ndarray,
    sizes: np.ndarray,
    balance: str,
    group_png: str | None,
    group_rows: list[tuple],
    size_png: str,
    grids: list[str],
) -> str:
    e = html.escape
    total = len(table)
    n_groups = len(set(table.groups.tolist())) if table.groups is not None else None
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>foldtune data report: {e(source)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Data report</h1><p><code>{e(source)}</code>: {total} images, {len(table.classes)} classes"
        + (f", {n_groups} groups" if n_groups is not None else ", no groups (each image is its own)")
        + "</p>",
        "<h2>Class balance</h2>",
        _table(
            ("class", "images", "share"),
            [
                (name, int(n), f"{n / total:.1%}")
                for name, n in sorted(zip(table.class_names, counts, strict=True), key=lambda kv: -kv[1])
            ][:_MAX_ROWS],
        ),
        f'<img src="{e(balance)}" alt="images per class">',
        "<h2>Groups</h2>",
    ]
    if group_png is None:
        parts.append("<p>No group column: folds are stratified only.</p>")
    else:
        title = f"The {_MAX_ROWS} largest of {n_groups} groups:" if n_groups > _MAX_ROWS else "Every group:"
        parts += [
            f"<p>{e(title)}</p>",
            _table(("group", "images", "classes"), group_rows),
            f'<img src="{e(group_png)}" alt="images per group">',
        ]
    ok = sizes[sizes[:, 0] > 0]
    common = Counter(f"{w}x{h}" for w, h in ok.tolist()).most_common(10)
    parts += [
        "<h2>Image sizes</h2>",
        _table(("width x height", "images"), common),
        (f"<p>{total - len(ok)} file(s) could not be opened.</p>" if len(ok) < total else ""),
        f'<img src="{e(size_png)}" alt="image size histogram">',
        "<h2>Samples per class</h2>",
    ]
    for name, grid in zip(table.class_names, grids, strict=True):
        parts.append(
            f'<div class="grid"><h3>{e(name)}</h3><img src="{e(grid)}" alt="samples of {e(name)}"></div>'
        )
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _table(header: tuple[str, ...], rows: list[tuple]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{v}</td>' if isinstance(v, int | np.integer) else f"<td>{e(str(v))}</td>"
            for v in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet: what ``mkdir(parents=True)`` creates."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a report is meant to be read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
