"""Training on several corpora at once: union of training splits and label sets, weights, per-corpus metrics."""

from __future__ import annotations

import collections
import csv
import json
import os

import numpy as np
import pytest

from configs.base import get_base_config
from data_prep.corpora import synthetic
from ser_jax import dataset_format, datasets, evaluate, input_pipeline, train
from ser_jax.ensemble import FIXED_COLUMNS
from ser_jax.model_info import ModelInfo

EMOTIONS = ["neutral", "calm", "angry", "sad"]  # TESS has no calm: the union has it from RAVDESS only.


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, str]:
    out = {}
    for layout, speakers in (("ravdess", 6), ("crema_d", 6), ("tess", 2)):
        folder = str(tmp_path_factory.mktemp(layout))
        synthetic.write_corpus(folder, layout, n_speakers=speakers, utterances_per_emotion=1, emotions=EMOTIONS)
        out[layout] = folder
    return out


def _config(corpus: str, source_dir: str, data_dir: str, **data):
    c = get_base_config()
    c.data.update(corpus=corpus, source_dir=source_dir, data_dir=data_dir, max_frames=100, eval_bucket_frames=100,
                  **data)
    c.features.n_mels = 16
    c.model.update(channels=(4,), lstm_hidden=6, attention_heads=2, attention_dim=4)
    c.optim.warmup_steps = 1
    c.train.update(batch_size=8, eval_batch_size=16, num_epochs=1, log_every_steps=1, keep_best=1)
    return c


def test_ravdess_and_tess_train_on_the_union_and_tess_only_trains(corpora, tmp_path):
    config = _config("ravdess,tess", f"{corpora['ravdess']},{corpora['tess']}", str(tmp_path / "data"),
                     train_only="tess")
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(config, workdir)
    info = ModelInfo.load(workdir)
    assert info.class_names == ("neutral", "calm", "sad", "angry")  # Canonical order.
    assert [c["corpus"] for c in info.corpora] == ["ravdess", "tess"]
    assert info.corpora[1]["splits"] == {"train": ["all"], "validation": [], "test": []}
    # One epoch covers both training sets: RAVDESS' 4 training speakers x 4 emotions + TESS' 2 x 3.
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        steps = [json.loads(line)["step"] for line in f if "train/loss" in line]
    assert max(steps) == (4 * 4 + 2 * 3) // 8
    # The class prior the correction divides by: 6 neutral, 4 calm (RAVDESS only), 6 sad, 6 angry.
    assert info.class_prior == pytest.approx(np.array([6, 4, 6, 6]) / 22) and info.prior_correction == 1.0
    report = evaluate.evaluate(config, workdir)
    assert [d["splits"] for d in report["datasets"]] == [["test"]]  # TESS gives no test speakers.
    assert set(report["by_corpus"]) == {"ravdess"}
    assert report["prior_correction"] == 1.0

    # Read without the correction (reported beside it): the corrected probabilities are these divided
    # by the prior, renormalised, so the rarely drawn calm gains against the other three.
    with config.unlocked():
        config.eval.prior_correction = 0.0
    raw = evaluate.evaluate(config, workdir)
    assert raw["prior_correction"] == 0.0 and raw["output_dir"] == report["output_dir"].replace("_step", "_prior0_step")
    corrected, uncorrected = (_probabilities(os.path.join(r["output_dir"], "predictions.csv"))
                              for r in (report, raw))
    expected = uncorrected / np.asarray(info.class_prior)
    np.testing.assert_allclose(corrected, expected / expected.sum(1, keepdims=True), atol=2e-5)
    assert np.all(corrected[:, 1] > uncorrected[:, 1])


def _probabilities(predictions_csv: str) -> np.ndarray:
    with open(predictions_csv, newline="") as f:
        rows = list(csv.reader(f))
    return np.array([[float(p) for p in row[len(FIXED_COLUMNS):]] for row in rows[1:]])


def test_two_evaluated_corpora_get_metrics_each(corpora, tmp_path):
    config = _config("ravdess,crema_d", f"{corpora['ravdess']},{corpora['crema_d']}", str(tmp_path / "data"),
                     corpus_weights="1,3")
    config.train.class_balance = True  # Weights from both corpora's label counts, mixed 1:3.
    workdir = str(tmp_path / "run")
    last = train.train_and_evaluate(config, workdir)
    assert {"val/ravdess/ua", "val/crema_d/ua", "val/ravdess/accuracy", "val/crema_d/accuracy"} <= set(last)
    assert last["val/ua"] == pytest.approx((last["val/ravdess/ua"] + last["val/crema_d/ua"]) / 2)
    assert ModelInfo.load(workdir).class_prior == pytest.approx([0.25] * 4)  # Balanced: the loss sees them alike.
    report = evaluate.evaluate(config, workdir)
    assert set(report["per_corpus"]) == {"ravdess", "crema_d"}
    for corpus, m in report["per_corpus"].items():
        assert m["num_examples"] == report["by_corpus"][corpus]["num_examples"] > 0
        assert np.asarray(m["confusion"]).sum() == m["num_examples"]


def test_weights_set_how_often_each_corpus_is_drawn():
    def source(label: int, n: int):
        return [{"mel": np.zeros((5, 2), np.float32), "label": label} for _ in range(n)]

    kw = dict(mean=np.zeros(2, np.float32), std=np.ones(2, np.float32), class_names=("neutral", "calm"),
              max_frames=5, global_batch=16, seed=0, worker_threads=0)
    small, large = source(0, 10), source(1, 90)  # Canonical ids: 0 neutral, 1 calm.

    def share_of_small(weights):
        it = iter(input_pipeline.train_dataset([small, large], weights=weights, **kw))
        counts = collections.Counter(int(x) for _ in range(40) for x in next(it)["label"])
        return counts[0] / sum(counts.values())

    assert share_of_small(None) == pytest.approx(0.1, abs=0.04)  # A plain union: as the sizes go.
    assert share_of_small([1.0, 1.0]) == pytest.approx(0.5, abs=0.04)
    assert share_of_small([3.0, 1.0]) == pytest.approx(0.75, abs=0.04)


def test_class_frequencies_follow_how_the_corpora_are_mixed():
    class Counted:  # What class_frequencies reads of a prepared dataset: its label counts per split.
        def __init__(self, counts):
            self.metadata = {dataset_format.COUNTS: counts}

        def resolve(self, splits):
            return list(splits)

    a = datasets.CorpusData("a", Counted({"fold0": {"neutral": 10, "angry": 20}, "fold1": {"angry": 10},
                                          "fold2": {"neutral": 50}}), {"train": ["fold0", "fold1"]})
    b = datasets.CorpusData("b", Counted({"all": {"angry": 10, "sad": 10}}), {"train": ["all"]})
    names = ("neutral", "sad", "angry")
    np.testing.assert_allclose(datasets.class_frequencies([a, b], names), [10 / 60, 10 / 60, 40 / 60])
    # Drawn equally: a's 1:3 and b's 1:1 each make half the batches.
    np.testing.assert_allclose(datasets.class_frequencies([a, b], names, [1.0, 1.0]), [0.125, 0.25, 0.625])


def test_bad_multi_corpus_settings_are_refused_with_what_to_do(corpora, tmp_path):
    both = f"{corpora['ravdess']},{corpora['tess']}"
    with pytest.raises(ValueError, match="data.train_only"):
        datasets.training_data(_config("ravdess,tess", both, str(tmp_path / "a")), str(tmp_path))
    with pytest.raises(ValueError, match="3 entries for 2 corpora"):
        datasets.training_data(_config("ravdess,tess", both + ",x", str(tmp_path / "b")), str(tmp_path))
    with pytest.raises(ValueError, match="lacks"):
        datasets.training_data(_config("ravdess", corpora["ravdess"], str(tmp_path / "c"), train_only="tess"),
                               str(tmp_path))
    config = _config("ravdess,tess", both, str(tmp_path / "d"), train_only="tess", corpus_weights="1,0")
    with pytest.raises(ValueError, match="positive"):
        datasets.sampling_weights(config, datasets.training_data(config, str(tmp_path)))


def test_every_corpus_train_only_trains_a_final_model_on_all_of_them(corpora, tmp_path):
    data_dir = str(tmp_path / "data")
    config = _config("ravdess,tess", f"{corpora['ravdess']},{corpora['tess']}", data_dir, train_only="ravdess,tess")
    workdir = str(tmp_path / "run")
    last = train.train_and_evaluate(config, workdir)
    assert "val/ua" not in last and last["step"] == (6 * 4 + 2 * 3) // 8  # Every speaker of both corpora.
    with pytest.raises(ValueError, match="name a dataset in config.eval"):
        evaluate.evaluate(config, workdir)
    with config.unlocked():
        config.eval.update(data_dir=data_dir, corpus="ravdess", split="all", output_dir=str(tmp_path / "eval"))
    report = evaluate.evaluate(config, workdir)  # The latest checkpoint: there is no "best" without validation.
    assert report["step"] == last["step"] and report["metrics"]["num_examples"] == 6 * 4


def test_refit_trains_on_the_validation_speakers_too_and_tests_on_the_held_out_fold(corpora, tmp_path):
    data_dir = str(tmp_path / "data")
    steps = {}
    for refit in (False, True):
        config = _config("ravdess", corpora["ravdess"], data_dir, folds=3, test_fold=1, refit=refit)
        workdir = str(tmp_path / f"refit{refit}")
        last = train.train_and_evaluate(config, workdir)
        splits = ModelInfo.load(workdir).corpora[0]["splits"]
        report = evaluate.evaluate(config, workdir)
        assert report["datasets"][0]["splits"] == splits["test"] == ["fold1"]
        assert report["metrics"]["num_examples"] == 2 * 4  # The 2 speakers of the test fold.
        steps[refit] = last["step"]
    assert splits == {"train": ["fold0", "fold2"], "validation": [], "test": ["fold1"]}
    assert "val/ua" not in last and report["step"] == last["step"]  # No validation: the final checkpoint.
    assert steps == {False: 2 * 4 // 8, True: 4 * 4 // 8}  # Round 1 validates on fold 2; the refit trains on it.
