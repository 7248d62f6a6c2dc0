"""Turns a corpus folder into a TFDS ArrayRecord dataset of log-Mel features (no TensorFlow needed).

TFDS gives the on-disk format, atomic writes (it builds in an `incomplete.*` folder and renames) and
readers (`tfds.data_source`, `tfds.builder_from_directory`, Grain). This module adds the parallel
feature extraction, speaker-independent split assignment, normalisation statistics and the report of
every file that could not be used.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import multiprocessing
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from data_prep import splits
from data_prep.corpora import base
from data_prep.featurize import featurize, init_feature_worker
from ser_jax import dataset_format as fmt
from ser_jax.features import FeatureConfig

REPORT_FILE = "prep_report.json"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that determines a dataset's content; a rebuild with other settings is refused."""

    corpus: str
    split: str = "speaker"
    folds: int | None = None
    seed: int = 0
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    features: FeatureConfig = FeatureConfig()
    # The corpus reader's keyword arguments (RAVDESS include_song, the synthetic generator's sizes).
    reader_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        fmt.config_name(self.split, self.folds)  # Refuses impossible splits before any work is done.
        object.__setattr__(self, "reader_options", base.reader_options(self.corpus, self.reader_options))

    @property
    def config_name(self) -> str:
        return fmt.config_name(self.split, self.folds)

    def as_json(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))


@dataclasses.dataclass
class Prepared:
    dataset_dir: str
    counts: dict[str, dict[str, int]]  # split -> emotion -> utterances
    problems: list[base.Problem]
    reused: bool


def assign_splits(utterances: Sequence[base.Utterance], settings: Settings) -> dict[str, list[base.Utterance]]:
    genders = {u.speaker: u.gender for u in utterances}
    if settings.split == "all":
        of_speaker = {s: fmt.SINGLE_SPLIT for s in genders}
    elif settings.folds:
        of_speaker = splits.speaker_folds(genders, settings.folds, seed=settings.seed)
    else:
        of_speaker = splits.speaker_splits(genders, validation_fraction=settings.validation_fraction,
                                           test_fraction=settings.test_fraction, seed=settings.seed)
    assigned: dict[str, list[base.Utterance]] = collections.defaultdict(list)
    for u in utterances:
        assigned[of_speaker[u.speaker]].append(u)
    return dict(sorted(assigned.items()))


class _StatsAccumulator:
    """Per-column sums in float64, so statistics of any union of splits can be derived exactly."""

    def __init__(self, columns: int):
        self.count, self.sum, self.sumsq = 0, np.zeros(columns), np.zeros(columns)

    def add(self, mel: np.ndarray):
        m = mel.astype(np.float64)
        self.count += m.shape[0]
        self.sum += m.sum(0)
        self.sumsq += (m * m).sum(0)

    def as_json(self) -> dict:
        return {"frames": self.count, "sum": self.sum.tolist(), "sumsq": self.sumsq.tolist()}


def _builder_class(corpus: str) -> type[tfds.core.GeneratorBasedBuilder]:
    """A builder class per corpus, so the TFDS dataset (and its folder) carries the corpus' name."""
    return type(f"SER_{corpus}", (SpeechEmotionBuilder,), {"name": corpus}, skip_registration=True)


class SpeechEmotionBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version(fmt.DATASET_VERSION)
    RELEASE_NOTES = {fmt.DATASET_VERSION: "log-Mel features with speaker-independent splits."}

    def __init__(self, *, settings: Settings, assignment: Mapping[str, Sequence[base.Utterance]],
                 scan_problems: Sequence[base.Problem], pool, source_dir: str, **kwargs):
        self._settings, self._assignment, self._pool = settings, assignment, pool
        self._source_dir = source_dir
        self._problems = list(scan_problems)
        self._stats: dict[str, dict] = {}
        self._counts: dict[str, dict[str, int]] = {}
        super().__init__(config=tfds.core.BuilderConfig(name=settings.config_name), **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        features = self._settings.features
        what = "log-Mel spectrograms" + (" and prosody" if features.pitch else "")
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{self._settings.corpus}: {what} (frames, {features.dim}) with emotion labels.",
            features=tfds.features.FeaturesDict({
                # Raw bytes: the default float list made TFDS serialise every value in Python,
                # 10 ms an example, three quarters of the whole preparation.
                "mel": tfds.features.Tensor(shape=(None, features.dim), dtype=np.float32,
                                            encoding=tfds.features.Encoding.BYTES),
                "label": tfds.features.ClassLabel(names=fmt.EMOTIONS),
                "duration": tfds.features.Scalar(dtype=np.float32),
                **{f: tfds.features.Text() for f in fmt.TEXT_FIELDS},
            }),
            supervised_keys=("mel", "label"),
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        return {name: self._generate_examples(name, utts) for name, utts in self._assignment.items()}

    def _generate_examples(self, split: str, utterances: Sequence[base.Utterance]) -> Iterator[tuple[str, dict]]:
        stats = _StatsAccumulator(self._settings.features.dim)
        counts = collections.Counter()
        jobs = [(u, self._settings.features) for u in utterances]
        for result in self._pool.imap(featurize, jobs, chunksize=8):
            if isinstance(result, base.Problem):
                self._problems.append(result)
                continue
            stats.add(result["mel"])
            counts[result["label"]] += 1
            # TFDS orders the records by a hash of the key: a key relative to the corpus root gives
            # the same dataset, and so the same training run, wherever the corpus lies.
            yield os.path.relpath(result["path"], self._source_dir), result
        if not counts:
            raise ValueError(f"split {split!r}: none of its {len(utterances)} files could be used")
        self._stats[split] = stats.as_json()
        self._counts[split] = {e: counts[e] for e in fmt.EMOTIONS if counts[e]}
        self.info.metadata.update(self._metadata())

    def _metadata(self) -> dict:
        return {
            fmt.SETTINGS: self._settings.as_json(),
            fmt.STATS: self._stats,
            fmt.COUNTS: self._counts,
            fmt.SPEAKERS: {n: sorted({u.speaker for u in utts}) for n, utts in self._assignment.items()},
            fmt.SKIPPED: [dataclasses.asdict(p) for p in self._problems],
        }


def _with_feature_defaults(settings: dict | None) -> dict | None:
    """Stored settings with the feature settings added since filled in as what the dataset holds
    (`FeatureConfig.from_mapping`), so one prepared before a setting existed compares as it is."""
    if not settings or "features" not in settings:
        return settings
    features = FeatureConfig.from_mapping(settings["features"])
    return {**settings, "features": json.loads(json.dumps(dataclasses.asdict(features)))}


def _read_prepared(path: str, settings: Settings) -> Prepared:
    metadata = tfds.builder_from_directory(path).info.metadata
    found = _with_feature_defaults(metadata.get(fmt.SETTINGS))
    if found != settings.as_json():
        raise ValueError(
            f"{path} was prepared with other settings:\n  found     {found}\n"
            f"  requested {settings.as_json()}\nUse another --data_dir, or delete that folder to rebuild.")
    problems = [base.Problem(**p) for p in metadata[fmt.SKIPPED]]
    return Prepared(path, metadata[fmt.COUNTS], problems, reused=True)


def prepare(settings: Settings, data_dir: str, source_dir: str | None = None, *,
            workers: int | None = None) -> Prepared:
    """Builds the dataset (or finds it already built) and returns where it is and what it holds."""
    path = fmt.dataset_dir(data_dir, settings.corpus, settings.config_name)
    if os.path.exists(os.path.join(path, "dataset_info.json")):
        return _read_prepared(path, settings)
    if source_dir is None:
        if settings.corpus != "synthetic":
            raise ValueError(f"--source_dir is required for corpus {settings.corpus!r}")
        source_dir = os.path.join(data_dir, "downloads", "synthetic")
    scan = base.get_corpus(settings.corpus).scan(source_dir, **settings.reader_options)
    if not scan.utterances:
        raise ValueError(f"No usable {settings.corpus} utterances found under {source_dir!r} "
                         f"({len(scan.problems)} files skipped)")
    assignment = assign_splits(scan.utterances, settings)
    ctx = multiprocessing.get_context("spawn")  # Safe after JAX has started its threads.
    with ctx.Pool(workers or len(os.sched_getaffinity(0)), initializer=init_feature_worker) as pool:
        builder = _builder_class(settings.corpus)(
            settings=settings, assignment=assignment, scan_problems=scan.problems, pool=pool,
            source_dir=source_dir, data_dir=data_dir, file_format="array_record")
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
    metadata = builder.info.metadata
    problems = [base.Problem(**p) for p in metadata[fmt.SKIPPED]]
    with open(os.path.join(path, REPORT_FILE), "w") as f:
        json.dump({"dataset": path, "counts": metadata[fmt.COUNTS], "skipped": metadata[fmt.SKIPPED]}, f, indent=1)
    return Prepared(path, metadata[fmt.COUNTS], problems, reused=False)
