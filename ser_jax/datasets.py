"""Which prepared dataset and splits a config trains on, preparing it first where the config allows.

This is the one place where ser_jax calls data_prep (imported only when a corpus is prepared):
everything else reads datasets through the contract in `ser_jax.dataset_format`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import ml_collections
from jax.experimental import multihost_utils

from ser_jax import dataset_format as fmt
from ser_jax.features import FeatureConfig
from ser_jax.input_pipeline import Dataset, open_dataset


def data_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
    return config.data.data_dir or os.path.join(workdir, "data")


def cross_validation_splits(fold_names: Sequence[str], test_fold: int) -> dict[str, list[str]]:
    """Train/validation/test split lists for one CV round: test = fold i, validation = fold i+1."""
    k = len(fold_names)
    if k < fmt.MIN_FOLDS:
        raise ValueError(f"cross-validation needs at least {fmt.MIN_FOLDS} folds (train, validation, test), got {k}")
    if not 0 <= test_fold < k:
        raise ValueError(f"data.test_fold={test_fold} is out of range for {k} folds")
    test, val = fold_names[test_fold], fold_names[(test_fold + 1) % k]
    return {"train": [f for f in fold_names if f not in (test, val)], "validation": [val], "test": [test]}


def _prepare(config: ml_collections.ConfigDict, root: str) -> None:
    from data_prep import builder  # Only a run that prepares its corpus needs the writer.

    d = config.data
    options = {k: v for k, v in d.synthetic.items() if v is not None} if d.corpus == "synthetic" else {}
    settings = builder.Settings(corpus=d.corpus, split="speaker", folds=d.folds or None, seed=d.split_seed,
                                features=FeatureConfig.from_mapping(config.features), reader_options=options)
    builder.prepare(settings, root, d.source_dir or None)


def training_dataset(config: ml_collections.ConfigDict, workdir: str) -> tuple[Dataset, dict[str, list[str]]]:
    """The dataset and {"train", "validation", "test"} split lists for this run.

    With `data.source_dir` set (or the synthetic corpus, which needs none) the corpus is prepared
    through data_prep first; that is a no-op when the dataset is already there. Impossible fold
    settings are refused before anything is prepared.
    """
    d = config.data
    config_name = fmt.config_name("speaker", d.folds or None)
    if d.folds:
        cross_validation_splits([fmt.fold_name(i) for i in range(d.folds)], d.test_fold)
    root = data_dir(config, workdir)
    if d.source_dir or d.corpus == "synthetic":
        if jax.process_index() == 0:  # One writer; the other processes wait for its dataset.
            _prepare(config, root)
        multihost_utils.sync_global_devices("ser_jax: training dataset prepared")
    dataset = open_dataset(root, d.corpus, config_name)
    if d.folds:
        folds = sorted(dataset.splits, key=lambda s: int(s.removeprefix("fold")))
        names = cross_validation_splits(folds, d.test_fold)
    else:
        names = {"train": [d.train_split], "validation": [d.validation_split], "test": [d.test_split]}
    return dataset, names
