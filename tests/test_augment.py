import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ser_jax import augment
from ser_jax.features import FeatureConfig, mel_center_frequencies

FEATURES = FeatureConfig(n_mels=40)
MEL_HZ = mel_center_frequencies(FEATURES)


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
        moved = augment.scale_frequencies(x, jnp.array([factor]), MEL_HZ)
        assert abs(_peak_hz(moved) - 1000.0 * factor) < 0.08 * 1000.0 * factor
    np.testing.assert_allclose(augment.scale_frequencies(x, jnp.array([1.0]), MEL_HZ), x, atol=1e-6)


def test_change_speed_shortens_the_utterance_and_raises_its_pitch():
    x, lengths = _peak_image(length=50, peak_hz=800.0)
    faster, new_lengths = augment.change_speed(x, lengths, jnp.array([1.25]), MEL_HZ)
    assert int(new_lengths[0]) == 40
    assert np.all(np.asarray(faster)[0, 40:] == 0)  # Past the new length: padding stays zero.
    assert abs(_peak_hz(faster) - 1000.0) < 80.0
    slower, slow_lengths = augment.change_speed(x, lengths, jnp.array([0.8]), MEL_HZ)
    assert int(slow_lengths[0]) == 60  # 62.5 frames, capped at the batch's 60.
    assert _peak_hz(slower) < 700.0
    same, same_lengths = augment.change_speed(x, lengths, jnp.array([1.0]), MEL_HZ)
    np.testing.assert_allclose(same, x, atol=1e-6)
    assert int(same_lengths[0]) == 50


def test_apply_is_the_identity_with_everything_off_and_random_with_speed_on():
    cfg = ml_collections.ConfigDict(dict(speed=0.0, vtlp=0.0, spec_augment=False, freq_masks=2, freq_mask_width=5,
                                         time_masks=2, time_mask_width=5, mixup=False, mixup_alpha=0.4))
    x = jax.random.normal(jax.random.key(0), (4, 30, FEATURES.n_mels))
    lengths, targets = jnp.array([30, 20, 10, 5]), jnp.eye(4)
    out = augment.apply(jax.random.key(1), x, lengths, targets, cfg, MEL_HZ)
    np.testing.assert_array_equal(out[0], x)
    cfg.speed, cfg.vtlp = 0.2, 0.1
    a = augment.apply(jax.random.key(1), x, lengths, targets, cfg, MEL_HZ)
    b = augment.apply(jax.random.key(2), x, lengths, targets, cfg, MEL_HZ)
    assert not np.allclose(a[0], b[0])
    assert np.all(np.asarray(a[1]) >= 1) and np.all(np.asarray(a[1]) <= 30)
