"""The techniques benchmark: held-out picks never see the fold they score, differences are paired by
seed and judged against their spread, a real candidate run on sample-mask, and the README rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.readme import table_rows
from benchmarks.techniques import (
    CANDIDATES,
    CandidateRun,
    _best_single as best_single,
    heldout,
    in_sample,
    score_seed,
    summarize,
    train_candidate,
)


def one_hot(answers: np.ndarray, n_classes: int = 2) -> np.ndarray:
    return np.eye(n_classes)[answers]


def test_a_heldout_pick_is_judged_on_images_it_did_not_pick_on() -> None:
    # 3 folds of 4 images, both classes in each; A is right on folds 0 and 1, B on folds 0 and 2
    y = np.tile([0, 1], 6)
    folds = [np.arange(4 * k, 4 * k + 4) for k in range(3)]
    right = {"A": (0, 1), "B": (0, 2)}
    probs = [
        one_hot(np.concatenate([y[f] if k in right[name] else 1 - y[f] for k, f in enumerate(folds)]))
        for name in right
    ]

    # on all images both are right on 2 folds of 3; picked on the other folds, the pick is wrong on
    # folds 1 and 2 (fold 2: A is perfect on folds 0+1; fold 1: B is perfect on folds 0+2)
    assert in_sample(best_single, probs, y) == pytest.approx(2 / 3)
    assert heldout(best_single, probs, y, folds) == pytest.approx(1 / 3)


def run(seed: int, name: str, oof: np.ndarray, folds: list[np.ndarray]) -> CandidateRun:
    return CandidateRun(seed, name, oof, folds, [1] * len(folds), 1.0, 1.0)


def test_rows_are_paired_by_seed_judged_against_the_spread_and_reach_the_readme(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = np.tile(np.arange(3), 20)  # 3 classes: the class bias's coordinate ascent stays quick
    folds = np.array_split(np.arange(len(y)), 3)
    runs = [run(0, name, rng.dirichlet(np.ones(3), len(y)), folds) for name in CANDIDATES]
    scores = score_seed(runs, y)
    per_seed = {seed: dict(scores) for seed in (0, 1, 2)}  # every row of seed 0, three times
    # a technique a clear gain on every seed, another as noisy as the gain, one that always hurts
    for seed, noise in zip((0, 1, 2), (0.01, -0.05, 0.05), strict=True):
        per_seed[seed]["+ EMA"] = per_seed[seed]["baseline"] + 0.1 + noise
        per_seed[seed]["+ mixup/cutmix"] = per_seed[seed]["baseline"] + 10 * noise
        per_seed[seed]["lr 2e-2"] = per_seed[seed]["baseline"] - 0.2

    summary = summarize(per_seed, len(CANDIDATES))

    rows = summary["rows"]
    assert rows["+ EMA"]["diff"] == pytest.approx((0.1 + 0.01 / 3, np.std([0.01, -0.05, 0.05], ddof=1)))
    assert [rows[n]["verdict"] for n in ("+ EMA", "+ mixup/cutmix", "lr 2e-2")] == [
        "helps",
        "no clear gain",
        "hurts",
    ]
    # the hill-climbed blend never scores below the best single candidate on the OOF it picked on
    assert (
        summary["comparisons"]["hill-climbed of 6 (OOF pick) - best single of 6 (OOF pick)"]["diff"][0] >= 0
    )
    payload = {
        "machine": {"cpu": "Xeon", "cores": 2, "device": "cpu", "date": "2026-12-02"},
        "setup": "sample-mask, 3 folds",
        "baseline_attribute_f1": {"mask": [0.9, 0.01], "gender": [0.8, 0.02], "age": [0.7, 0.03]},
        "summary": summary,
    }
    (tmp_path / "techniques.json").write_text(json.dumps(payload))

    table = table_rows(tmp_path)

    assert [r[0] for r in table] == [
        "techniques: baseline, OOF macro-F1",
        "technique + mixup/cutmix vs baseline",
        "technique + EMA vs baseline",
        "technique + OOF bias (in-sample) vs baseline",
        "technique + OOF bias (held-out) vs baseline",
        "hill-climbed of 6 ensemble, held-out pick",
        "hill-climbed of 6 ensemble, OOF pick",
    ]
    assert table[0][2].endswith("(mask 0.900 ± 0.010, gender 0.800 ± 0.020, age 0.700 ± 0.030)")
    assert table[2][2].endswith("vs baseline: helps") and table[2][4] == "yes"
    assert table[1][4] == "no"
    assert table[3][4] == table[6][4] == "—"  # fitted or picked on the images they are scored on
    assert " vs best single of 6 (" in table[5][2] and " vs uniform top-3 of 6 (" in table[5][2]


def test_a_candidate_run_on_sample_mask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPO_SAMPLE_DIR", str(tmp_path / "sample"))

    result = train_candidate("+ EMA", 0, epochs=1, folds=2, cache_dir=str(tmp_path / "cache"))

    assert result.oof.shape == (1890, 18)
    assert np.allclose(result.oof.sum(axis=1), 1.0, atol=1e-4)  # every image predicted by one fold
    assert sorted(np.concatenate(result.folds).tolist()) == list(range(1890))
    assert result.best_epochs == [1, 1] and result.cpu_s > 0
