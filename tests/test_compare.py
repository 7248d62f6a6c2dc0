"""The k-fold comparison command: every round tests on its own speaker fold, and the table adds up."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np

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
