import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from ser_jax.features import (PROSODY_COLUMNS, FeatureConfig, _autocorrelation, _pitch_analysis, clip_features,
                              frame_features, hz_to_mel, log_mel, loud_span, mel_center_frequencies, mel_filterbank,
                              mel_to_hz, prosody, trim_silence)


def _speechlike(seconds=1.3, sr=16000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140 * (1 + 0.2 * np.sin(2 * np.pi * 1.5 * t))
    y = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / sr) / k for k in range(1, 12)) * 0.2
    y = y * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.003 * rng.standard_normal(t.size)
    y[: sr // 10] = 0.0  # Digital silence exercises the amin floor.
    return y.astype(np.float32)


def _librosa_log_mel(y, cfg):
    s = librosa.feature.melspectrogram(
        y=y, sr=cfg.sample_rate, n_fft=cfg.fft_size, hop_length=cfg.hop_length, win_length=cfg.win_length,
        window="hann", center=True, pad_mode="constant", power=2.0, n_mels=cfg.n_mels, fmin=cfg.fmin,
        fmax=cfg.fmax, htk=False, norm="slaney")
    return librosa.power_to_db(s, ref=1.0, amin=cfg.amin, top_db=None).T


@pytest.mark.parametrize("cfg", [FeatureConfig(), FeatureConfig(sample_rate=22050, n_mels=64, window_ms=30, hop_ms=12.5, fmin=50, fmax=8000)])
def test_numpy_log_mel_equals_librosa(cfg):
    y = _speechlike(sr=cfg.sample_rate)
    ours = log_mel(y.astype(np.float64), cfg)
    ref = _librosa_log_mel(y.astype(np.float64), cfg)
    assert ours.shape == ref.shape == (cfg.num_frames(y.size), cfg.n_mels)
    np.testing.assert_allclose(ours, ref, atol=1e-3, rtol=0)


@pytest.mark.parametrize("cfg", [
    FeatureConfig(),
    FeatureConfig(sample_rate=8000, n_mels=40, window_ms=32),
    FeatureConfig(sample_rate=22050, n_mels=64, fmin=50, fmax=8000),
    FeatureConfig(sample_rate=48000, n_mels=128, n_fft=2048, fmin=20),
])
def test_mel_filterbank_equals_librosa(cfg):
    ref = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.fft_size, n_mels=cfg.n_mels, fmin=cfg.fmin,
                              fmax=cfg.fmax, htk=False, norm="slaney", dtype=np.float64)
    ours = mel_filterbank(cfg)
    assert ours.shape == (cfg.fft_size // 2 + 1, cfg.n_mels)
    np.testing.assert_allclose(ours, ref.T, rtol=1e-10, atol=1e-15)


def test_mel_scale_equals_librosa_and_inverts():
    hz = np.array([0.0, 1.0, 440.0, 999.9, 1000.0, 1000.1, 4000.0, 24000.0])
    np.testing.assert_allclose(hz_to_mel(hz), librosa.hz_to_mel(hz, htk=False), rtol=1e-12)
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(hz)), hz, rtol=1e-12, atol=1e-9)


def test_too_many_mels_for_the_fft_warns():
    with pytest.warns(UserWarning, match="cover no FFT bin"):
        mel_filterbank(FeatureConfig(sample_rate=8000, n_mels=128, window_ms=16))


def test_jitted_jax_log_mel_equals_librosa_float32():
    cfg = FeatureConfig()
    y = _speechlike()
    ours = np.asarray(jax.jit(lambda w: log_mel(w, cfg, jnp))(jnp.asarray(y)))
    np.testing.assert_allclose(ours, _librosa_log_mel(y.astype(np.float64), cfg), atol=1e-3, rtol=0)


def test_batched_equals_single():
    cfg = FeatureConfig()
    ys = np.stack([_speechlike(seed=s) for s in range(3)]).astype(np.float64)
    batched = log_mel(ys, cfg)
    for i in range(3):
        np.testing.assert_array_equal(batched[i], log_mel(ys[i], cfg))


def test_derived_sizes_and_unknown_keys():
    cfg = FeatureConfig()
    assert (cfg.win_length, cfg.hop_length, cfg.fft_size) == (400, 160, 512)
    assert FeatureConfig.from_mapping({"n_mels": 40}).n_mels == 40
    with pytest.raises(ValueError, match="n_mel"):
        FeatureConfig.from_mapping({"n_mel": 40})
    assert (cfg.dim, FeatureConfig(pitch=False).dim) == (40 + len(PROSODY_COLUMNS), 40)
    # Settings stored before `pitch` existed describe log-Mel-only features; given, it is kept.
    assert FeatureConfig.from_mapping({"n_mels": 40}).pitch is False
    assert FeatureConfig.from_mapping({"pitch": True}).pitch is True


def _tone(sr, seconds=0.5):
    return 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(sr * seconds)) / sr)

@pytest.mark.parametrize("top_db", [20, 40, 60])
def test_trim_silence_equals_librosa_trim(top_db):
    sr = 16000
    rng = np.random.default_rng(0)
    speech = _tone(sr, seconds=0.7) * np.hanning(int(0.7 * sr))
    noise = lambda n: 1e-4 * rng.normal(size=n)  # noqa: E731 - room noise around the "speech".
    y = np.concatenate([noise(9000), speech, noise(5000)]).astype(np.float32)
    trimmed = trim_silence(y, FeatureConfig(trim_db=top_db))  # 25 ms windows, 10 ms hops at 16 kHz.
    expected, _ = librosa.effects.trim(y, top_db=top_db, frame_length=400, hop_length=160)
    np.testing.assert_array_equal(trimmed, expected)
    assert 0.5 * sr < trimmed.size < y.size - 10000  # The noise went, the tone stayed.


def test_trim_silence_keeps_loud_edges_and_a_whole_window_around_a_click():
    y = _tone(16000)
    assert trim_silence(y, FeatureConfig(trim_db=40)).size == y.size
    click = np.zeros(8000)
    click[5000] = 1.0
    kept = trim_silence(click, FeatureConfig(trim_db=40))
    assert kept.size == 400 and kept.max() == 1.0  # One analysis window, the click inside it.


def test_clip_features_are_trimmed_only_when_configured():
    y = np.concatenate([np.zeros(4000), _tone(16000), np.zeros(4000)]) + 1e-5
    full = clip_features(y, FeatureConfig(n_mels=24, trim_db=None))
    trimmed = clip_features(y, FeatureConfig(n_mels=24, trim_db=40))
    assert full.shape[0] == 1 + y.size // 160 and trimmed.shape[0] < full.shape[0] - 40


def test_mel_center_frequencies_equal_librosa():
    cfg = FeatureConfig(n_mels=40, fmin=50.0, fmax=7600.0)
    np.testing.assert_allclose(mel_center_frequencies(cfg), librosa.mel_frequencies(42, fmin=50.0, fmax=7600.0)[1:-1])


def test_jax_trimming_of_partly_filled_windows_equals_numpy_on_the_valid_audio():
    cfg = FeatureConfig(trim_db=30)
    y = np.concatenate([1e-4 * np.ones(3000), _tone(16000, 0.6) * np.hanning(9600), 1e-4 * np.ones(6000)])
    windows = np.zeros((3, 24000), np.float32)
    valid = [y.size, 12000, 400]
    for row, n in enumerate(valid):
        windows[row, :n] = y[:n]
    start, end = jax.jit(lambda w, n: loud_span(w, n, cfg, xp=jnp))(windows, jnp.array(valid))
    for row, n in enumerate(valid):
        expected = loud_span(windows[row, :n].astype(np.float64), n, cfg)
        assert (int(start[row]), int(end[row])) == tuple(map(int, expected))
    assert int(end[0]) - int(start[0]) < y.size - 8000  # The quiet edges went.


def _harmonic(f0_hz, sr=16000, seconds=0.6, seed=0):
    """A voice-like harmonic tone with F0 f0_hz (a scalar or one value per sample), in light noise."""
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * np.cumsum(np.broadcast_to(f0_hz, t.shape)) / sr
    y = sum(np.sin(k * phase) / k for k in range(1, 10)) * 0.2
    return y + 0.002 * np.random.default_rng(seed).standard_normal(t.size)


@pytest.mark.parametrize("f0", [80.0, 130.0, 310.0, 560.0])
def test_prosody_finds_the_f0_of_a_harmonic_voice_across_the_range(f0):
    periodicity, log_f0 = prosody(_harmonic(f0), FeatureConfig()).T
    inner = slice(5, -5)  # Away from the edges, where the window runs into the zero padding.
    np.testing.assert_allclose(100 * 2 ** log_f0[inner], f0, rtol=0.01)
    assert np.all(periodicity[inner] > 0.9)


def test_prosody_follows_a_moving_contour_and_rejects_noise_and_silence():
    cfg, sr = FeatureConfig(), 16000
    t = np.arange(int(1.2 * sr)) / sr
    f0 = 140 * (1 + 0.2 * np.sin(2 * np.pi * 1.5 * t))  # 112-168 Hz, as a rising and falling sentence.
    periodicity, log_f0 = prosody(_harmonic(f0, seconds=1.2), cfg).T
    centres = np.arange(periodicity.size) * cfg.hop_length
    inner = slice(5, -5)
    np.testing.assert_allclose(100 * 2 ** log_f0[inner], f0[np.minimum(centres, t.size - 1)][inner], rtol=0.02)
    noise = prosody(0.1 * np.random.default_rng(1).standard_normal(sr), cfg)
    assert np.median(noise[:, 0]) < 0.4
    silence = prosody(np.zeros(sr), cfg)
    np.testing.assert_array_equal(silence[:, 0], 0.0)
    assert np.all(np.isfinite(silence))


def test_interpolated_quarter_lags_match_a_four_times_padded_transform():
    """Half-sample lags are transformed, the quarter lags between them interpolated: they must stay
    within 1e-5 of the exact values, for voices and for white noise (energy up to Nyquist)."""
    cfg = FeatureConfig(pitch=True)
    win, n_fft, min_lag, max_lag, hann, _ = _pitch_analysis(cfg)
    rng = np.random.default_rng(0)
    frames = np.stack([_harmonic(f0)[:win] for f0 in (90.0, 220.0, 480.0)] + [rng.standard_normal(win)]) * hann
    spectrum = np.fft.rfft(frames, n_fft)
    energy, ac = _autocorrelation(spectrum, n_fft, min_lag - 1, max_lag + 2, np)
    exact = np.fft.irfft(np.abs(spectrum) ** 2, n=4 * n_fft)
    np.testing.assert_allclose(energy, exact[:, 0], rtol=1e-9)
    np.testing.assert_allclose(ac / energy[:, None], exact[:, min_lag - 1:max_lag + 2] / exact[:, :1], atol=1e-5)


def test_pitch_appends_prosody_frame_for_frame_and_jax_matches_numpy():
    cfg = FeatureConfig(pitch=True)
    y = _speechlike()
    both = frame_features(y.astype(np.float64), cfg)
    mel = log_mel(y.astype(np.float64), cfg)
    assert both.shape == (mel.shape[0], cfg.dim)
    np.testing.assert_array_equal(both[:, :cfg.n_mels], mel)
    np.testing.assert_array_equal(both[:, cfg.n_mels:], prosody(y.astype(np.float64), cfg))
    ours = np.asarray(jax.jit(lambda w: frame_features(w, cfg, jnp))(jnp.asarray(y)))
    np.testing.assert_allclose(ours[:, cfg.n_mels:], both[:, cfg.n_mels:], atol=1e-4, rtol=0)
    assert clip_features(y, cfg).shape[1] == cfg.dim
