"""Which prepared dataset and splits a config trains on, preparing it first where the config allows.

This is the one place where ser_jax calls data_prep (imported only when a corpus is prepared):
everything else reads datasets through the contract in `ser_jax.dataset_format`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from ser_jax import dataset_format as fmt
from ser_jax.features import FeatureConfig
from ser_jax.input_pipeline import Dataset, in_memory, open_dataset


def cross_validation_splits(fold_names: Sequence[str], test_fold: int,
                            validation_fold: int | None = None) -> dict[str, list[str]]:
    """Train/validation/test split lists for one CV round: test = fold i, validation = fold i+1
    unless `validation_fold` names another (a model that must not hear two chosen folds, such as a
    cross-fitted distillation teacher)."""
    k = len(fold_names)
    if k < fmt.MIN_FOLDS:
        raise ValueError(f"cross-validation needs at least {fmt.MIN_FOLDS} folds (train, validation, test), got {k}")
    if not 0 <= test_fold < k:
        raise ValueError(f"data.test_fold={test_fold} is out of range for {k} folds")
    if validation_fold is None:
        validation_fold = (test_fold + 1) % k
    if not 0 <= validation_fold < k or validation_fold == test_fold:
        raise ValueError(f"data.validation_fold={validation_fold} must be one of the {k} folds other than "
                         f"data.test_fold={test_fold}")
    test, val = fold_names[test_fold], fold_names[validation_fold]
    return {"train": [f for f in fold_names if f not in (test, val)], "validation": [val], "test": [test]}


@dataclasses.dataclass(frozen=True)
class CorpusData:
    """One corpus of a training run: its prepared dataset and the splits each role reads."""

    corpus: str
    dataset: Dataset
    splits: dict[str, list[str]]  # "train", "validation", "test"; a train-only corpus has no others.

    @property
    def validated(self) -> bool:
        """Whether this corpus has validation speakers (train-only corpora and refits have none)."""
        return bool(self.splits["validation"])


def refit_splits(names: dict[str, list[str]]) -> dict[str, list[str]]:
    """The validation speakers join the training ones; the test speakers stay out."""
    return {"train": names["train"] + names["validation"], "validation": [], "test": names["test"]}


def listed(value: str, count: int, key: str, *, default: str = "") -> list[str]:
    """A comma-separated config value with one entry per corpus (or one entry shared by all)."""
    items = [v.strip() for v in value.split(",")] if value else [default]
    if len(items) == 1:
        items *= count
    if len(items) != count:
        raise ValueError(f"config.{key}={value!r} has {len(items)} entries for {count} corpora "
                         "(give one per corpus of data.corpus, in the same order, or one for all)")
    return items


def _settings(config: ml_collections.ConfigDict, corpus: str, train_only: bool):
    from data_prep import builder  # Only a run that prepares its corpus needs the writer.

    d = config.data
    options = {k: v for k, v in d.synthetic.items() if v is not None} if corpus == "synthetic" else {}
    return builder.Settings(corpus=corpus, split="all" if train_only else "speaker",
                            folds=None if train_only else d.folds or None, seed=d.split_seed,
                            features=FeatureConfig.from_mapping(config.features), reader_options=options)


def _prepare(config: ml_collections.ConfigDict, corpus: str, train_only: bool, root: str, source_dir: str) -> None:
    from data_prep import builder, splits

    try:
        builder.prepare(_settings(config, corpus, train_only), root, source_dir or None)
    except splits.TooFewSpeakers as e:
        raise ValueError(f"{corpus}: {e}. To train on all of it without evaluating on it, add it to "
                         f"config.data.train_only (e.g. --config.data.train_only={corpus})") from e


def training_data(config: ml_collections.ConfigDict, workdir: str) -> list[CorpusData]:
    """The datasets and {"train", "validation", "test"} split lists of every corpus of this run.

    `data.corpus` names one corpus or several ("ravdess,tess"), with `data.source_dir` and
    `data.data_dir` one entry each in the same order (or one shared entry). Each corpus is split by
    speakers (or speaker folds) on its own, so no speaker is in two roles; the corpora listed in
    `data.train_only` (TESS has only two speakers) are used whole for training. With every corpus
    train-only there is no validation: a final model trained for a fixed schedule, as with
    `data.refit`, where the validation speakers train too. Corpora with a
    `source_dir` (and the synthetic corpus, which needs none) are prepared through data_prep first;
    that is a no-op when the dataset is already there. Impossible fold settings are refused before
    anything is prepared.
    """
    d = config.data
    corpora = [c.strip() for c in d.corpus.split(",")]
    sources = listed(d.source_dir, len(corpora), "data.source_dir")
    roots = listed(d.data_dir, len(corpora), "data.data_dir", default=os.path.join(workdir, "data"))
    train_only = set(filter(None, (c.strip() for c in d.train_only.split(","))))
    if unknown := train_only - set(corpora):
        raise ValueError(f"config.data.train_only names {sorted(unknown)}, which data.corpus={d.corpus!r} lacks")
    if d.folds:
        cross_validation_splits([fmt.fold_name(i) for i in range(d.folds)], d.test_fold, d.validation_fold)
    if any(s or c == "synthetic" for c, s in zip(corpora, sources)):
        if jax.process_index() == 0:  # One writer; the other processes wait for its datasets.
            for corpus, source, root in zip(corpora, sources, roots):
                if source or corpus == "synthetic":
                    _prepare(config, corpus, corpus in train_only, root, source)
        multihost_utils.sync_global_devices("ser_jax: training datasets prepared")
    out = []
    for corpus, root in zip(corpora, roots):
        if corpus in train_only:
            out.append(CorpusData(corpus, open_dataset(root, corpus, fmt.config_name("all", None)),
                                  {"train": ["all"], "validation": [], "test": []}))
            continue
        dataset = open_dataset(root, corpus, fmt.config_name("speaker", d.folds or None))
        if d.folds:
            folds = sorted(dataset.splits, key=lambda s: int(s.removeprefix("fold")))
            names = cross_validation_splits(folds, d.test_fold, d.validation_fold)
        else:
            names = {"train": [d.train_split], "validation": [d.validation_split], "test": [d.test_split]}
        out.append(CorpusData(corpus, dataset, refit_splits(names) if d.refit else names))
    features = {c.corpus: c.dataset.features for c in out}
    if len(set(features.values())) > 1:
        raise ValueError(f"the corpora were prepared with different features, which one model cannot take: {features}")
    return out


def train_sources(corpora: Sequence[CorpusData], *, cache_mb: float) -> list:
    """Every corpus' training data source, decoded once into memory when all of them together take at
    most `cache_mb` MB of feature frames (0: read from disk at every draw). The examples and the
    batches are the same either way; only where they come from differs."""
    sources = [c.dataset.source(c.splits["train"]) for c in corpora]
    if sum(c.dataset.mel_bytes(c.splits["train"]) for c in corpora) > cache_mb * 2**20:
        return sources
    return [in_memory(s) for s in sources]


def class_names(corpora: Sequence[CorpusData]) -> tuple[str, ...]:
    """The union of the emotions in every corpus' training splits, in canonical order."""
    present = {e for c in corpora for e in c.dataset.class_names(c.splits["train"])}
    return tuple(e for e in fmt.EMOTIONS if e in present)


def normalization(corpora: Sequence[CorpusData]) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin mean and std over every training frame of every corpus."""
    stats = {f"{c.corpus}/{s}": c.dataset.metadata[fmt.STATS][s] for c in corpora
             for s in c.dataset.resolve(c.splits["train"])}
    return fmt.normalization_from_stats(stats, list(stats))


def training_speakers(corpora: Sequence[CorpusData]) -> list[str]:
    """Every training speaker of every corpus, as "corpus/speaker", sorted."""
    return sorted({s for c in corpora for split in c.dataset.resolve(c.splits["train"])
                   for s in c.dataset.metadata[fmt.SPEAKERS][split]})


def class_frequencies(corpora: Sequence[CorpusData], class_names: Sequence[str],
                      weights: Sequence[float] | None = None) -> np.ndarray:
    """How often each class is drawn for training: the corpora's training label counts, mixed as the
    pipeline mixes them (by size in a plain union, else by `weights`, each corpus's share)."""
    counts = np.array([[sum(c.dataset.metadata[fmt.COUNTS][s].get(e, 0) for s in c.dataset.resolve(c.splits["train"]))
                        for e in class_names] for c in corpora], np.float64)
    if weights is None:
        total = counts.sum(0)
    else:
        total = (np.asarray(weights, np.float64)[:, None] * counts / counts.sum(1, keepdims=True)).sum(0)
    return total / total.sum()


def sampling_weights(config: ml_collections.ConfigDict, corpora: Sequence[CorpusData]) -> list[float] | None:
    """`data.corpus_weights` as floats (None: every training example equally likely, a plain union)."""
    if not config.data.corpus_weights:
        return None
    weights = [float(w) for w in listed(config.data.corpus_weights, len(corpora), "data.corpus_weights")]
    if any(w <= 0 for w in weights):
        raise ValueError(f"config.data.corpus_weights must be positive, got {config.data.corpus_weights!r}")
    return weights
