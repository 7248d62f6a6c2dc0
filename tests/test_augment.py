import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ser_jax import augment, warping
from ser_jax.features import FeatureConfig, mel_center_frequencies

FEATURES = FeatureConfig(n_mels=40)
MEL_HZ = mel_center_frequencies(FEATURES)
STD_DB = np.linspace(5.0, 15.0, FEATURES.n_mels).astype(np.float32)  # Bins of unequal spread, as in real data.
BINS = warping.MelBins(MEL_HZ, STD_DB)


def _peak_image(frames=60, peak_hz=1000.0, length=50):
    """One example whose every valid frame peaks at the mel bin nearest `peak_hz`."""
    k = int(np.argmin(np.abs(MEL_HZ - peak_hz)))
    x = np.zeros((1, frames, FEATURES.n_mels), np.float32)
    x[0, :length, k] = 1.0
    x[0, :length, k - 1] = x[0, :length, k + 1] = 0.5
    return jnp.asarray(x), jnp.array([length])


def _peak_hz(image, frame=0):
    return float(MEL_HZ[int(np.argmax(np.asarray(image)[0, frame]))])


def test_scale_frequencies_moves_a_peak_by_the_factor():
    x, _ = _peak_image(peak_hz=1000.0)
    for factor in (0.8, 1.25):
        moved = warping.scale_frequencies(x, jnp.array([factor]), MEL_HZ)
        assert abs(_peak_hz(moved) - 1000.0 * factor) < 0.08 * 1000.0 * factor
    np.testing.assert_allclose(warping.scale_frequencies(x, jnp.array([1.0]), MEL_HZ), x, atol=1e-6)


def test_change_speed_shortens_the_utterance_and_raises_its_pitch():
    x, lengths = _peak_image(length=50, peak_hz=800.0)
    faster, new_lengths = warping.change_speed(x, lengths, jnp.array([1.25]), BINS)
    assert int(new_lengths[0]) == 40
    assert np.all(np.asarray(faster)[0, 40:] == 0)  # Past the new length: padding stays zero.
    assert abs(_peak_hz(faster) - 1000.0) < 80.0
    slower, slow_lengths = warping.change_speed(x, lengths, jnp.array([0.8]), BINS)
    assert int(slow_lengths[0]) == 60  # 62.5 frames, capped at the batch's 60.
    assert _peak_hz(slower) < 700.0
    same, same_lengths = warping.change_speed(x, lengths, jnp.array([1.0]), BINS)
    np.testing.assert_allclose(same, x, atol=1e-6)
    assert int(same_lengths[0]) == 50


def test_change_channel_adds_one_level_and_a_linear_tilt_in_db_to_valid_frames_only():
    x = jax.random.normal(jax.random.key(0), (64, 30, FEATURES.n_mels))
    lengths = jnp.full((64,), 20)
    out = augment.change_channel(jax.random.key(3), x, lengths, gain_db=6.0, tilt_db=10.0, std_db=STD_DB)
    shift_db = np.asarray(out - x) * STD_DB  # Back from normalised units to decibels.
    np.testing.assert_array_equal(np.asarray(out)[:, 20:], np.asarray(x)[:, 20:])  # Padding untouched.
    np.testing.assert_allclose(shift_db[:, 1:20], np.broadcast_to(shift_db[:, :1], shift_db[:, 1:20].shape),
                               atol=1e-4)  # The same shift in every valid frame of an example.
    per_bin = shift_db[:, 0]
    level, tilt = per_bin.mean(axis=1), per_bin[:, -1] - per_bin[:, 0]
    np.testing.assert_allclose(np.diff(per_bin, 2, axis=1), 0.0, atol=1e-4)  # Linear along the mel axis.
    assert np.all(np.abs(level) <= 6.0) and np.all(np.abs(tilt) <= 10.0 + 1e-4)
    assert level.std() > 2.0 and tilt.std() > 3.0  # Both actually vary between examples.
    flat = augment.change_channel(jax.random.key(3), x, lengths, gain_db=6.0, tilt_db=0.0, std_db=STD_DB)
    flat_db = np.asarray(flat - x)[:, 0] * STD_DB
    np.testing.assert_allclose(flat_db, np.broadcast_to(flat_db[:, :1], flat_db.shape), atol=1e-4)


def test_freq_mixstyle_moves_each_bins_statistics_between_two_real_examples_and_keeps_the_pattern():
    key = jax.random.key(0)
    x = jax.random.normal(key, (8, 30, FEATURES.n_mels)) * jnp.linspace(0.5, 2.0, 8)[:, None, None]
    x = x + jnp.arange(8.0)[:, None, None]  # Every example its own level and spread.
    lengths = jnp.array([30, 25, 20, 30, 15, 30, 10, 30])
    valid = np.arange(30)[None, :, None] < np.asarray(lengths)[:, None, None]
    x = jnp.where(valid, x, 0.0)

    def stats(a):
        a = np.asarray(a, np.float64)
        n = np.asarray(lengths)[:, None]
        mu = np.where(valid, a, 0).sum(1) / n
        return mu, np.sqrt(np.where(valid, (a - mu[:, None]) ** 2, 0).sum(1) / n)

    out = augment.mix_frequency_style(jax.random.key(1), x, lengths, p=1.0, alpha=0.3)
    np.testing.assert_array_equal(np.asarray(out)[~np.broadcast_to(valid, out.shape)], 0.0)  # Padding stays zero.
    mu, sigma = stats(x)
    new_mu, new_sigma = stats(out)
    assert not np.allclose(new_mu, mu, atol=0.05)
    # Every example's new means lie between its own and one partner's, all bins with the same share.
    for i in range(8):
        share = [(new_mu[i] - mu[j]) / (mu[i] - mu[j]) for j in range(8) if j != i]
        assert any(np.allclose(s, s.mean(), atol=1e-3) and -1e-3 <= s.mean() <= 1 + 1e-3 for s in share), i
    pattern = lambda a, m, s: np.where(valid, (np.asarray(a) - m[:, None]) / s[:, None], 0)
    np.testing.assert_allclose(pattern(out, new_mu, new_sigma), pattern(x, mu, sigma), atol=1e-3)
    np.testing.assert_array_equal(augment.mix_frequency_style(jax.random.key(1), x, lengths, p=0.0, alpha=0.3), x)


def test_mixstyle_f0_moves_the_log_f0_mean_with_the_spectrum_and_keeps_the_contour():
    features = FeatureConfig(n_mels=FEATURES.n_mels, pitch=True)
    bins = warping.MelBins.of(features, np.concatenate([STD_DB, [0.2, 0.5]]).astype(np.float32))
    f0 = bins.log_f0_column
    assert f0 == FEATURES.n_mels + 1
    b, t = 8, 30
    x = jax.random.normal(jax.random.key(0), (b, t, features.dim)) + jnp.arange(b, dtype=jnp.float32)[:, None, None]
    lengths = jnp.array([30, 25, 20, 30, 15, 30, 10, 30])
    valid = np.arange(t)[None, :] < np.asarray(lengths)[:, None]
    x = jnp.where(valid[..., None], x, 0.0)
    without = augment.mix_frequency_style(jax.random.key(1), x, lengths, 1.0, 0.3, n_mels=FEATURES.n_mels)
    out = augment.mix_frequency_style(jax.random.key(1), x, lengths, 1.0, 0.3, n_mels=FEATURES.n_mels, f0_column=f0)
    np.testing.assert_array_equal(out[..., :f0], without[..., :f0])  # Mel bins as before; periodicity untouched.
    np.testing.assert_array_equal(out[..., FEATURES.n_mels], x[..., FEATURES.n_mels])
    np.testing.assert_array_equal(without[..., f0], x[..., f0])
    x, out, without = (np.asarray(a, np.float64) for a in (x, out, without))
    n = np.asarray(lengths)
    mean = lambda a, col: np.where(valid, a[..., col], 0).sum(1) / n
    # The log F0 column is shifted by a constant per example (contour and range kept)...
    shift = np.where(valid, out[..., f0] - x[..., f0], np.nan)
    np.testing.assert_allclose(np.nanmax(shift, 1) - np.nanmin(shift, 1), 0.0, atol=1e-4)
    np.testing.assert_array_equal(out[~valid][:, f0], 0.0)
    # ...to the same mix of the two examples' means as the first mel bin's: the partner's register.
    mu_mel, mu_f0 = mean(x, 0), mean(x, f0)
    share = (mean(out, 0)[:, None] - mu_mel[None, :]) / (mu_mel[:, None] - mu_mel[None, :] + np.eye(b))
    f0_share = (mean(out, f0)[:, None] - mu_f0[None, :]) / (mu_f0[:, None] - mu_f0[None, :] + np.eye(b))
    assert all(np.any(np.abs(share[i] - f0_share[i])[np.arange(b) != i] < 1e-3) for i in range(b))
    assert not np.allclose(mean(out, f0), mu_f0, atol=0.05)
    cfg = ml_collections.ConfigDict(dict(speed=0.0, vtlp=0.0, freq_mixstyle=1.0, mixstyle_alpha=0.3, mixstyle_f0=True,
                                         gain_db=0.0, tilt_db=0.0, spec_augment=False, mixup=False))
    with np.testing.assert_raises_regex(ValueError, "features.pitch=True"):
        augment.apply(jax.random.key(1), jnp.asarray(x[..., :FEATURES.n_mels]), lengths, jnp.eye(b), cfg, BINS)


def test_apply_is_the_identity_with_everything_off_and_random_with_each_perturbation_on():
    cfg = ml_collections.ConfigDict(dict(speed=0.0, vtlp=0.0, freq_mixstyle=0.0, mixstyle_alpha=0.3, mixstyle_f0=False,
                                         gain_db=0.0, tilt_db=0.0, spec_augment=False,
                                         freq_masks=2, freq_mask_width=5, time_masks=2, time_mask_width=5,
                                         mixup=False, mixup_alpha=0.4))
    x = jax.random.normal(jax.random.key(0), (4, 30, FEATURES.n_mels))
    lengths, targets = jnp.array([30, 20, 10, 5]), jnp.eye(4)
    out = augment.apply(jax.random.key(1), x, lengths, targets, cfg, BINS)
    np.testing.assert_array_equal(out[0], x)
    for switch in ("gain_db", "tilt_db", "freq_mixstyle"):
        on = cfg.copy_and_resolve_references()
        on[switch] = 6.0
        a = augment.apply(jax.random.key(1), x, lengths, targets, on, BINS)
        assert not np.allclose(a[0], x), switch
    cfg.speed, cfg.vtlp = 0.2, 0.1
    a = augment.apply(jax.random.key(1), x, lengths, targets, cfg, BINS)
    b = augment.apply(jax.random.key(2), x, lengths, targets, cfg, BINS)
    assert not np.allclose(a[0], b[0])
    assert np.all(np.asarray(a[1]) >= 1) and np.all(np.asarray(a[1]) <= 30)


def test_prosody_columns_move_with_speed_only_and_are_never_frequency_masked():
    features = FeatureConfig(n_mels=FEATURES.n_mels, pitch=True)
    std = np.concatenate([STD_DB, [0.2, 0.5]]).astype(np.float32)  # Periodicity, then log2 F0 (octaves).
    bins = warping.MelBins.of(features, std)
    assert bins.log_f0_std == 0.5 and np.array_equal(bins.std_db, STD_DB)
    x = jax.random.normal(jax.random.key(0), (8, 30, features.dim))
    lengths = jnp.full((8,), 30)
    targets = jnp.eye(8)
    cfg = ml_collections.ConfigDict(dict(speed=0.0, vtlp=0.2, freq_mixstyle=1.0, mixstyle_alpha=0.3, mixstyle_f0=False,
                                         gain_db=6.0, tilt_db=10.0, spec_augment=True,
                                         freq_masks=2, freq_mask_width=40, time_masks=0, time_mask_width=5,
                                         mixup=False, mixup_alpha=0.4))
    out = np.asarray(augment.apply(jax.random.key(1), x, lengths, targets, cfg, bins)[0])
    np.testing.assert_array_equal(out[..., FEATURES.n_mels:], np.asarray(x)[..., FEATURES.n_mels:])
    assert not np.allclose(out[..., :FEATURES.n_mels], np.asarray(x)[..., :FEATURES.n_mels])
    # Constant columns over time: resampling frames keeps them, so only the F0 shift remains.
    flat = jnp.broadcast_to(x[:, :1], x.shape)
    faster, _ = warping.change_speed(flat, lengths, jnp.full((8,), 1.25), bins)
    shift = np.asarray(faster - flat)[:, :20, FEATURES.n_mels:]
    np.testing.assert_allclose(shift[..., 0], 0.0, atol=1e-5)
    np.testing.assert_allclose(shift[..., 1], np.log2(1.25) / 0.5, atol=1e-5)  # A quarter faster: F0 up 0.32 octave.
