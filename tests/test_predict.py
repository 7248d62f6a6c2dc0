"""Deployment: whole-file prediction, streaming, the JAX frontend, export and the command line.

One tiny model, trained once per session (conftest.py) on a synthetic corpus of two clearly
different emotions (angry vs sad), so label checks are reliable; everything else compares numbers.
"""

import ast
import csv
import io
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import soundfile as sf
import tensorflow_datasets as tfds
from flax import nnx

from data_prep.corpora import synthetic
from ser_jax import (batching, classify, config_files, evaluate, export, input_pipeline, predict, serving, streaming,
                     warping)
from ser_jax.features import FeatureConfig, frame_features
from ser_jax.mesh import make_mesh
from ser_jax.model_info import ModelInfo
from ser_jax.models import create_model
from ser_jax.predictor import Predictor
from ser_jax.trained_model import TrainedModel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WINDOW_S, HOP_S = 3.0, 0.5


@pytest.fixture(scope="module")
def trained(angry_sad_workdir):
    """The session's tiny angry-vs-sad workdir (conftest.py)."""
    return angry_sad_workdir


@pytest.fixture(scope="module")
def predictor(trained):
    return Predictor.from_workdir(trained)


@pytest.fixture(scope="module")
def held_out(trained, predictor):
    """The test and validation speakers' examples as the evaluation path reads them."""
    info = predictor.info
    path = info.corpora[0]["path"]
    dataset = input_pipeline.Dataset(path, tfds.builder_from_directory(path))
    return input_pipeline.load_eval_set([dataset.source(["test", "validation"])], mean=info.mean, std=info.std,
                                        class_names=info.class_names)


def _window_fn(predictor):
    return predictor.window_function(int(WINDOW_S * predictor.sample_rate))


def test_file_predictions_equal_the_evaluation_path(trained, predictor, held_out):
    assert predictor.class_names == ("sad", "angry")
    model = TrainedModel.load(trained)  # Replicated over the 8 test devices, as evaluation runs.
    logits, _ = evaluate.Evaluator(make_mesh(), model.graphdef).logits_and_loss(
        model.variables, held_out, batch_size=16, bucket_frames=100)
    expected = np.asarray(jax.nn.softmax(logits, axis=-1))
    paths = list(held_out.metadata["path"])
    results = dict(predictor.predict_files(paths))
    got = np.array([[results[p]["probabilities"][c] for c in predictor.class_names] for p in paths])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    labels = [predictor.class_names.index(results[p]["label"]) for p in paths]
    assert np.mean(np.asarray(labels) == held_out.labels) >= 0.9  # Separable classes: the model learnt them.
    # The waveform API gives the same, whatever the rate and channel count it is handed.
    wave, sr = sf.read(paths[0], dtype="float32")
    np.testing.assert_allclose(list(predictor.predict(wave, sr)["probabilities"].values()), got[0], atol=1e-6)
    import soxr

    stereo = np.stack([soxr.resample(wave, sr, 44100)] * 2, axis=1)
    np.testing.assert_allclose(list(predictor.predict(stereo, 44100)["probabilities"].values()), got[0], atol=0.05)


def test_streaming_tracks_the_emotion_and_ends_on_the_whole_clip_prediction(predictor, held_out):
    sr = predictor.sample_rate
    by_label = {}
    for i in range(len(held_out)):  # One held-out clip per emotion.
        by_label.setdefault(predictor.class_names[held_out.labels[i]], held_out.metadata["path"][i])
    classify = _window_fn(predictor)
    for emotion, path in by_label.items():
        (_, whole), = predictor.predict_files([path])
        stream = streaming.StreamingClassifier(classify, predictor.class_names, sample_rate=sr,
                                               window_samples=int(WINDOW_S * sr), hop_samples=int(HOP_S * sr),
                                               min_samples=predictor.features.win_length)
        estimates = list(streaming.run(stream, streaming.file_chunks(path, sr, 1000)))
        n = sf.info(path).frames
        assert n <= WINDOW_S * sr  # Shorter than the window: every estimate is a partial window.
        assert [e.time for e in estimates[:3]] == [0.5, 1.0, 1.5] and estimates[-1].time == n / sr
        assert all(e.start == 0.0 for e in estimates)
        final = estimates[-1]
        np.testing.assert_allclose(list(final.probabilities.values()), list(whole["probabilities"].values()),
                                   atol=1e-4)
        assert final.label == whole["label"] == emotion

    # A longer stream (a sad clip, then an angry one repeated past a window's length): the sliding
    # window follows the change. A single angry clip is shorter than the window, which would leave
    # the last window half sad.
    sad, angry = (sf.read(by_label[e], dtype="float32")[0] for e in ("sad", "angry"))
    stream = streaming.StreamingClassifier(classify, predictor.class_names, sample_rate=sr,
                                           window_samples=int(WINDOW_S * sr), hop_samples=int(HOP_S * sr),
                                           smoothing=2)
    audio = np.concatenate([sad, np.tile(angry, int(np.ceil((WINDOW_S + HOP_S) * sr / angry.size)))])
    estimates = list(streaming.run(stream, np.array_split(audio, 37)))
    assert len(estimates) == int(audio.size // (HOP_S * sr)) + (audio.size % (HOP_S * sr) > 0)
    assert estimates[1].label == "sad"  # Window [0, 1 s]: sad only.
    assert estimates[-1].label == "angry"  # This window and the one before it: all angry.
    assert estimates[-1].start == pytest.approx(estimates[-1].time - WINDOW_S)


def test_jax_frontend_in_the_window_function_matches_numpy_features(predictor, held_out):
    """The jitted window path's features (log-Mel and prosody) equal data_prep's float64 NumPy ones
    within 1e-3 (dB; periodicity; octaves of F0)."""
    info, sr = predictor.info, predictor.sample_rate
    window = int(WINDOW_S * sr)
    wave = sf.read(held_out.metadata["path"][-1], dtype="float32")[0]
    frontend = jax.jit(lambda w, n: classify.window_features(w, n, features=info.features, mean=info.mean,
                                                            std=info.std))
    padded = np.zeros((2, window), np.float32)
    padded[0, :wave.size] = wave
    padded[1, :wave.size] = wave
    padded[1, 5000:] = 0.7  # Garbage past the valid length must not matter.
    n = np.array([wave.size, 5000], np.int32)
    mel, lengths = jax.device_get(frontend(padded, n))
    db = mel * info.std + info.mean
    for row, count in enumerate(n):
        ref = frame_features(wave[:count].astype(np.float64), info.features)
        assert ref.shape[1] == info.features.n_mels + 2
        assert lengths[row] == ref.shape[0] == info.features.num_frames(count)
        np.testing.assert_allclose(db[row, :lengths[row]], ref, atol=1e-3, rtol=0)


def test_exported_function_equals_the_in_process_one(trained, predictor, held_out, tmp_path):
    out = str(tmp_path / "ser_window.bin")
    assert export.main(["--workdir", trained, "--output", out]) == 0
    meta = json.load(open(serving.metadata_path(out)))
    assert meta["class_names"] == list(predictor.class_names) and meta["sample_rate"] == predictor.sample_rate
    model = serving.load_exported(out)
    window = int(WINDOW_S * predictor.sample_rate)
    assert model.window_samples == window and model.batch is None and model.class_names == predictor.class_names
    clips = [sf.read(p, dtype="float32")[0] for p in held_out.metadata["path"][:2]]
    full = np.concatenate(clips)[:window]
    partial = np.zeros(window, np.float32)
    partial[:clips[0].size] = clips[0]
    classify = _window_fn(predictor)
    for x, n in ((full, window), (partial, clips[0].size)):
        expected = np.asarray(classify(x[None], np.array([n])))[0]
        np.testing.assert_allclose(model(x, n), expected, atol=1e-5)
    batched = model(np.stack([full, partial]), [window, clips[0].size])  # Symbolic batch dimension.
    np.testing.assert_allclose(batched[1], model(partial, clips[0].size), atol=1e-5)


def test_test_time_speeds_are_applied_alike_by_evaluation_prediction_and_export(trained, predictor, held_out,
                                                                                 tmp_path, capsys):
    """A model recorded with test-time speeds averages its probabilities over the clip played at each
    rate, in evaluation, file prediction and the exported window function alike."""
    speeds = (0.9, 1.0, 1.1)
    workdir = tmp_path / "tta"
    shutil.copytree(trained, workdir)
    info_path = workdir / "model_info.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "test_time_speeds": list(speeds)}))
    tta = Predictor.from_workdir(str(workdir))
    assert tta.info.test_time_speeds == speeds

    model = TrainedModel.load(str(workdir))
    bins = warping.MelBins.of(model.info.features, model.info.std)
    logits, _ = evaluate.Evaluator(make_mesh(), model.graphdef, speeds=speeds, bins=bins).logits_and_loss(
        model.variables, held_out, batch_size=16, bucket_frames=100)
    expected = np.asarray(jax.nn.softmax(logits, axis=-1))
    paths = list(held_out.metadata["path"])
    results, plain = dict(tta.predict_files(paths)), dict(predictor.predict_files(paths))
    got = np.array([[results[p]["probabilities"][c] for c in tta.class_names] for p in paths])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    before = np.array([[plain[p]["probabilities"][c] for c in tta.class_names] for p in paths])
    assert np.abs(got - before).max() > 1e-3  # The rates change what the model hears.

    # The average is that of the model's own probabilities at each rate, one pass per rate.
    mel = held_out.mels[0][None]
    lengths = np.array([mel.shape[1]])
    padded = np.pad(mel, ((0, 0), (0, 20), (0, 0)))  # Room for the slowest rate.
    at_each = [classify.classify_mel(model.graphdef, model.params, model.batch_stats,
                                     *warping.change_speed(padded, lengths, np.array([s], np.float32), bins))
               for s in speeds]
    averaged = classify.classify_mel(model.graphdef, model.params, model.batch_stats, mel, lengths, speeds=speeds,
                                     bins=bins)
    np.testing.assert_allclose(averaged, np.mean(at_each, axis=0), atol=1e-5)
    np.testing.assert_allclose(classify.classify_mel(model.graphdef, model.params, model.batch_stats, mel, lengths,
                                                     speeds=(1.0,), bins=bins),
                               classify.classify_mel(model.graphdef, model.params, model.batch_stats, mel, lengths),
                               atol=1e-5)

    window = int(WINDOW_S * tta.sample_rate)
    clip = sf.read(paths[0], dtype="float32")[0][:window]
    wave, n = np.pad(clip, (0, window - clip.size)), np.array([clip.size])  # A partly filled window.
    served = serving.ExportedClassifier(jax.export.deserialize(export.export_window(tta, window).serialize()))
    in_process = np.asarray(tta.window_function(window)(wave[None], n))[0]
    np.testing.assert_allclose(served(wave, clip.size), in_process, atol=1e-5)
    assert np.abs(in_process - np.asarray(_window_fn(predictor)(wave[None], n))[0]).max() > 1e-4

    # A deployment may trade the averaging for latency: the same weights read at other rates.
    one_pass = Predictor.from_workdir(str(workdir), test_time_speeds=())
    assert one_pass.info.test_time_speeds == () and tta.info.test_time_speeds == speeds
    np.testing.assert_allclose(one_pass.probabilities(held_out.mels[:4]), predictor.probabilities(held_out.mels[:4]),
                               atol=1e-6)
    np.testing.assert_allclose(Predictor.from_workdir(trained, test_time_speeds=speeds).probabilities(held_out.mels[:4]),
                               got[:4], atol=1e-5)
    out = tmp_path / "one_pass.jsonl"
    assert predict.main(["--workdir", str(workdir), "--test_time_speeds", "none", "--output", str(out), paths[0]]) == 0
    row = json.loads(out.read_text())
    np.testing.assert_allclose([row["probabilities"][c] for c in tta.class_names], before[0], atol=1e-5)
    exported = tmp_path / "one_pass.bin"
    assert export.main(["--workdir", str(workdir), "--test_time_speeds", "1", "--window", str(WINDOW_S),
                        "--output", str(exported)]) == 0
    assert json.loads(open(serving.metadata_path(str(exported))).read())["test_time_speeds"] == [1.0]
    with pytest.raises(SystemExit):
        predict.build_parser().parse_args(["--workdir", str(workdir), "--test_time_speeds", "0.1,1", paths[0]])
    assert "playback rates between 0.5 and 2" in capsys.readouterr().err

    info_path.write_text(json.dumps({**info, "test_time_speeds": [0.0]}))
    with pytest.raises(ValueError, match="model_info.json: test-time speeds must lie between"):
        Predictor.from_workdir(str(workdir))


def test_test_time_crops_average_evenly_spaced_crops_of_clips_longer_than_the_training_crops(trained, held_out):
    """`eval.test_time_crops`: a clip longer than the training crops is read as that many crops of their
    length, evenly spaced from its start to its end, its probabilities their mean; shorter clips are
    read whole, in the same batch."""
    model = TrainedModel.load(trained)

    def read(mels, **crops):
        mel, lengths = batching.pad_batch(mels, rows=len(mels), frames=max(len(m) for m in mels),
                                          columns=mels[0].shape[1])
        log_p = classify.log_probabilities(nnx.merge(model.graphdef, model.params, model.batch_stats), mel, lengths,
                                           prior_offset=model.info.prior_offset(), **crops)
        return np.exp(np.asarray(log_p))

    long_clip = max(held_out.mels, key=len)
    n = long_clip.shape[0]
    crop = n - 20  # Crops start at frames 0, 10 and 20.
    short = long_clip[:crop - 5]
    got = read([long_clip, short], crops=3, crop_frames=crop)
    each = read([long_clip[s:s + crop] for s in (0, 10, 20)])
    np.testing.assert_allclose(got[0], each.mean(0), atol=1e-5)
    np.testing.assert_allclose(got[1], read([short])[0], atol=1e-5)
    assert np.abs(got[0] - read([long_clip])[0]).max() > 1e-4  # The crops hear the clip otherwise.

    # Evaluation reads the split so at the training crops' length, and names the reading apart.
    config = config_files.load_from_workdir(trained)
    crop_frames = config.data.max_frames
    longer = [m for m in held_out.mels if len(m) > crop_frames]
    assert longer and len(longer) < len(held_out.mels)  # Both kinds of clip are evaluated.
    with config.unlocked():
        config.eval.split, config.eval.test_time_crops = "test", 3
    report = evaluate.evaluate(config, trained)
    assert report["test_time_crops"] == 3 and report["crop_frames"] == crop_frames
    assert report["output_dir"].endswith(f"_crops3_step{report['step']}")
    with open(os.path.join(report["output_dir"], "predictions.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    index = {p: i for i, p in enumerate(held_out.metadata["path"])}
    mels = [held_out.mels[index[r["path"]]] for r in rows]
    np.testing.assert_allclose([[float(r[c]) for c in model.info.class_names] for r in rows],
                               read(mels, crops=3, crop_frames=crop_frames), atol=1e-5)
    with config.unlocked():
        config.eval.test_time_crops = -1
    with pytest.raises(ValueError, match="test_time_crops must be >= 0"):
        evaluate.evaluate(config, trained)


def test_the_prior_correction_is_applied_alike_by_prediction_streaming_and_export(trained, predictor, held_out,
                                                                                   tmp_path, capsys):
    """A model recorded with a training class prior and a correction divides its probabilities by the
    prior (renormalised) wherever it is read; older models, which record none, read as they always did."""
    prior = (0.1, 0.9)  # As if angry had been drawn nine times as often as sad.
    workdir = tmp_path / "prior"
    shutil.copytree(trained, workdir)
    info_path = workdir / "model_info.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "class_prior": list(prior), "prior_correction": 1.0}))
    corrected = Predictor.from_workdir(str(workdir))
    assert corrected.info.class_prior == prior and corrected.info.prior_correction == 1.0

    plain = predictor.probabilities(held_out.mels[:4])
    expected = plain / np.asarray(prior)
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(corrected.probabilities(held_out.mels[:4]), expected, atol=1e-5)
    assert np.abs(expected - plain).max() > 0.05

    window = int(WINDOW_S * corrected.sample_rate)
    clip = sf.read(held_out.metadata["path"][0], dtype="float32")[0][:window]
    wave, n = np.pad(clip, (0, window - clip.size)), np.array([clip.size])
    raw = np.asarray(_window_fn(predictor)(wave[None], n))[0]
    in_process = np.asarray(corrected.window_function(window)(wave[None], n))[0]
    np.testing.assert_allclose(in_process, raw / np.asarray(prior) / np.sum(raw / np.asarray(prior)), atol=1e-5)
    exported = export.export_window(corrected, window)
    served = serving.ExportedClassifier(jax.export.deserialize(exported.serialize()))
    np.testing.assert_allclose(served(wave, clip.size), in_process, atol=1e-5)
    assert export.metadata(corrected, exported, window, 0)["prior_correction"] == 1.0

    # A deployment may read the model with the training mix's odds instead: --prior_correction 0.
    out = tmp_path / "uncorrected.jsonl"
    path = held_out.metadata["path"][0]
    assert predict.main(["--workdir", str(workdir), "--prior_correction", "0", "--output", str(out), path]) == 0
    row = json.loads(out.read_text())
    np.testing.assert_allclose([row["probabilities"][c] for c in corrected.class_names],
                               list(dict(predictor.predict_files([path]))[path]["probabilities"].values()), atol=1e-5)
    with pytest.raises(SystemExit):
        predict.build_parser().parse_args(["--workdir", str(workdir), "--prior_correction", "-1", path])
    assert "expected a number >= 0" in capsys.readouterr().err

    # 0 reads the model's own odds; a correction with no prior to divide by is refused, naming the file.
    info_path.write_text(json.dumps({**info, "class_prior": list(prior), "prior_correction": 0.0}))
    np.testing.assert_allclose(Predictor.from_workdir(str(workdir)).probabilities(held_out.mels[:4]), plain,
                               atol=1e-6)
    older = {k: v for k, v in info.items() if k not in ("class_prior", "prior_correction")}  # Recorded neither.
    info_path.write_text(json.dumps(older))
    assert ModelInfo.load(str(workdir)).prior_offset() is None
    info_path.write_text(json.dumps({**older, "prior_correction": 1.0}))
    with pytest.raises(ValueError, match="model_info.json: prior_correction must be >= 0 and needs the training"):
        Predictor.from_workdir(str(workdir))
    info_path.write_text(json.dumps({**info, "class_prior": [1.0, 0.0], "prior_correction": 1.0}))
    with pytest.raises(ValueError, match=r"never seen in training: \['angry'\]"):
        Predictor.from_workdir(str(workdir))


def test_exported_conformer_equals_the_in_process_one():
    """The conformer through the window function and `jax.export`; random weights export as trained ones do."""
    features = FeatureConfig(n_mels=24, pitch=False)  # The session's model has prosody; this one the log-Mel alone.
    model = create_model(dict(name="conformer", channels=(8,), d_model=16, num_layers=1, num_heads=2, conv_kernel=5),
                         num_classes=3, n_mels=features.n_mels, rngs=nnx.Rngs(0))
    info = ModelInfo(class_names=("sad", "angry", "calm"), features=features,
                     mean=np.full(features.n_mels, -40.0, np.float32), std=np.full(features.n_mels, 15.0, np.float32))
    predictor = Predictor(info, *nnx.split(model, nnx.Param, nnx.BatchStat))
    window = features.sample_rate  # 1 s
    served = serving.ExportedClassifier(jax.export.deserialize(export.export_window(predictor, window).serialize()))
    wave = synthetic.synthesize("angry", 0, 0, sample_rate=features.sample_rate)[:window]
    waves, counts = np.stack([wave, np.where(np.arange(window) < 7000, wave, 0.5)]), np.array([window, 7000])
    expected = np.asarray(predictor.window_function(window)(waves, counts))
    np.testing.assert_allclose(served(waves, counts), expected, atol=1e-5)  # Symbolic batch dimension.
    np.testing.assert_allclose(served(waves[1], 7000), expected[1], atol=1e-5)


def test_serving_needs_only_jax_and_numpy():
    tree = ast.parse(open(serving.__file__).read())
    imported = {a.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                 and node.module and node.level == 0}
    assert imported <= {"__future__", "json", "os", "jax", "numpy"}, imported


def test_streaming_classifier_hops_partial_windows_and_smoothing():
    calls = []

    def classify(window, n):  # Probability of class 1 = valid samples / window.
        calls.append((window.copy(), int(n[0])))
        p = n[0] / window.shape[1]
        return np.array([[1 - p, p]])

    def run(chunks, **kw):
        calls.clear()
        s = streaming.StreamingClassifier(classify, ("a", "b"), sample_rate=10, window_samples=30, hop_samples=5, **kw)
        return list(streaming.run(s, chunks)), list(calls)

    x = np.arange(1, 48, dtype=np.float32)
    whole, whole_calls = run([x])
    pieces, piece_calls = run(np.array_split(x, 13))
    assert [e.as_dict() for e in whole] == [e.as_dict() for e in pieces]
    assert [e.time for e in whole] == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 4.7]
    assert [n for _, n in whole_calls] == [5, 10, 15, 20, 25, 30, 30, 30, 30, 30]
    np.testing.assert_array_equal(whole_calls[1][0][0], np.r_[x[:10], np.zeros(20)])  # Partial: padded at the end.
    np.testing.assert_array_equal(whole_calls[-1][0][0], x[-30:])  # Full: the last 30 samples.
    assert whole[-1].start == pytest.approx(1.7)
    smoothed, _ = run([x], smoothing=3)
    assert smoothed[2].probabilities["b"] == pytest.approx((5 + 10 + 15) / 90)
    assert [e.label for e in whole] == ["a", "a", "a", "b", "b", "b", "b", "b", "b", "b"]


def test_raw_pcm_reader_converts_downmixes_and_resamples():
    rng = np.random.default_rng(0)
    pcm = (rng.uniform(-0.5, 0.5, (16000, 2)) * 32767).astype("<i2")
    chunks = list(streaming.raw_pcm_chunks(io.BytesIO(pcm.tobytes() + b"\x01"), 16000, "s16le", 2, 16000,
                                           chunk_samples=999))
    np.testing.assert_allclose(np.concatenate(chunks), pcm.astype(np.float32).mean(1) / 32768, atol=1e-7)
    t = np.arange(44100) / 44100
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype("<f4")
    out = np.concatenate(list(streaming.raw_pcm_chunks(io.BytesIO(tone.tobytes()), 44100, "f32le", 1, 16000)))
    assert abs(out.size - 16000) <= 2
    np.testing.assert_allclose(out[1000:15000], 0.3 * np.sin(2 * np.pi * 440 * np.arange(1000, 15000) / 16000),
                               atol=2e-3)


def test_cli_predicts_good_files_and_reports_bad_ones(trained, predictor, held_out, tmp_path):
    good = str(held_out.metadata["path"][0])
    folder = tmp_path / "folder" / "nested"
    folder.mkdir(parents=True)
    wave = synthetic.synthesize("angry", 5, 0, sample_rate=22050)
    flac = str(folder / "stereo.flac")  # Another rate and two channels, found by the folder search.
    sf.write(flac, np.stack([wave, 0.5 * wave], 1), 22050)
    (folder / "notes.txt").write_text("not audio, not searched")
    bad = {"empty.wav": b"", "text.wav": b"this is not audio at all"}
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
    sf.write(str(tmp_path / "silent.wav"), np.zeros(16000, np.float32), 16000)
    with open(good, "rb") as f:
        (tmp_path / "truncated.wav").write_bytes(f.read()[:20000])
    out = tmp_path / "out.csv"
    args = [good, str(tmp_path / "folder"), str(tmp_path / "*.wav"), str(tmp_path / "missing.wav")]
    proc = subprocess.run([sys.executable, "-m", "ser_jax.predict", "--workdir", trained, *args,
                           "--output", str(out)], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 1, proc.stderr
    for name, reason in [("empty.wav", "empty file"), ("text.wav", "unreadable"), ("silent.wav", "silent"),
                         ("truncated.wav", "truncated"), ("missing.wav", "no such file")]:
        assert any(name in line and reason in line for line in proc.stderr.splitlines()), (name, proc.stderr)
    rows = list(csv.DictReader(open(out)))
    assert [r["path"] for r in rows] == [good, flac]
    assert list(rows[0]) == ["path", "label", *predictor.class_names]
    expected = dict(predictor.predict_files([good, flac]))
    for r in rows:
        assert r["label"] == expected[r["path"]]["label"]
        np.testing.assert_allclose([float(r[c]) for c in predictor.class_names],
                                   list(expected[r["path"]]["probabilities"].values()), atol=1e-5)
    assert expected[flac]["label"] == "angry"


INFERENCE_ONLY = """
import json, sys
import numpy as np, soundfile as sf
from ser_jax import export, streaming
from ser_jax.predictor import Predictor

workdir, path = sys.argv[1:]
predictor = Predictor.from_workdir(workdir)
result = predictor.predict(*sf.read(path, dtype="float32"))
window = predictor.sample_rate
stream = streaming.StreamingClassifier(predictor.window_function(window), predictor.class_names,
                                       sample_rate=window, window_samples=window, hop_samples=window // 2)
estimates = list(streaming.run(stream, streaming.file_chunks(path, window, 1600)))
export.export_window(predictor, window, batch=1)
training_stack = ("ser_jax.train", "ser_jax.input_pipeline", "ser_jax.datasets", "data_prep", "grain",
                  "tensorflow_datasets")
loaded = sorted(m for m in sys.modules
                if m in training_stack or m.startswith(tuple(t + "." for t in training_stack)) or "grain" in m.split("."))
print(json.dumps({"label": result["label"], "estimates": len(estimates), "loaded": loaded}))
"""


def test_prediction_streaming_and_export_load_no_training_stack(trained, predictor, held_out):
    """A fresh process predicts, streams and exports; none of the training stack gets imported."""
    path = str(held_out.metadata["path"][0])
    proc = subprocess.run([sys.executable, "-c", INFERENCE_ONLY, trained, path], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["label"] == dict(predictor.predict_files([path]))[path]["label"]
    assert out["estimates"] > 0
    assert out["loaded"] == []


def test_checkpoints_without_the_model_item_are_refused_clearly(trained, tmp_path):
    old = tmp_path / "old_workdir"
    shutil.copytree(trained, old)
    for item in old.glob("checkpoints/*/model"):  # What checkpoints written before the model item lack.
        shutil.rmtree(item)
    with pytest.raises(FileNotFoundError, match=f"no 'model' item.*Train {old} again"):
        Predictor.from_workdir(str(old))


def test_a_packaged_model_predicts_as_its_workdir_does_with_no_workdir(trained, predictor, held_out, tmp_path):
    made = subprocess.run([sys.executable, "-m", "ser_jax.pretrained", "--workdir", trained, "--name", "tiny",
                           "--out_dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr[-3000:]
    folder = str(tmp_path / "tiny")
    packaged = Predictor.from_pretrained(folder)
    assert packaged.class_names == predictor.class_names and packaged.step == predictor.step
    paths = list(held_out.metadata["path"])
    expected = dict(predictor.predict_files(paths))
    for path, result in packaged.predict_files(paths):
        assert result["label"] == expected[path]["label"]
        np.testing.assert_allclose(list(result["probabilities"].values()),
                                   list(expected[path]["probabilities"].values()), atol=1e-6)
    cli = subprocess.run([sys.executable, "-m", "ser_jax.predict", "--model", folder, "--format", "jsonl", *paths[:4]],
                         cwd=REPO, capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert [json.loads(line)["label"] for line in cli.stdout.splitlines()] == [expected[p]["label"] for p in paths[:4]]
    with pytest.raises(FileNotFoundError, match="No packaged model 'nope'"):
        Predictor.from_pretrained("nope")


SHIPPED = ["ravdess_tess_cnn_bilstm", "ravdess_tess_conformer", "ravdess_tess_cnn_bilstm_x3", "ravdess_tess_cnn_bilstm_cnn"]


@pytest.mark.parametrize("name", SHIPPED)
def test_the_shipped_model_loads_and_predicts_with_no_workdir(name):
    predictor = Predictor.from_pretrained(name)
    assert predictor.class_names == ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
    t = np.arange(32000) / 16000
    result = predictor.predict(0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)), 16000)
    assert set(result["probabilities"]) == set(predictor.class_names)
    assert abs(sum(result["probabilities"].values()) - 1) < 1e-5


@pytest.mark.parametrize("name", SHIPPED)
def test_the_shipped_model_recognises_the_ravdess_actor_it_was_trained_on(ravdess_dir, name):
    from data_prep.corpora import ravdess

    predictor = Predictor.from_pretrained(name)
    paths = sorted(str(p) for p in (ravdess_dir / "Actor_01").iterdir())
    results = dict(predictor.predict_files(paths))
    assert len(results) == 60 and all(isinstance(r, dict) for r in results.values())
    correct = [results[p]["label"] == ravdess.parse(p).emotion for p in paths]
    # Actor 01 is in its training data: this checks the packaged weights and features, not generalisation.
    assert np.mean(correct) > 0.5


def test_an_ensemble_reads_as_one_model_the_mean_of_its_members(trained, predictor, held_out, tmp_path):
    """Packaged from several runs, an ensemble's probabilities are the mean of its members' (then the
    prior correction they record, once); from the command line and the API alike. Members that were
    trained on other data or read another way are refused."""
    import dataclasses

    from ser_jax import pretrained
    from ser_jax.trained_model import ensemble

    first = TrainedModel.load(trained)
    # A second member that errs differently: the same network with its weights scaled.
    second = dataclasses.replace(first, params=jax.tree.map(lambda p: 1.5 * p, first.params), checkpoint="second")
    config = config_files.load_from_workdir(trained).model.to_dict()
    pair, pair_config = ensemble([first, second], [config, config])
    assert pair_config == {"name": "ensemble", "members": [config, config]}

    mels = held_out.mels[:6]
    each = [Predictor.from_trained(m, prior_correction=0).probabilities(mels) for m in (first, second)]
    assert np.abs(each[0] - each[1]).max() > 0.05
    np.testing.assert_allclose(Predictor.from_trained(pair, prior_correction=0).probabilities(mels),
                               np.mean(each, axis=0), atol=1e-5)
    prior = np.asarray(predictor.info.class_prior)
    assert predictor.info.prior_correction == 1.0
    expected = np.mean(each, axis=0) / prior
    expected /= expected.sum(1, keepdims=True)
    folder = pretrained.save(pair, pair_config, str(tmp_path / "pair"))
    packaged = Predictor.from_pretrained(folder)
    np.testing.assert_allclose(packaged.probabilities(mels), expected, atol=1e-5)
    # Exported from its package, the ensemble's window function is the in-process one.
    out = str(tmp_path / "pair.bin")
    assert export.main(["--model", folder, "--output", out]) == 0
    window = int(WINDOW_S * packaged.sample_rate)
    clip = sf.read(held_out.metadata["path"][0], dtype="float32")[0][:window]
    wave, n = np.pad(clip, (0, window - clip.size)), np.array([clip.size])
    served = serving.load_exported(out)
    np.testing.assert_allclose(served(wave, clip.size), np.asarray(packaged.window_function(window)(wave[None], n))[0],
                               atol=1e-5)
    assert json.loads(open(serving.metadata_path(out)).read())["model"] == folder
    # Evaluated on the workdir's test speakers (--config.eval.model), it scores what prediction reads.
    eval_config = config_files.load_from_workdir(trained)
    with eval_config.unlocked():
        eval_config.eval.model, eval_config.eval.output_dir = folder, str(tmp_path / "pair_eval")
    report = evaluate.evaluate(eval_config, trained)
    assert report["model"] == report["checkpoint"] == folder
    with open(tmp_path / "pair_eval" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    index = {p: i for i, p in enumerate(held_out.metadata["path"])}
    np.testing.assert_allclose([[float(r[c]) for c in packaged.class_names] for r in rows],
                               packaged.probabilities([held_out.mels[index[r["path"]]] for r in rows]), atol=1e-5)

    # The command line packs workdirs: two copies of one model read exactly as that model.
    made = subprocess.run([sys.executable, "-m", "ser_jax.pretrained", "--workdir", f"{trained},{trained}",
                           "--name", "twice", "--out_dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr[-3000:]
    assert "as one ensemble" in made.stdout
    np.testing.assert_allclose(Predictor.from_pretrained(str(tmp_path / "twice")).probabilities(mels),
                               predictor.probabilities(mels), atol=1e-5)

    other_data = dataclasses.replace(second, info=dataclasses.replace(second.info, mean=second.info.mean + 1))
    with pytest.raises(ValueError, match="second cannot join an ensemble.*normalisation statistics"):
        ensemble([first, other_data], [config, config])
    read_otherwise = dataclasses.replace(second, info=second.info.with_prior_correction(0.0))
    with pytest.raises(ValueError, match="differs in its prior correction"):
        ensemble([first, read_otherwise], [config, config])
    with pytest.raises(ValueError, match="at least two"):
        ensemble([first], [config])
    with pytest.raises(ValueError, match="not trained"):
        pair_model = nnx.merge(pair.graphdef, pair.params, pair.batch_stats)
        pair_model(mels[0][None], np.array([mels[0].shape[0]]), train=True)
