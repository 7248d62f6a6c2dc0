"""Seed ensembles scored from their runs' predictions.csv files, and their rows in the comparison."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from ser_jax.compare import ensemble_rows
from ser_jax.ensemble import FIXED_COLUMNS, ensemble_metrics, pooled_metrics
from ser_jax.reports import write_comparison_table

CLASSES = ["angry", "calm", "sad"]
TRUTH = {"a.wav": "angry", "b.wav": "calm", "c.wav": "sad", "d.wav": "sad"}


def _write(path, probabilities: dict[str, list[float]], truth=TRUTH, classes=CLASSES) -> str:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*FIXED_COLUMNS, *classes])
        for clip, p in probabilities.items():
            w.writerow([clip, "ravdess/01", "male", "ravdess", truth[clip], classes[int(np.argmax(p))], *p])
    return str(path)


# Each run alone gets two of four clips right; their mean gets all four.
RUN_A = {"a.wav": [0.6, 0.4, 0.0], "b.wav": [0.0, 0.9, 0.1], "c.wav": [0.55, 0.0, 0.45], "d.wav": [0.0, 0.55, 0.45]}
RUN_B = {"a.wav": [0.45, 0.55, 0.0], "b.wav": [0.6, 0.4, 0.0], "c.wav": [0.0, 0.1, 0.9], "d.wav": [0.2, 0.0, 0.8]}


def test_the_mean_of_the_probabilities_is_scored(tmp_path):
    a, b = _write(tmp_path / "a.csv", RUN_A), _write(tmp_path / "b.csv", RUN_B)
    assert ensemble_metrics([a])["accuracy"] == 0.5
    assert ensemble_metrics([b])["accuracy"] == 0.5
    both = ensemble_metrics([a, b])
    assert both["accuracy"] == 1.0 and both["ua"] == 1.0 and both["num_examples"] == 4
    assert both["class_names"] == CLASSES


def test_runs_that_scored_different_clips_or_classes_are_refused(tmp_path):
    a = _write(tmp_path / "a.csv", RUN_A)
    fewer = _write(tmp_path / "fewer.csv", {k: v for k, v in RUN_B.items() if k != "d.wav"})
    with pytest.raises(ValueError, match="fewer.csv and .*a.csv did not score the same clips.*d.wav"):
        ensemble_metrics([a, fewer])
    reordered = _write(tmp_path / "reordered.csv", {k: v[::-1] for k, v in RUN_B.items()}, classes=CLASSES[::-1])
    with pytest.raises(ValueError, match="reordered.csv scores classes"):
        ensemble_metrics([a, reordered])
    bad = tmp_path / "bad.csv"
    bad.write_text("clip,label\nx,angry\n")
    with pytest.raises(ValueError, match="bad.csv: not a predictions.csv"):
        ensemble_metrics([str(bad)])
    short = tmp_path / "short.csv"
    short.write_text(",".join([*FIXED_COLUMNS, *CLASSES]) + "\na.wav,ravdess/01,male,ravdess,angry,angry,0.5\n")
    with pytest.raises(ValueError, match="short.csv, line 2: 7 fields, the header has 9"):
        ensemble_metrics([str(short)])


def test_comparison_gets_one_ensemble_row_per_config_and_fold_with_several_seeds(tmp_path):
    def row(config, fold, seed, probabilities, **extra):
        path = _write(tmp_path / f"{config}{fold}{seed}{bool(extra)}.csv", probabilities)
        return {"config": config, "fold": fold, "seed": seed, "accuracy": 0.5, "ua": 0.5, "seconds": 60.0,
                "workdir": str(tmp_path), "predictions": path, **extra}

    rows = [row("cnn", 0, 0, RUN_A), row("cnn", 0, 1, RUN_B), row("cnn", 1, 0, RUN_A),  # Fold 1: one seed.
            row("cnn", 0, 0, RUN_A, transductive=True), row("cnn", 0, 1, RUN_A, transductive=True)]
    ensembles = ensemble_rows(rows)
    assert [(r["config"], r["fold"], r["seed"], r["transductive"]) for r in ensembles] == [
        ("cnn (ensemble)", 0, "0+1", False), ("cnn (ensemble)", 0, "0+1", True)]
    assert ensembles[0]["ua"] == 1.0 and ensembles[0]["seconds"] == 120.0
    assert ensembles[1]["accuracy"] == 0.5  # Two copies of one run: the run itself.

    old = [{k: v for k, v in r.items() if k != "predictions"} for r in rows[:2]]
    assert ensemble_rows(old) == []  # Recorded before rows named their predictions: no ensemble, a warning.

    table = write_comparison_table(rows[:3] + ensembles[:1], str(tmp_path / "t.md"), str(tmp_path / "t.csv"))
    lines = table.splitlines()
    assert lines[3] == "| cnn (ensemble) | 1 | 2 | 100.0 ± n/a | 100.0 ± n/a | 2.0 |"


def test_several_configs_get_an_ensemble_row_of_all_their_runs_per_fold(tmp_path):
    def row(config, fold, seed, probabilities):
        path = _write(tmp_path / f"{config}{fold}{seed}.csv", probabilities)
        return {"config": config, "fold": fold, "seed": seed, "accuracy": 0.5, "ua": 0.5, "seconds": 60.0,
                "workdir": str(tmp_path), "predictions": path}

    rows = [row("cnn", 0, 0, RUN_A), row("conformer", 0, 0, RUN_B), row("cnn", 1, 0, RUN_B)]
    ensembles = ensemble_rows(rows)
    assert [(r["config"], r["fold"], r["seed"]) for r in ensembles] == [("cnn+conformer (ensemble)", 0, "0+0")]
    assert ensembles[0]["ua"] == 1.0  # Each model alone gets half the clips; together all four.


def test_pooling_counts_every_runs_clips_in_one_confusion_matrix(tmp_path):
    other_fold = {"e.wav": "angry", "f.wav": "calm"}
    a = _write(tmp_path / "a.csv", RUN_A)  # a, b right; c, d wrong.
    e = _write(tmp_path / "e.csv", {"e.wav": [0.9, 0.1, 0.0], "f.wav": [0.2, 0.1, 0.7]}, truth=other_fold)
    m = pooled_metrics([a, e])
    assert m["num_examples"] == 6 and m["accuracy"] == 3 / 6
    assert m["confusion"] == [[2, 0, 0], [0, 1, 1], [1, 1, 0]]  # Rows: true angry, calm, sad.
    assert m["ua"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    reordered = _write(tmp_path / "r.csv", {k: v[::-1] for k, v in RUN_B.items()}, classes=CLASSES[::-1])
    with pytest.raises(ValueError, match="r.csv scores classes"):
        pooled_metrics([a, reordered])
