"""Reading prepared datasets: Grain pipelines for training, exact length-sorted batches for evaluation.

Training batches have one fixed shape (random crop / zero-pad to `max_frames`), so the train step
compiles once and every host feeds the same shape. Evaluation batches are sorted by length and
padded to a multiple of `eval_bucket_frames`: little wasted compute and few compiles, while every
example is seen exactly once (rows added to fill the last batch carry weight 0).
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Iterator, Mapping, Sequence

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds

from ser_jax import batching
from ser_jax import dataset_format as fmt
from ser_jax.features import FeatureConfig, normalize


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A prepared dataset on disk and what the pipeline needs to know about it."""

    path: str
    builder: tfds.core.DatasetBuilder

    @property
    def metadata(self) -> Mapping:
        return self.builder.info.metadata

    @property
    def splits(self) -> list[str]:
        return list(self.builder.info.splits)

    @property
    def features(self) -> FeatureConfig:
        return FeatureConfig.from_mapping(self.metadata[fmt.SETTINGS]["features"])

    def resolve(self, splits: Sequence[str]) -> list[str]:
        """Checks split names; "all" means every split, as in TFDS."""
        names = [n for s in splits for n in (self.splits if s == "all" else [s])]
        unknown = [s for s in names if s not in self.splits]
        if unknown:
            raise ValueError(f"{self.path} has no split(s) {unknown}; it has {self.splits} (or 'all')")
        return names

    def source(self, splits: Sequence[str]):
        return self.builder.as_data_source(split="+".join(self.resolve(splits)))

    def mel_bytes(self, splits: Sequence[str]) -> int:
        """The size of the float32 feature frames of `splits` once decoded."""
        return sum(self.metadata[fmt.STATS][s]["frames"] for s in self.resolve(splits)) * self.features.dim * 4

    def normalization(self, splits: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        return fmt.normalization_from_stats(self.metadata[fmt.STATS], self.resolve(splits))

    def class_names(self, splits: Sequence[str]) -> tuple[str, ...]:
        """The emotions present in `splits`, in canonical order: the label set a model trains on."""
        present = {e for s in self.resolve(splits) for e in self.metadata[fmt.COUNTS][s]}
        return tuple(e for e in fmt.EMOTIONS if e in present)


def open_dataset(data_dir: str, corpus: str, config_name: str | None = None, split: str | None = None) -> Dataset:
    """The dataset `data_dir/corpus/<config_name>/<version>`; with no config name, the one holding
    `split`, which may name its config too ("folds6/fold1") where several prepared configs hold a
    split of that name (every K-fold dataset has a fold1, each with other speakers)."""
    if split is not None and "/" in split:
        config_name, split = split.split("/", 1)
    if config_name:
        candidates = [fmt.dataset_dir(data_dir, corpus, config_name)]
    else:
        candidates = sorted(glob.glob(fmt.dataset_dir(data_dir, corpus, "*")))
    found = [c for c in candidates if os.path.exists(os.path.join(c, "dataset_info.json"))]
    if not found:
        raise FileNotFoundError(
            f"No prepared {corpus!r} dataset under {data_dir!r} (looked for {candidates or fmt.dataset_dir(data_dir, corpus, '*')}); "
            f"run `python -m data_prep --corpus={corpus} --data_dir={data_dir} ...` first")
    datasets = [Dataset(p, tfds.builder_from_directory(p)) for p in found]
    if split is not None:
        holding = [d for d in datasets if split in d.splits]
        if split == "all" and not holding:  # TFDS's name for every split: any dataset can be read whole.
            holding = datasets
        if not holding:
            raise ValueError(f"No prepared {corpus!r} dataset under {data_dir!r} has a split {split!r}")
        if len(holding) > 1:
            names = [os.path.basename(os.path.dirname(d.path)) for d in holding]
            raise ValueError(f"{len(holding)} prepared {corpus!r} datasets under {data_dir!r} have a split {split!r} "
                             f"({', '.join(names)}), each of other speakers; name one with the split, e.g. "
                             f"'{names[0]}/{split}'")
        datasets = holding
    return datasets[0]


SpeakerStats = Mapping[str, tuple[np.ndarray, np.ndarray]]  # speaker_key -> per-bin (mean, std).


def text_field(example: Mapping, field: str) -> str:
    """One of the example's TEXT_FIELDS as a str (records hold bytes, in-memory copies may hold str)."""
    value = example[field]
    return value.decode() if isinstance(value, bytes) else str(value)


def speaker_key(example: Mapping) -> str:
    """The example's speaker as data_prep stores it and lists it in the metadata: "corpus/speaker",
    since speaker ids are only unique within a corpus."""
    return text_field(example, "speaker")


def speaker_statistics(sources: Sequence) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-bin mean and std of every speaker over all of its own frames in `sources`.

    TRANSDUCTIVE when `sources` hold test speakers: their unlabelled audio shapes their own
    normalisation. That is the per-speaker normalisation of the literature, which removes each
    voice's timbre while keeping how its emotions differ from one another; its figures are
    reported apart from the inductive ones.
    """
    acc: dict[str, dict] = {}
    for ex in (source[i] for source in sources for i in range(len(source))):
        mel = np.asarray(ex["mel"], np.float64)
        a = acc.setdefault(speaker_key(ex), {"frames": 0, "sum": 0.0, "sumsq": 0.0})
        a["frames"] += mel.shape[0]
        a["sum"] = a["sum"] + mel.sum(0)
        a["sumsq"] = a["sumsq"] + np.square(mel).sum(0)
    return {k: fmt.normalization_from_stats(acc, [k]) for k in acc}


def _normalized(mel: np.ndarray, example: Mapping, mean: np.ndarray, std: np.ndarray,
                speaker_stats: SpeakerStats | None) -> np.ndarray:
    """By the training statistics, or by the example's speaker's own when `speaker_stats` is given."""
    if speaker_stats is not None:
        mean, std = speaker_stats[speaker_key(example)]
    return normalize(mel, mean, std)


def in_memory(source) -> list[dict]:
    """Every example of a data source, read and decoded once: a Grain source like the one it copies.

    Decoding TFDS ArrayRecord examples is half of the training pipeline's CPU time, paid again every
    epoch; the training split of RAVDESS decoded is 28 MB, read in under a second.
    """
    return [source[i] for i in range(len(source))]


def clip_path(example: Mapping) -> str:
    """The source file an example was read from: its identity across datasets and predictions files."""
    return text_field(example, "path")


def clip_paths(sources: Sequence) -> list[str]:
    return [clip_path(source[i]) for source in sources for i in range(len(source))]


class _CropNormalizePad(grain.transforms.RandomMap):
    """A random `max_frames` crop of longer clips, normalisation, zero padding; with `speaker_ids`,
    the example's speaker as an id too, with `teacher_targets`, the teachers' probabilities, and with
    `auxiliary` (a text field and its value -> id map), that field's id (-1: a value not in the map)."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, max_frames: int, lookup: np.ndarray,
                 speaker_stats: SpeakerStats | None = None, speaker_ids: Mapping[str, int] | None = None,
                 teacher_targets: Mapping[str, np.ndarray] | None = None,
                 auxiliary: tuple[str, Mapping[str, int]] | None = None):
        self.mean, self.std, self.max_frames, self.lookup = mean, std, max_frames, lookup
        self.speaker_stats, self.speaker_ids, self.teacher_targets = speaker_stats, speaker_ids, teacher_targets
        self.auxiliary = auxiliary

    def random_map(self, example: dict, rng: np.random.Generator) -> dict:
        mel = example["mel"]
        n = mel.shape[0]
        if n > self.max_frames:
            start = rng.integers(0, n - self.max_frames + 1)
            mel, n = mel[start:start + self.max_frames], self.max_frames
        out = np.zeros((self.max_frames, mel.shape[1]), np.float32)
        out[:n] = _normalized(mel, example, self.mean, self.std, self.speaker_stats)
        out = {"mel": out, "lengths": np.int32(n), "label": self.lookup[example["label"]]}
        if self.speaker_ids is not None:
            out["speaker"] = np.int32(self.speaker_ids[speaker_key(example)])
        if self.teacher_targets is not None:
            out["teacher"] = self.teacher_targets[clip_path(example)]
        if self.auxiliary is not None:
            field, ids = self.auxiliary
            out["auxiliary"] = np.int32(ids.get(text_field(example, field), -1))
        return out


class _HostRows(grain.MapDataset):
    """This process' contiguous rows of each global batch of an (infinite) global sequence.

    Every process walks the same shuffled, cropped global sequence and keeps its own block of each
    global batch, so a global batch holds the same examples, in the same order and with the same
    random crops, whatever the number of processes: a multi-host run follows the single-host one.
    """

    def __init__(self, parent: grain.MapDataset, global_batch: int, count: int, index: int):
        super().__init__(parent)
        self._global, self._local, self._index = global_batch, global_batch // count, index

    def __len__(self) -> int:
        return len(self._parent) // self._global * self._local

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.slice(i)
        batch, row = divmod(i, self._local)
        return self._parent[batch * self._global + self._index * self._local + row]


def train_dataset(sources: Sequence, *, mean: np.ndarray, std: np.ndarray, class_names: Sequence[str],
                  max_frames: int, global_batch: int, seed: int, weights: Sequence[float] | None = None,
                  worker_threads: int = 2, speaker_stats: SpeakerStats | None = None,
                  speaker_ids: Mapping[str, int] | None = None,
                  teacher_targets: Mapping[str, np.ndarray] | None = None,
                  auxiliary: tuple[str, Mapping[str, int]] | None = None) -> grain.IterDataset:
    """Infinite, per-epoch reshuffled batches of (global_batch / processes, max_frames, mels).

    Several sources (corpora) are one shuffled union, or, with `weights`, each corpus is drawn with
    its relative weight from its own reshuffled stream. Each process reads only its own rows
    (records are fetched lazily by index). With `speaker_stats`, each example is normalised by its
    speaker's statistics instead of `mean` and `std`. With `speaker_ids` ("corpus/speaker" -> id),
    batches also hold each example's "speaker" id (speaker-adversarial training), and with
    `teacher_targets` (clip path -> class probabilities), its "teacher" probabilities (distillation),
    and with `auxiliary` (a text field, value -> id), its "auxiliary" id, -1 for other values.
    """
    count, index = jax.process_count(), jax.process_index()
    if global_batch % count:
        raise ValueError(f"batch size {global_batch} is not divisible by the {count} processes")
    if weights is None:
        parts = [grain.MapDataset.source(s) for s in sources]
        ds = (parts[0] if len(parts) == 1 else grain.MapDataset.concatenate(parts)).seed(seed).shuffle().repeat()
    else:
        ds = grain.MapDataset.mix([grain.MapDataset.source(s).seed(seed + i).shuffle().repeat()
                                   for i, s in enumerate(sources)], list(weights))
    ds = ds.random_map(_CropNormalizePad(mean, std, max_frames, fmt.label_lookup(class_names), speaker_stats,
                                        speaker_ids, teacher_targets, auxiliary))
    ds = _HostRows(ds, global_batch, count, index).batch(global_batch // count, drop_remainder=True)
    return ds.to_iter_dataset(grain.ReadOptions(num_threads=worker_threads, prefetch_buffer_size=4))


@dataclasses.dataclass
class EvalSet:
    """A whole split in memory, normalised, sorted by length, with the metadata reports break down by."""

    mels: list[np.ndarray]
    labels: np.ndarray  # Model class ids.
    metadata: dict[str, np.ndarray]  # speaker, gender, corpus, path per example.
    left_out: dict[str, int]  # Emotions outside the model's label set -> count.

    def __len__(self) -> int:
        return len(self.mels)


def load_eval_set(sources: Sequence, *, mean: np.ndarray, std: np.ndarray, class_names: Sequence[str],
                  keep: Sequence[str] | None = None, speaker_stats: SpeakerStats | None = None) -> EvalSet:
    """Every example of `sources` (data sources of one or more corpora) whose emotion the model knows
    (and is among `keep`, when given); labels are ids into `class_names`. With `speaker_stats`, each
    example is normalised by its speaker's statistics instead of `mean` and `std`."""
    lookup = fmt.label_lookup(class_names)
    if keep is not None:
        lookup[[fmt.EMOTIONS.index(c) for c in class_names if c not in keep]] = -1
    mels, labels, meta, left_out = [], [], {k: [] for k in ("speaker", "gender", "corpus", "path")}, {}
    for ex in (source[i] for source in sources for i in range(len(source))):
        label = int(lookup[ex["label"]])
        if label < 0:
            name = fmt.EMOTIONS[ex["label"]]
            left_out[name] = left_out.get(name, 0) + 1
            continue
        mels.append(_normalized(ex["mel"], ex, mean, std, speaker_stats).astype(np.float32))
        labels.append(label)
        for k in meta:
            meta[k].append(text_field(ex, k))
    order = sorted(range(len(mels)), key=lambda j: (mels[j].shape[0], meta["path"][j]))
    return EvalSet([mels[j] for j in order], np.asarray(labels, np.int32)[order],
                   {k: np.asarray(v)[order] for k, v in meta.items()}, left_out)


def eval_batches(data: EvalSet, *, global_batch: int, bucket_frames: int) -> Iterator[tuple[dict, np.ndarray]]:
    """This process' rows of each global batch, and the global example ids of the batch.

    Every process walks the same global batches (same shapes), padded to whole buckets; filler rows
    have weight 0 and id -1.
    """
    count, index = jax.process_count(), jax.process_index()
    local = global_batch // count
    columns = data.mels[0].shape[1] if data.mels else 0
    for start in range(0, len(data), global_batch):
        ids = np.arange(start, min(start + global_batch, len(data)))
        frames = batching.bucketed(max(data.mels[i].shape[0] for i in ids), bucket_frames)
        ids = np.concatenate([ids, np.full(global_batch - len(ids), -1)])
        mine = ids[index * local:(index + 1) * local]
        mine = mine[mine >= 0]  # Filler rows come last, so this process' real rows are a prefix.
        mel, lengths = batching.pad_batch([data.mels[i] for i in mine], rows=local, frames=frames, columns=columns)
        label, weight = np.zeros(local, np.int32), np.zeros(local, np.float32)
        label[:len(mine)], weight[:len(mine)] = data.labels[mine], 1.0
        yield {"mel": mel, "lengths": lengths, "label": label, "weight": weight}, ids
