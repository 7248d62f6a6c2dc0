"""The data_prep stage end to end: TFDS ArrayRecord output, speaker-disjoint splits, stats, idempotence, bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import grain
import numpy as np
import pytest
import soundfile as sf
import tensorflow_datasets as tfds

from data_prep import builder
from data_prep.corpora import synthetic
from ser_jax import dataset_format
from ser_jax.features import FeatureConfig
from ser_jax.input_pipeline import open_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Untrimmed: stored lengths are the clips' own; log-Mel only: the stored columns are the mel bins.
FEATURES = FeatureConfig(n_mels=24, trim_db=None, pitch=False)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("corpus")
    synthetic.write_corpus(str(out), "ravdess", n_speakers=6, utterances_per_emotion=1,
                           emotions=["neutral", "angry", "sad"])
    return str(out)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, source) -> tuple[builder.Settings, str, builder.Prepared]:
    data_dir = str(tmp_path_factory.mktemp("data"))
    settings = builder.Settings(corpus="ravdess", features=FEATURES)
    return settings, data_dir, builder.prepare(settings, data_dir, source, workers=2)


def records(path: str, split: str) -> list[dict]:
    source = tfds.builder_from_directory(path).as_data_source(split=split)
    return [source[i] for i in range(len(source))]


def test_dataset_reads_back_speaker_disjoint_with_training_statistics(prepared):
    _, _, result = prepared
    assert not result.reused and result.problems == []
    split_records = {s: records(result.dataset_dir, s) for s in ("train", "validation", "test")}
    speakers = {s: {r["speaker"] for r in recs} for s, recs in split_records.items()}
    assert sum(len(v) for v in speakers.values()) == 6
    assert not (speakers["train"] & speakers["validation"] or speakers["train"] & speakers["test"]
                or speakers["validation"] & speakers["test"])
    assert sum(len(v) for v in split_records.values()) == 18
    for r in split_records["train"]:
        assert r["mel"].dtype == np.float32 and r["mel"].ndim == 2 and r["mel"].shape[1] == 24
        assert r["mel"].shape[0] >= 150  # Synthetic clips last 1.5-3 s: stored at their true length.

    info = tfds.builder_from_directory(result.dataset_dir).info
    assert "normalization" not in info.metadata  # Readers derive it from the per-split statistics.
    mean, std = dataset_format.normalization_from_stats(info.metadata["stats"], ["train"])
    frames = np.concatenate([r["mel"] for r in split_records["train"]]).astype(np.float64)
    np.testing.assert_allclose(mean, frames.mean(0), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(std, frames.std(0), rtol=1e-3, atol=1e-3)

    via_grain = grain.MapDataset.source(tfds.builder_from_directory(result.dataset_dir).as_data_source(split="test"))
    assert [int(r["label"]) for r in via_grain] == [int(r["label"]) for r in split_records["test"]]


def test_prepare_is_idempotent_and_refuses_other_settings(prepared, source):
    settings, data_dir, first = prepared
    stamp = os.path.getmtime(os.path.join(first.dataset_dir, "dataset_info.json"))
    again = builder.prepare(settings, data_dir, source)
    assert again.reused and again.counts == first.counts
    assert os.path.getmtime(os.path.join(first.dataset_dir, "dataset_info.json")) == stamp
    with pytest.raises(ValueError, match="prepared with other settings"):
        builder.prepare(builder.Settings(corpus="ravdess", seed=1, features=FEATURES), data_dir, source)
    with pytest.raises(ValueError, match="prepared with other settings"):
        builder.prepare(builder.Settings(corpus="ravdess", features=FEATURES, reader_options={"include_song": True}),
                        data_dir, source)
    spelled_out = builder.Settings(corpus="ravdess", features=FEATURES, reader_options={"include_song": False})
    assert builder.prepare(spelled_out, data_dir, source).reused
    with pytest.raises(ValueError, match="Unknown option.*include_songs.*include_song"):
        builder.Settings(corpus="ravdess", reader_options={"include_songs": True})


def test_pitch_stores_prosody_after_the_mels_and_older_datasets_are_still_reused(prepared, source, tmp_path):
    settings, data_dir, plain = prepared
    pitched = builder.prepare(builder.Settings(corpus="ravdess", features=dataclasses.replace(FEATURES, pitch=True)),
                              str(tmp_path / "pitch"), source, workers=2)
    info = tfds.builder_from_directory(pitched.dataset_dir).info
    assert info.metadata["settings"]["features"]["pitch"] is True
    assert all(len(info.metadata["stats"][s]["sum"]) == 26 for s in ("train", "validation", "test"))
    mels = {r["path"]: r["mel"] for r in records(plain.dataset_dir, "train")}
    for r in records(pitched.dataset_dir, "train"):
        assert r["mel"].shape == (mels[r["path"]].shape[0], 26)
        np.testing.assert_array_equal(r["mel"][:, :24], mels[r["path"]])
        periodicity, log_f0 = r["mel"][:, 24:].T
        assert 0.0 <= periodicity.min() and periodicity.max() <= 1.0
        assert np.all((log_f0 >= np.log2(0.75) - 1e-6) & (log_f0 <= np.log2(6.0) + 1e-6))  # 75-600 Hz.
    # A dataset written before `pitch` existed (no such key in its settings) is what it was: pitch=False.
    old = tmp_path / "old"
    shutil.copytree(data_dir, old)
    meta_path = os.path.join(dataset_format.dataset_dir(str(old), "ravdess", "speaker"), "metadata.json")
    with open(meta_path) as f:
        meta = json.load(f)
    del meta["settings"]["features"]["pitch"]
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    assert builder.prepare(settings, str(old), source).reused
    with pytest.raises(ValueError, match="other settings"):
        builder.prepare(builder.Settings(corpus="ravdess", features=dataclasses.replace(FEATURES, pitch=True)),
                        str(old), source)


KILLED_RUN = """
import os, signal, sys
from data_prep import builder
from ser_jax.features import FeatureConfig

real_add, added = builder._StatsAccumulator.add, []

def add_then_die(self, mel):  # Runs in the main process as each example reaches the TFDS writer.
    added.append(mel)
    if len(added) == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    real_add(self, mel)

builder._StatsAccumulator.add = add_then_die
builder.prepare(builder.Settings(corpus="ravdess", features=FeatureConfig(n_mels=24)), sys.argv[1], sys.argv[2],
                workers=1)
"""


def test_trimming_cuts_quiet_edges_and_is_part_of_the_settings(prepared, source, tmp_path):
    settings, _, untrimmed = prepared
    trimmed_settings = builder.Settings(corpus="ravdess", features=FeatureConfig(n_mels=24, trim_db=30.0))
    trimmed = builder.prepare(trimmed_settings, str(tmp_path), source, workers=2)
    info = tfds.builder_from_directory(trimmed.dataset_dir).info
    assert info.metadata["settings"]["features"]["trim_db"] == 30.0
    before = {r["path"]: r["mel"].shape[0] for r in records(untrimmed.dataset_dir, "train")}
    after = {r["path"]: r["mel"].shape[0] for r in records(trimmed.dataset_dir, "train")}
    assert before.keys() == after.keys()
    # Synthetic clips open with 80-200 ms and close with 100-250 ms of room noise (10 ms frames); in a
    # clip whose room noise comes within 30 dB of its loudest frame nothing is quiet enough to cut.
    cut = np.array([before[p] - after[p] for p in before])
    assert np.all((cut >= 0) & (cut <= 50)) and np.median(cut) >= 10, cut
    with pytest.raises(ValueError, match="other settings"):
        builder.prepare(settings, str(tmp_path), source)  # Same folder, untrimmed: refused, not reused.


def test_a_killed_run_leaves_nothing_readers_take_as_a_dataset(prepared, source, tmp_path):
    settings, _, complete = prepared
    data_dir = str(tmp_path / "data")
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, data_dir, source], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    config_dir = os.path.join(data_dir, "ravdess", "speaker")
    assert [d for d in os.listdir(config_dir) if d.startswith("incomplete.")]  # Killed mid-write ...
    assert not os.path.exists(os.path.join(config_dir, dataset_format.DATASET_VERSION))  # ... so no dataset,
    with pytest.raises(FileNotFoundError, match="No prepared 'ravdess' dataset"):
        open_dataset(data_dir, "ravdess", "speaker")  # and the reader says so.
    rerun = builder.prepare(settings, data_dir, source, workers=1)
    assert not rerun.reused and rerun.counts == complete.counts
    reopened = open_dataset(data_dir, "ravdess", "speaker").builder.info.splits["train"]
    assert reopened.num_examples == sum(complete.counts["train"].values())


def test_the_dataset_is_the_same_wherever_the_corpus_lies(prepared, source, tmp_path):
    """Same splits, same record order, same features: so the same training run (TFDS orders the
    records by a hash of their keys, which once held the absolute path)."""
    settings, _, first = prepared
    elsewhere = shutil.copytree(source, tmp_path / "a" / "copy")
    second = builder.prepare(settings, str(tmp_path / "data"), str(elsewhere), workers=1)
    for split in ("train", "validation", "test"):
        ours, theirs = records(first.dataset_dir, split), records(second.dataset_dir, split)
        assert ([os.path.relpath(r["path"].decode(), source) for r in ours]
                == [os.path.relpath(r["path"].decode(), elsewhere) for r in theirs])
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a["mel"], b["mel"])


def test_a_split_held_by_several_prepared_datasets_must_name_its_own(source, tmp_path):
    """Every K-fold dataset has a fold1, each of other speakers: reading "fold1" from a folder holding
    two of them is refused, not answered with whichever sorts first."""
    data_dir = str(tmp_path)
    for k in (3, 4):
        builder.prepare(builder.Settings(corpus="ravdess", features=FEATURES, folds=k), data_dir, source, workers=1)
    with pytest.raises(ValueError, match=r"2 prepared 'ravdess' datasets .* have a split 'fold1' \(folds3, folds4\)"):
        open_dataset(data_dir, "ravdess", split="fold1")
    chosen = open_dataset(data_dir, "ravdess", split="folds4/fold1")
    assert chosen.path.endswith(os.path.join("folds4", dataset_format.DATASET_VERSION))
    assert open_dataset(data_dir, "ravdess", split="fold3").path == chosen.path  # Only folds4 has a fold3.
    speakers = {k: {r["speaker"] for r in records(open_dataset(data_dir, "ravdess", split=f"folds{k}/fold1").path,
                                                   "fold1")} for k in (3, 4)}
    assert speakers[3] != speakers[4]


def test_bad_files_are_reported_and_good_ones_still_written(source, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for actor in ("Actor_01", "Actor_02", "Actor_03"):
        shutil.copytree(os.path.join(source, actor), corpus / actor)
    bad = corpus / "Actor_09"
    bad.mkdir()
    (bad / "03-01-05-01-01-01-09.wav").write_bytes(b"")  # Empty.
    (bad / "03-01-04-01-01-01-09.wav").write_bytes(b"not audio at all")  # Not audio.
    sf.write(bad / "03-01-01-01-01-01-09.wav", np.zeros(16000, np.float32), 16000)  # Silent.
    (bad / "hello.wav").write_bytes((corpus / "Actor_01").joinpath(
        sorted(os.listdir(corpus / "Actor_01"))[0]).read_bytes())  # Name does not parse.
    out = tmp_path / "data"
    result = subprocess.run([sys.executable, "-m", "data_prep", "--corpus=ravdess", f"--source_dir={corpus}",
                             f"--data_dir={out}", "--split=all", "--n_mels=24"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1, result.stderr[-2000:]
    for name in ("03-01-05-01-01-01-09.wav", "03-01-04-01-01-01-09.wav", "03-01-01-01-01-01-09.wav", "hello.wav"):
        assert name in result.stderr
    dataset = out / "ravdess" / "all" / dataset_format.DATASET_VERSION
    report = json.loads((dataset / builder.REPORT_FILE).read_text())
    assert len(report["skipped"]) == 4
    assert len(records(str(dataset), "all")) == 9  # 3 good actors x 3 emotions.
    assert result.stdout.strip().splitlines()[-1].split()[-1] == "9"  # The counts table's total.


def test_fewer_than_three_folds_are_refused_before_any_work(tmp_path):
    out = tmp_path / "data"
    result = subprocess.run([sys.executable, "-m", "data_prep", "--corpus=synthetic", f"--data_dir={out}", "--folds=2"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and "--folds must be at least 3" in result.stderr, result.stderr[-2000:]
    assert not out.exists()  # Nothing generated, nothing written.


def test_the_default_synthetic_dataset_is_the_one_training_asks_for(tmp_path):
    """`python -m data_prep --corpus=synthetic` and a default training config agree on every setting."""
    from configs.base import get_base_config
    from ser_jax import datasets

    out = tmp_path / "data"
    result = subprocess.run([sys.executable, "-m", "data_prep", "--corpus=synthetic", f"--data_dir={out}"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    info_file = out / "synthetic" / "speaker" / dataset_format.DATASET_VERSION / "dataset_info.json"
    stamp = os.path.getmtime(info_file)
    config = get_base_config()
    config.data.data_dir = str(out)
    [corpus] = datasets.training_data(config, str(tmp_path / "workdir"))  # Reused, not refused.
    dataset, names = corpus.dataset, corpus.splits
    assert os.path.getmtime(info_file) == stamp
    assert names == {"train": ["train"], "validation": ["validation"], "test": ["test"]}
    assert sum(dataset.metadata[dataset_format.COUNTS]["train"].values()) == 8 * 8 * 5  # The demo's 320 clips.
