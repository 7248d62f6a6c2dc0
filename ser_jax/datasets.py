"""Which prepared dataset and splits a config trains on, preparing it first where the config allows."""

from __future__ import annotations

import os

import jax
import ml_collections
from jax.experimental import multihost_utils

from data_prep import builder, splits
from ser_jax.features import FeatureConfig
from ser_jax.input_pipeline import Dataset, open_dataset


def data_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
    return config.data.data_dir or os.path.join(workdir, "data")


def training_dataset(config: ml_collections.ConfigDict, workdir: str) -> tuple[Dataset, dict[str, list[str]]]:
    """The dataset and {"train", "validation", "test"} split lists for this run.

    With `data.source_dir` set (or the synthetic corpus, which needs none) the corpus is prepared
    through data_prep first; that is a no-op when the dataset is already there.
    """
    d = config.data
    root = data_dir(config, workdir)
    settings = builder.Settings(corpus=d.corpus, split="speaker", folds=d.folds or None, seed=d.split_seed,
                                features=FeatureConfig.from_mapping(config.features), trim_db=d.trim_db or None,
                                reader_options=dict(d.synthetic) if d.corpus == "synthetic" else {})
    if d.source_dir or d.corpus == "synthetic":
        if jax.process_index() == 0:  # One writer; the other processes wait for its dataset.
            builder.prepare(settings, root, d.source_dir or None)
        multihost_utils.sync_global_devices("ser_jax: training dataset prepared")
    dataset = open_dataset(root, d.corpus, settings.config_name)
    if d.folds:
        folds = sorted(dataset.splits, key=lambda s: int(s.removeprefix("fold")))
        names = splits.cross_validation_splits(folds, d.fold)
    else:
        names = {"train": [d.train_split], "validation": [d.validation_split], "test": [d.test_split]}
    return dataset, names
