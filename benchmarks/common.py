"""Shared benchmark plumbing: machine facts next to every number, a printed table, a JSON file."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": "cpu",
        "date": time.strftime("%Y-%m-%d"),
    }
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
    return info


def loadavg() -> str:
    """1/5/15-minute load averages: above the core count, other work shared the CPU."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def result_stem(name: str, *, data: list[str], quick: bool) -> str:
    """``name`` with ``_mask`` for a run on sample-mask alone and ``_quick`` for --quick, so a run on one
    data set or at one size never overwrites another's results file."""
    return name + ("_mask" if data == ["sample-mask"] else "") + ("_quick" if quick else "")


def report(name: str, title: str, columns: list[str], rows: list[list[Any]], extra: dict[str, Any]) -> Path:
    """Print ``rows`` as a table and write them with machine info to benchmarks/results/<name>.json."""
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row))
    Console().print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    payload = {"machine": machine_info(), "columns": columns, "rows": rows, **extra}
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(out)
    print(f"wrote {out}")
    return out


def records(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows :func:`report` wrote into ``payload``, each a dict keyed by its column name."""
    columns = payload["columns"]
    return [dict(zip(columns, row, strict=True)) for row in payload["rows"]]
