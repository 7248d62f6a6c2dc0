"""The synthetic corpus: deterministic, speech-like, emotion-dependent, and generated on demand."""

import os

import numpy as np
import pytest
import soundfile as sf

from data_prep.corpora import base, synthetic


def test_bit_identical_for_the_same_arguments():
    first = synthetic.synthesize("happy", 3, 1, seed=7)
    synthetic.synthesize("sad", 2, 0, seed=7)  # Nothing carried over between calls.
    again = synthetic.synthesize("happy", 3, 1, seed=7)
    assert first.dtype == np.float32 and first.ndim == 1
    assert first.tobytes() == again.tobytes()


@pytest.mark.parametrize("other", [("sad", 3, 1, 7), ("happy", 4, 1, 7), ("happy", 3, 2, 7), ("happy", 3, 1, 8)])
def test_other_emotion_speaker_utterance_or_seed_differs(other):
    emotion, speaker, utterance, seed = other
    a = synthetic.synthesize("happy", 3, 1, seed=7)
    b = synthetic.synthesize(emotion, speaker, utterance, seed=seed)
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_range_and_duration():
    for emotion in synthetic.PROSODY:
        for speaker in range(2):
            wave = synthetic.synthesize(emotion, speaker, 3)
            assert np.all(np.isfinite(wave)) and np.max(np.abs(wave)) <= 1.0
            assert np.max(np.abs(wave)) > 0.01
            assert synthetic.MIN_SECONDS <= wave.size / 16000 <= synthetic.MAX_SECONDS


@pytest.mark.parametrize("sample_rate", [8000, 48000])
def test_other_sample_rates(sample_rate):
    wave = synthetic.synthesize("angry", 0, 0, sample_rate=sample_rate)
    reference = synthetic.synthesize("angry", 0, 0)
    assert abs(wave.size / sample_rate - reference.size / 16000) < 1e-3
    assert np.all(np.isfinite(wave)) and np.max(np.abs(wave)) <= 1.0


def test_emotions_move_prosody_the_expected_way():
    """Angry is louder and faster than sad for every speaker (the cues a model can learn)."""
    for speaker in range(4):
        angry = [synthetic.synthesize("angry", speaker, u) for u in range(2)]
        sad = [synthetic.synthesize("sad", speaker, u) for u in range(2)]
        assert np.mean([np.std(w) for w in angry]) > 2 * np.mean([np.std(w) for w in sad])
        assert np.mean([w.size for w in angry]) < np.mean([w.size for w in sad])


def test_emotion_vocabulary():
    assert set(synthetic.PROSODY) == set(base.EMOTIONS)
    assert synthetic.LAYOUTS["ravdess"].emotions == (
        "neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
    with pytest.raises(ValueError, match="Unknown emotion"):
        synthetic.synthesize("bored", 0, 0)


def test_write_corpus_caps_and_filters(tmp_path):
    tess = synthetic.write_corpus(str(tmp_path / "tess"), "tess", n_speakers=5, utterances_per_emotion=1,
                                  emotions=["calm", "sad"])
    assert [os.path.relpath(p, tmp_path / "tess") for p in tess] == [
        os.path.join("OAF_sad", "OAF_back_sad.wav"), os.path.join("YAF_sad", "YAF_back_sad.wav")]
    emodb = synthetic.write_corpus(str(tmp_path / "emodb"), "emodb", n_speakers=1, utterances_per_emotion=1)
    assert sorted(os.path.basename(p)[5] for p in emodb) == sorted("WLEAFTN")
    with pytest.raises(ValueError, match="Unknown emotions"):
        synthetic.write_corpus(str(tmp_path), "savee", emotions=["joy"])
    with pytest.raises(ValueError, match="Unknown layout"):
        synthetic.write_corpus(str(tmp_path), "iemocap")


def test_write_corpus_is_idempotent(tmp_path):
    kwargs = dict(n_speakers=1, utterances_per_emotion=1, emotions=["fearful", "neutral"])
    paths = synthetic.write_corpus(str(tmp_path), "crema_d", **kwargs)
    contents = [open(p, "rb").read() for p in paths]
    assert synthetic.write_corpus(str(tmp_path), "crema_d", **kwargs) == paths
    assert [open(p, "rb").read() for p in paths] == contents


def test_scan_generates_into_an_empty_folder_then_reuses_it(tmp_path):
    folder = str(tmp_path / "synthetic")
    scan = synthetic.scan(folder, n_speakers=2, utterances_per_emotion=1, seed=3)
    assert scan.problems == []
    assert len(scan.utterances) == 2 * 8
    assert {u.corpus for u in scan.utterances} == {"synthetic"}
    assert {u.speaker: u.gender for u in scan.utterances} == {"synthetic/01": "male", "synthetic/02": "female"}
    assert sorted({u.emotion for u in scan.utterances}) == sorted(synthetic.LAYOUTS["ravdess"].emotions)
    assert os.listdir(tmp_path) == ["synthetic"]  # No staging folder left behind.
    stamp = os.path.getmtime(scan.utterances[0].path)
    rescan = synthetic.scan(folder, n_speakers=2, utterances_per_emotion=1, seed=3)
    assert rescan.utterances == scan.utterances
    assert os.path.getmtime(scan.utterances[0].path) == stamp
    with pytest.raises(ValueError, match="generated with .*'n_speakers': 2.*requested .*'n_speakers': 5"):
        synthetic.scan(folder, n_speakers=5, utterances_per_emotion=1, seed=3)


def test_interrupted_generation_leaves_nothing_a_later_scan_would_read(tmp_path, monkeypatch):
    folder = str(tmp_path / "synthetic")
    real_write = sf.write
    calls = []

    def dies_on_the_fifth_file(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 5:
            raise KeyboardInterrupt
        real_write(*args, **kwargs)

    monkeypatch.setattr(sf, "write", dies_on_the_fifth_file)
    with pytest.raises(KeyboardInterrupt):
        synthetic.scan(folder, n_speakers=2, utterances_per_emotion=1)
    assert all(not p.startswith(folder + os.sep) for p in calls)  # Written only in the staging folder ...
    assert os.listdir(tmp_path) == []  # ... which is gone, and the corpus folder never appeared.
    monkeypatch.setattr(sf, "write", real_write)
    assert len(synthetic.scan(folder, n_speakers=2, utterances_per_emotion=1).utterances) == 16


def test_scan_reads_unmarked_audio_as_it_is_and_refuses_a_folder_of_other_files(tmp_path):
    own = tmp_path / "own"
    synthetic.write_corpus(str(own), "ravdess", n_speakers=1, utterances_per_emotion=1, emotions=["sad"])
    assert [u.emotion for u in synthetic.scan(str(own), n_speakers=4).utterances] == ["sad"]
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "README.txt").write_text("not audio")
    with pytest.raises(ValueError, match="holds no audio but is not empty"):
        synthetic.scan(str(notes))
