"""benchmarks/README.md's table, rebuilt from the JSON files in benchmarks/results/.

Each result file is read by the summarizer of its benchmark (matched by file name) into :class:`Row`
lines of benchmark, setup, result, goal and whether the goal is met; a result's own rows are read by
their column names (:func:`benchmarks.common.records`), so each format is named once, where the
benchmark writes it. The table, under a line saying where the numbers come from, replaces what stands
between the two markers; the rest of the file is kept. Results that the latest ``python -m benchmarks``
did not write (GPU runs, full-size runs) say "recorded <date>" in their setup. The file is written to a
temp file and renamed into place.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks.common import records

__all__ = ["END", "START", "SUITE", "Row", "render", "table_rows", "update_readme"]

START = "<!-- benchmarks:start -->"
END = "<!-- benchmarks:end -->"
SUITE = "suite"  # results/suite.json: what `python -m benchmarks` ran, how long, on which machine
TIMES = "\N{MULTIPLICATION SIGN}"


class Row(NamedTuple):
    """One line of the table; its field names are the table's header."""

    benchmark: str
    setup: str
    result: str
    goal: str
    met: str  # yes | no | — (no goal)


Summarizer = Callable[[dict[str, Any], str], list[Row]]  # (payload, where it ran) -> rows


def _met(ok: bool | None) -> str:
    return "—" if ok is None else ("yes" if ok else "no")


def _throughput(payload: dict[str, Any], where: str) -> list[Row]:
    rows = []
    for row in records(payload):
        ratio, goal = row["ratio"], row["goal"]
        fit = row["comparison"].startswith("fit")
        rows.append(
            Row(
                benchmark="`fit` vs a bare timm loop" if fit else "cached vs decode-per-epoch loader",
                setup=f"{where}, {row['setup']}",
                result=f"{ratio:.2f}{TIMES}",
                goal=f"≥ {goal:g}{TIMES}",
                met=_met(ratio >= goal),
            )
        )
    return rows


_STORAGE_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "mariadb": "MariaDB", "journal": "journal"}


def _storage(payload: dict[str, Any], where: str) -> list[Row]:
    runs = [r for r in payload["runs"] if r["status"] == "ok"]
    trials, real_s, goal = payload["args"]["trials"], payload["real_trial_s"], payload["overhead_goal"]

    def pick(variant: str, workers: int) -> dict[str, dict[str, Any]]:
        return {r["storage"]: r for r in runs if r["variant"] == variant and r["workers"] == workers}

    ours1, ours4, plain4 = pick("foldtune", 1), pick("foldtune", 4), pick("plain", 4)
    shares = {s: r["overhead_ms"]["p50"] / 1000 / real_s for s, r in ours1.items()}
    ratios = {s: r["trials_per_s"] / plain4[s]["trials_per_s"] for s, r in ours4.items() if s in plain4}
    ours = [r for r in payload["runs"] if r["variant"] == "foldtune"]
    exact = sum(r["status"] == "ok" and r["finished"] == r["trials"] for r in ours)
    workers = sorted({r["workers"] for r in ours})
    return [
        Row(
            benchmark="budget overhead per trial, 1 worker",
            setup=f"{where}, {trials} cheap trials, p50 on {_names(shares)}",
            result=" / ".join(f"{100 * v:.2f}" for v in shares.values()) + f" % of a {real_s:g} s trial",
            goal=f"≤ {100 * goal:g} %",
            met=_met(bool(shares) and max(shares.values()) <= goal),
        ),
        Row(
            benchmark="trials/s vs plain Optuna, 4 workers",
            setup=f"{where}, {trials} cheap trials, {_names(ratios)}",
            result=" / ".join(f"{v:.2f}" for v in ratios.values()) + TIMES,
            goal="—",
            met=_met(None),
        ),
        Row(
            benchmark="budget kept: exactly M trials finish",
            setup=f"{where}, M = {trials}, {len(ours)} runs: {len(_STORAGE_NAMES)} storages {TIMES} "
            f"{'/'.join(map(str, workers))} workers",
            result=f"{exact} of {len(ours)} runs",
            goal="all",
            met=_met(exact == len(ours)),
        ),
    ]


def _study_size(payload: dict[str, Any], where: str) -> list[Row]:
    real_s, trials = payload["real_trial_s"], payload["args"]["trials"]
    ours = [r for r in payload["runs"] if r["variant"] == "foldtune" and r["status"] == "ok"]
    rows = []
    for size in sorted({r["size"] for r in ours}):
        shares = {r["storage"]: r["overhead_ms"]["p50"] / 1000 / real_s for r in ours if r["size"] == size}
        rows.append(
            Row(
                benchmark=f"overhead per trial after {size:,} trials",
                setup=f"{where}, {trials} trials joining the history, TPE, p50 on {_names(shares)}",
                result=" / ".join(f"{100 * v:.2f}" for v in shares.values()) + f" % of a {real_s:g} s trial",
                goal="—",
                met=_met(None),
            )
        )
    return rows


def _names(by_storage: dict[str, Any]) -> str:
    return " / ".join(_STORAGE_NAMES.get(s, s) for s in by_storage)


def _pruning(payload: dict[str, Any], where: str) -> list[Row]:
    goal = payload["goal"]
    rows = []
    for pruner, s in payload["summary"].items():
        if pruner == "none":
            continue
        (ratio, ratio_sd), (diff, diff_sd) = s["epochs_ratio"], s["f1_diff"]
        rows.append(
            Row(
                benchmark=f"pruner {pruner} vs none",
                setup=f"{where}, {payload['setup']}",
                result=f"epochs {ratio:.2f} ± {ratio_sd:.2f}{TIMES}, best F1 {diff:+.3f} ± {diff_sd:.3f}",
                goal=f"≤ {goal['epochs_ratio_at_most']:.2f}{TIMES} epochs, F1 within {goal['f1_within']:g}",
                met=_met(s["goal_met"]),
            )
        )
    return rows


def _search(payload: dict[str, Any], where: str) -> list[Row]:
    s = payload["summary"]
    (tpe, tpe_sd), (rnd, rnd_sd) = s["tpe"]["best_f1"], s["random"]["best_f1"]
    return [
        Row(
            benchmark="TPE vs random, equal epoch budget",
            setup=f"{where}, {payload['setup']}",
            result=f"best F1 {tpe:.3f} ± {tpe_sd:.3f} vs {rnd:.3f} ± {rnd_sd:.3f}",
            goal="TPE ≥ random",
            met=_met(payload["goal_met"]),
        )
    ]


_PEER_NAMES = {"foldtune": "foldtune", "ray": "Ray Tune", "optuna": "plain Optuna"}


def _peers(payload: dict[str, Any], where: str) -> list[Row]:
    goal = payload["goal"]
    goal_text = (
        f"≤ {goal['ratio_at_most']:.2f}{TIMES} the fastest peer's time, "
        f"F1 within {goal['f1_tol']:g} of the best peer's or above"
    )
    rows = []
    for name, data in payload["datasets"].items():
        title = "foldtune vs " + " and ".join(_PEER_NAMES.get(p, p) for p in payload["args"]["peers"][1:])
        start = payload.get("loadavg", {}).get("start")
        load = "" if start is None else f", load average {start:.1f} at start"
        quick = "--quick smoke run, " if payload.get("quick") else ""
        if "skipped" in data:
            rows.append(
                Row(
                    benchmark=title,
                    setup=f"{where}, {name}",
                    result=f"skipped: {data['skipped']}",
                    goal=goal_text,
                    met=_met(None),
                )
            )
            continue
        s, images = data["summary"], data["images"]
        peers = s["peers"]
        times = " / ".join(
            f"{_PEER_NAMES.get(p, p)} "
            + ("never" if v["median_time_s"] is None else f"{v['median_time_s']:.0f} s")
            for p, v in peers.items()
        )
        ratio = s["ratio_median"]
        ratio_text = "never" if ratio is None else f"{'< ' if s['ratio_is_bound'] else ''}{ratio:.2f}{TIMES}"
        finals = " / ".join(
            "-" if v["final_f1"][0] is None else f"{v['final_f1'][0]:.3f} ± {v['final_f1'][1]:.3f}"
            for v in peers.values()
        )
        rows.append(
            Row(
                benchmark=title,
                setup=f"{where}, {quick}{name} ({images['search']} search / {images['holdout']} held-out "
                f"images), {payload['setup']}{load}",
                result=f"time to the best final F1 (median): {times}, ratio {ratio_text}; "
                f"held-out F1 {finals}; goal held in {s['seeds_goal_met']} of {len(s['seeds'])} seeds",
                goal=goal_text,
                met=_met(s["goal_met"]),
            )
        )
    return rows


def _load_text(payload: dict[str, Any]) -> str:
    """ ", load average L at start" from a result's 1/5/15-minute ``loadavg_start`` text, if it has one."""
    load = payload.get("loadavg_start")
    return "" if not load else f", load average {float(str(load).split()[0]):.1f} at start"


def _fleet(payload: dict[str, Any], where: str) -> list[Row]:
    rows = []
    quick = "--quick, " if payload.get("quick") else ""
    where += _load_text(payload)
    if sharing := payload.get("sharing"):
        shared, pooled = (sharing["variants"][name] for name in ("two cpu", "one cpu:2"))
        rows.append(
            Row(
                benchmark="two `hpo worker --devices cpu` vs one `--devices cpu:2`, aggregate images/s",
                setup=f"{where}, {quick}{payload['setup']}",
                result=f"{sharing['ratio']:.2f}{TIMES} ({shared['median_images_per_s']:.0f} vs "
                f"{pooled['median_images_per_s']:.0f} images/s; wall {shared['median_wall_s']:.0f} vs "
                f"{pooled['median_wall_s']:.0f} s)",
                goal=f"≥ {sharing['goal']:g}{TIMES}",
                met=_met(sharing["goal_met"]),
            )
        )
    if cli := payload.get("cli"):
        times, base = cli["times"], cli["times"]["import typer, rich"]["median_s"]
        helps = times["hpo --help"]
        heavy = sorted({m for probe in cli["modules"].values() for m in probe["heavy"]})
        status = times.get("hpo status")
        rows.append(
            Row(
                benchmark='CLI start: `hpo --help` vs `python -c "import typer, rich"`',
                setup=f"{where}, {quick}median of {cli['runs']} runs, same interpreter",
                result=f"{helps['ratio']:.1f}{TIMES} ({helps['median_s']:.2f} vs {base:.2f} s)"
                + (
                    ""
                    if status is None
                    else f"; `hpo status` {status['median_s']:.2f} s ({status['ratio']:.1f}{TIMES})"
                )
                + f"; heavy modules loaded: {', '.join(heavy) or 'none'}",
                goal="none of torch, mlflow, timm, albumentations, cv2 loaded",
                met=_met(not heavy),
            )
        )
    return rows


def _scale(payload: dict[str, Any], where: str) -> list[Row]:
    rows = []
    quick = "--quick, " if payload.get("quick") else ""
    where += _load_text(payload)
    data = "generated 384x512 JPEG portraits"
    if cache := payload.get("cache"):
        rates = cache["images_per_s"]
        rows.append(
            Row(
                benchmark="decoded-cache build, all cores vs one",
                setup=f"{where}, {quick}{cache['images']:,} {data} -> {payload['cache_size']} px, "
                f"`training.cache.load_images`, {cache['threads']} threads vs 1, "
                f"best of {cache.get('rounds', 1)} runs each, files in the page cache",
                result=f"{cache['speedup']:.2f}{TIMES} "
                f"({rates[str(cache['threads'])]:.0f} vs {rates['1']:.0f} images/s)",
                goal="—",
                met=_met(None),
            )
        )
    goal = payload["check_goal"]
    for check in payload.get("check", []):
        images = check.get("images", 0)
        gated = images == goal["images"]
        rows.append(
            Row(
                benchmark=f"`hpo data check`, {images:,} images",
                setup=f"{where}, {quick}{check['persons']:,} persons x 7 {data}",
                result=check.get("note")
                or f"{check['wall_s']:.0f} s, peak RSS {check['peak_rss_mb'] / 1024:.2f} GB, "
                f"{check['errors']} errors, {check['warnings']} warnings",
                goal=f"peak < {goal['peak_gb_below']:g} GB" if gated else "—",
                met=_met(check["peak_rss_mb"] / 1024 < goal["peak_gb_below"] if gated else None),
            )
        )
    study = payload.get("status")
    if study:
        setup = f"{where}, {quick}SQLite, {study['trials']:,} finished trials"
        if "times" not in study:
            rows.append(
                Row(
                    benchmark=f"`hpo status`, {study['trials']:,} trials",
                    setup=setup,
                    result=study["note"],
                    goal="—",
                    met=_met(None),
                )
            )
            return rows
        times = study["times"]
        runs, helps = len(times["hpo status"]["runs_s"]), times["hpo --help"]["median_s"]
        for name in ("hpo status", "hpo study list"):
            if name in times:
                rows.append(
                    Row(
                        benchmark=f"`{name}`, {study['trials']:,} trials",
                        setup=f"{setup}, median of {runs} runs",
                        result=f"{times[name]['median_s']:.2f} s "
                        f"({times[name]['median_s'] / helps:.1f}{TIMES} `hpo --help`, {helps:.2f} s)"
                        + (
                            f", peak RSS {study['status_peak_rss_mb']:.0f} MB" if name == "hpo status" else ""
                        ),
                        goal="—",
                        met=_met(None),
                    )
                )
        if study.get("study_list"):  # not a code span: the docs' code spans name only commands the CLI has
            rows.append(
                Row(
                    benchmark=f"hpo study list, {study['trials']:,} trials",
                    setup=setup,
                    result=study["study_list"],
                    goal="—",
                    met=_met(None),
                )
            )
    return rows


def _techniques(payload: dict[str, Any], where: str) -> list[Row]:
    rows, versus = payload["summary"]["rows"], payload["summary"]["comparisons"]
    setup = f"{where}, {'--quick, ' if payload.get('quick') else ''}{payload['setup']}"
    goal = "a gain beyond the spread over seeds"

    def pm(pair: list[float], sign: str = "") -> str:
        return f"{pair[0]:{sign}.3f} ± {pair[1]:.3f}"

    attributes = ", ".join(f"{name} {pm(f1)}" for name, f1 in payload["baseline_attribute_f1"].items())
    table = [
        Row(
            benchmark="techniques: baseline, OOF macro-F1",
            setup=setup,
            result=f"{pm(rows['baseline']['f1'])} ({attributes})",
            goal="—",
            met="—",
        )
    ]
    bound = "— (an upper bound: fitted or picked on the images it is scored on)"
    for name, row in rows.items():
        if name.startswith("+ "):
            result = f"{pm(row['f1'])}, {pm(row['diff'], '+')} vs baseline: {row['verdict']}"
            judged = "(in-sample)" not in name
            table.append(
                Row(
                    benchmark=f"technique {name} vs baseline",
                    setup=setup,
                    result=result,
                    goal=goal if judged else bound,
                    met=_met(row["verdict"] == "helps" if judged else None),
                )
            )
    for pick in ("held-out pick", "OOF pick"):
        ensemble = next(
            name for name in rows if name.startswith("hill-climbed of") and name.endswith(f"({pick})")
        )
        against = {key.split(" - ")[1]: v for key, v in versus.items() if key.startswith(f"{ensemble} - ")}
        others = "; ".join(
            f"{pm(v['diff'], '+')} vs {other.removesuffix(f' ({pick})')} "
            f"({pm(rows[other]['f1'])}): {v['verdict']}"
            for other, v in against.items()
        )
        table.append(
            Row(
                benchmark=f"{ensemble.removesuffix(f' ({pick})')} ensemble, {pick}",
                setup=setup,
                result=f"{pm(rows[ensemble]['f1'])}; {others}",
                goal=f"{goal} over both" if pick == "held-out pick" else bound,
                met=_met(
                    all(v["verdict"] == "helps" for v in against.values())
                    if pick == "held-out pick"
                    else None
                ),
            )
        )
    return table


def _cost_overhead(payload: dict[str, Any], where: str) -> list[Row]:
    trials = records(payload)
    share = payload["max_share"]
    return [
        Row(
            benchmark="measuring a trial's serving cost",
            setup=f"{where}, quick space, {len(trials)} trial(s), load average {payload['loadavg']}",
            result=f"{share:.2%} of the trial (largest)",
            goal="< 2 %",
            met=_met(share < 0.02),
        )
    ]


# In table order; a result file belongs to the first name its file name starts with.
SUMMARIZERS: dict[str, Summarizer] = {
    "train_throughput": _throughput,
    "storage_overhead": _storage,
    "study_size": _study_size,
    "cost_overhead": _cost_overhead,
    "pruning": _pruning,
    "search_quality": _search,
    "techniques": _techniques,
    "peers": _peers,
    "fleet": _fleet,
    "scale": _scale,
}


def _where(machine: dict[str, Any], recorded: bool) -> str:
    device = machine.get("device", "cpu")
    where = f"{machine.get('cores', '?')}-core CPU" if device == "cpu" else device
    return f"{where} (recorded {machine.get('date', '?')})" if recorded else where


def table_rows(results: Path) -> list[Row]:
    """Rows of every known result file: summarizer order, then CPU before GPU, then file name."""
    suite = _suite(results)
    fresh = set(suite["results"]) if suite else None  # None: no suite run, nothing is marked
    found: list[tuple[int, bool, str, dict[str, Any]]] = []
    for path in results.glob("*.json"):
        kind = next((i for i, name in enumerate(SUMMARIZERS) if path.stem.startswith(name)), None)
        if kind is not None:
            payload = json.loads(path.read_text(encoding="utf-8"))
            found.append((kind, payload["machine"].get("device", "cpu") != "cpu", path.stem, payload))
    rows = []
    for kind, _, stem, payload in sorted(found, key=lambda item: item[:3]):
        where = _where(payload["machine"], recorded=fresh is not None and stem not in fresh)
        try:
            rows += list(SUMMARIZERS.values())[kind](payload, where)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ValueError(f"{results / stem}.json: not the layout its summarizer reads: {exc!r}") from None
    return rows


def _suite(results: Path) -> dict[str, Any] | None:
    path = results / f"{SUITE}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def render(results: Path) -> str:
    """The text between the markers: where the numbers come from, then the table."""
    lines = []
    suite = _suite(results)
    if suite:
        m = suite["machine"]
        device = m.get("device", "cpu")
        load = suite.get("loadavg_start")
        began = "" if load is None else f" (load average {load:.2f} when it began)"
        lines += [
            f"Latest `python -m benchmarks`: {m['date']}, {m['cpu']}, {m['cores']} cores{began}, "
            f"{suite['total_s'] / 60:.1f} min in all, {'no GPU' if device == 'cpu' else device}. "
            "Rows marked recorded come from earlier runs.",
            "",
        ]
    lines += ["| " + " | ".join(Row._fields) + " |", "|" + "---|" * len(Row._fields)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in table_rows(results)]
    return "\n".join(lines)


def update_readme(readme: Path, results: Path) -> None:
    """Replace the text between START and END in ``readme`` with :func:`render` of ``results``."""
    text = readme.read_text(encoding="utf-8")
    head, found_start, rest = text.partition(START)
    _, found_end, tail = rest.partition(END)
    if not found_start or not found_end:
        raise ValueError(f"{readme}: no '{START}' ... '{END}' pair; put the markers where the table goes")
    new = f"{head}{START}\n{render(results)}\n{END}{tail}"
    fd, tmp = tempfile.mkstemp(prefix=f".{readme.name}-", dir=readme.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(new)
        os.chmod(tmp, readme.stat().st_mode & 0o777)
        os.replace(tmp, readme)
    except BaseException:
        os.unlink(tmp)
        raise
