"""The k-fold comparison command: every round tests on its own speaker fold, and the table adds up."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from absl import app

from ser_jax import compare, paired

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["data.synthetic.n_speakers=6", "data.synthetic.utterances_per_emotion=1", "data.max_frames=100",
        "data.eval_bucket_frames=100", "features.n_mels=16", "model.channels=(4,)", "model.attention_dim=4",
        "model.attention_heads=2", "train.batch_size=8", "train.eval_batch_size=16", "train.num_epochs=1",
        "optim.warmup_steps=1", "inference.test_time_speeds=()"]  # One pass a clip: less to compile.


def test_three_fold_comparison_writes_per_fold_rows_and_the_mean(tmp_path):
    command = [sys.executable, "-m", "ser_jax.compare", "--corpus=synthetic", "--folds=3",
               "--configs=configs/cnn_only.py", f"--workdir={tmp_path}", *(f"--set={s}" for s in TINY)]
    first = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]

    with open(tmp_path / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["fold"]) for r in rows] == [0, 1, 2]
    ua = np.array([float(r["ua"]) for r in rows])
    assert ((0 <= ua) & (ua <= 1)).all()
    # Each round tests on its own fold: 2 speakers x 8 emotions, and a different speaker set each time.
    assert [int(r["test_examples"]) for r in rows] == [16, 16, 16]
    tested = []
    for r in rows:
        with open(os.path.join(r["workdir"], "model_info.json")) as f:
            tested.append(json.load(f)["corpora"][0]["splits"]["test"])
    assert tested == [["fold0"], ["fold1"], ["fold2"]]
    with open(tmp_path / "confusion_cnn_only.csv") as f:  # The three test folds pooled: every clip once.
        counts = np.array([row[1:] for row in list(csv.reader(f))[1:]], np.int64)
    assert counts.shape == (8, 8) and counts.sum() == 48 and (counts.sum(1) == 6).all()
    assert (tmp_path / "confusion_cnn_only.png").stat().st_size > 0
    table = (tmp_path / "comparison.md").read_text()
    assert f"{100 * ua.mean():.1f} ± {100 * ua.std(ddof=1):.1f}" in table

    # A second invocation finds every round done and rewrites the same table without training.
    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-3000:]
    assert (tmp_path / "comparison.md").read_text() == table
    assert "Validation after" not in second.stdout

    # Against a reference whose folds scored 1 and 3 points lower and 2 higher: the paired table.
    reference = tmp_path / "reference"
    reference.mkdir()
    with open(tmp_path / "results.jsonl") as f:
        runs = [json.loads(line) for line in f]
    with open(reference / "results.jsonl", "w") as f:
        for run, shift in zip(runs, (0.01, 0.03, -0.02)):
            f.write(json.dumps({**run, "config": "cnn_bilstm", "ua": run["ua"] - shift}) + "\n")
    third = subprocess.run(command + [f"--against={reference}"], cwd=REPO, capture_output=True, text=True)
    assert third.returncode == 0, third.stderr[-3000:]
    table = (tmp_path / "paired_cnn_only.md").read_text()
    assert table in third.stdout and f"cnn_only against {reference} (cnn_bilstm)" in table
    for fold, difference in enumerate(("+1.0", "+3.0", "-2.0")):
        assert f"| {fold} | 0 | {100 * ua[fold]:.1f} | {100 * ua[fold] - float(difference):.1f} | {difference} |" in table
    # Mean +0.67, sample std 2.52, t = 0.67 / (2.52 / sqrt 3) = 0.46, up on two folds, down on one.
    assert "| runs of the same fold and seed | 3 | +0.7 | -5.6 to +6.9 | 2 / 0 / 1 | 0.46 | 0.691 |" in table
    assert "folds, each side's mean" not in table  # Every run has its partner: it would say the same.
    with open(tmp_path / "paired_cnn_only.csv") as f:
        differences = [float(r["difference"]) for r in csv.DictReader(f)]
    np.testing.assert_allclose(differences, [0.01, 0.03, -0.02], atol=1e-9)


def _reference(path, runs):
    path.mkdir()
    with open(path / "results.jsonl", "w") as f:
        f.writelines(json.dumps({"config": c, "fold": fold, "seed": 0, "ua": 0.5}) + "\n" for c, fold in runs)
    return str(path)


def test_against_refuses_a_reference_it_cannot_pair_with_before_training(tmp_path):
    with pytest.raises(app.UsageError, match="results.jsonl does not exist"):
        compare.reference_runs(str(tmp_path / "nowhere"), [0, 1, 2])
    two = _reference(tmp_path / "two", [("cnn_only", 0), ("cnn_bilstm", 0)])
    with pytest.raises(app.UsageError, match=r"holds configs \['cnn_bilstm', 'cnn_only'\]; name one"):
        compare.reference_runs(two, [0, 1, 2])
    with pytest.raises(app.UsageError, match="no runs of config 'conformer'"):
        compare.reference_runs(two + ":conformer", [0, 1, 2])
    assert compare.reference_runs(two + ":cnn_only", [0])[0] == f"{two} (cnn_only)"
    with pytest.raises(app.UsageError, match=r"test folds \[0\], none of this comparison's \[1, 2\]"):
        compare.reference_runs(two + ":cnn_only", [1, 2])


def test_paired_summary_over_folds_uses_each_sides_seed_mean(tmp_path):
    runs = [{"fold": f, "seed": s, "ua": u} for f, s, u in ((0, 0, 0.60), (0, 1, 0.64), (1, 0, 0.50), (1, 1, 0.54))]
    reference = [{"fold": 0, "seed": 0, "ua": 0.60}, {"fold": 1, "seed": 0, "ua": 0.50}]
    table = paired.write_paired_table(runs, reference, str(tmp_path / "p.md"), str(tmp_path / "p.csv"),
                                      name="lever", reference_name="recipe")
    # Seed 1 has no reference run: the matched pairs are the two seed-0 runs, both level.
    assert "| runs of the same fold and seed | 2 | +0.0 | n/a | 0 / 2 / 0 | n/a | n/a |" in table
    # Fold means: +2 points on each fold, with no spread: no t, and up on both.
    assert "| folds, each side's mean over its seeds | 2 | +2.0 | n/a | 2 / 0 / 0 | n/a | n/a |" in table
    with pytest.raises(ValueError, match="share no test fold"):
        paired.write_paired_table(runs, [{"fold": 5, "seed": 0, "ua": 0.5}], str(tmp_path / "q.md"),
                                  str(tmp_path / "q.csv"), name="lever", reference_name="recipe")
