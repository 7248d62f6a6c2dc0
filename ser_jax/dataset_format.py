"""The contract between the writer (`data_prep`) and the readers (training, evaluation) of a dataset.

A prepared dataset is a TFDS ArrayRecord folder `<data_dir>/<corpus>/<config name>/<DATASET_VERSION>`
whose examples hold `mel` (frames, FeatureConfig.dim) float32 (the log-Mel bins, then the prosody
columns of `features.pitch`), `label` (an index into EMOTIONS), `duration` and
the TEXT_FIELDS, and whose metadata holds, under the keys below: the settings it was prepared with,
per-split feature statistics (frames, per-bin sum and sum of squares, in float64), per-split
emotion counts, the speakers of each split and the files that were skipped. Statistics are stored
per split, never as a ready-made mean, so a reader normalises with exactly the splits it trains on.

This module imports nothing else from ser_jax or data_prep: both sides build on it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

DATASET_VERSION = "1.0.0"

# One label vocabulary for every corpus, so that models and reports compare across corpora.
EMOTIONS: tuple[str, ...] = (
    "neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised", "boredom",
)
TEXT_FIELDS: tuple[str, ...] = ("corpus", "speaker", "gender", "text", "intensity", "path")

# Metadata keys.
SETTINGS, STATS, COUNTS, SPEAKERS, SKIPPED = "settings", "stats", "counts", "speakers", "skipped"

# TFDS reserves the split name "all" for "every split", so `--split=all` stores its one split as
# "full"; reading split "all" (through TFDS or ser_jax) then gives exactly that split.
SINGLE_SPLIT = "full"
MIN_FOLDS = 3  # Cross-validation needs a training, a validation and a test fold.


def config_name(split: str, folds: int | None) -> str:
    """The TFDS builder-config name: one dataset folder per way of splitting a corpus."""
    if split not in ("speaker", "all"):
        raise ValueError(f"--split must be 'speaker' or 'all', got {split!r}")
    if folds and split != "speaker":
        raise ValueError("--folds makes speaker folds; it cannot be combined with --split=all")
    if folds and folds < MIN_FOLDS:
        raise ValueError(f"--folds must be at least {MIN_FOLDS} (a training, a validation and a test fold), "
                         f"got {folds}")
    return f"folds{folds}" if folds else split


def dataset_dir(data_dir: str, corpus: str, config: str) -> str:
    return os.path.join(data_dir, corpus, config, DATASET_VERSION)


def fold_name(i: int) -> str:
    return f"fold{i}"


def normalization_from_stats(stats: Mapping[str, Mapping], split_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std per mel bin over the frames of `split_names`."""
    missing = [s for s in split_names if s not in stats]
    if missing:
        raise KeyError(f"no statistics for split(s) {missing}; the dataset has {sorted(stats)}")
    n = sum(stats[s]["frames"] for s in split_names)
    total = sum(np.asarray(stats[s]["sum"]) for s in split_names)
    total_sq = sum(np.asarray(stats[s]["sumsq"]) for s in split_names)
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean**2, 0.0))
    return mean.astype(np.float32), np.maximum(std, 1e-5).astype(np.float32)


def label_lookup(class_names: Sequence[str]) -> np.ndarray:
    """Stored label id -> model class id, -1 for emotions outside the model's label set."""
    table = np.full(len(EMOTIONS), -1, np.int32)
    for i, name in enumerate(class_names):
        table[EMOTIONS.index(name)] = i
    return table
