"""On-device augmentation inside the jitted train step, each on/off by config: speed perturbation,
vocal-tract-length perturbation, frequency-wise style mixing, level and spectral-tilt (channel)
perturbation, SpecAugment and mixup.

Speed and VTLP act on the log-Mel image rather than the waveform, so the features stay precomputed:
changing the playback speed by r divides every duration by r and multiplies every frequency by r,
VTLP multiplies frequencies only (a longer or shorter vocal tract). Frequencies are moved through
the true centre frequency of each mel bin, so a factor means the same thing on every part of the
mel scale. Level and tilt add decibels to each bin, converted to the normalised input's units by the
training statistics' per-bin std: a louder or differently coloured microphone, the shift that a
model trained on one studio mistakes for emotion on another corpus. Prosody columns after the mel
bins (`FeatureConfig.pitch`) are left alone by everything that moves frequencies or levels, except
speed, which moves F0 with the rest, and MixStyle with `mixstyle_f0`, which moves the mean of log F0
with the spectrum's statistics; time masks cover them, frequency masks do not.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ser_jax.warping import MelBins, change_speed, on_mels, scale_frequencies


def _band_masks(key, n_masks: int, max_width: int, limit: jax.Array, size: int) -> jax.Array:
    """(batch, size) True inside any of `n_masks` random bands of width < max_width below `limit`."""
    batch = limit.shape[0]
    kw, ks = jax.random.split(key)
    width = jax.random.randint(kw, (batch, n_masks), 0, max_width + 1)
    start = (jax.random.uniform(ks, (batch, n_masks)) * jnp.maximum(limit[:, None] - width, 1)).astype(jnp.int32)
    pos = jnp.arange(size)[None, None, :]
    return ((pos >= start[..., None]) & (pos < (start + width)[..., None])).any(axis=1)


def spec_augment(key, mel: jax.Array, lengths: jax.Array, cfg: ml_collections.ConfigDict,
                 n_mels: int | None = None) -> jax.Array:
    """Time and frequency masks (Park et al., 2019), set to 0 = the normalised mean; time masks fall
    inside each utterance's valid frames, frequency masks inside the first `n_mels` columns (all by default)."""
    b, t, m = mel.shape
    kf, kt = jax.random.split(key)
    freq = _band_masks(kf, cfg.freq_masks, cfg.freq_mask_width, jnp.full((b,), n_mels or m), m)
    time = _band_masks(kt, cfg.time_masks, cfg.time_mask_width, lengths, t)
    return jnp.where(freq[:, None, :] | time[:, :, None], 0.0, mel)


def mixup(key, mel, lengths, targets, alpha: float):
    """Convex combination of each example with a random partner (Zhang et al., 2018)."""
    kl, kp = jax.random.split(key)
    lam = jax.random.beta(kl, alpha, alpha, (mel.shape[0],))
    lam = jnp.maximum(lam, 1 - lam)  # The example keeps the larger share, so its length dominates.
    perm = jax.random.permutation(kp, mel.shape[0])
    mel = lam[:, None, None] * mel + (1 - lam[:, None, None]) * mel[perm]
    targets = lam[:, None] * targets + (1 - lam[:, None]) * targets[perm]
    return mel, jnp.maximum(lengths, lengths[perm]), targets


def change_channel(key, mel: jax.Array, lengths: jax.Array, gain_db: float, tilt_db: float,
                   std_db: np.ndarray) -> jax.Array:
    """Each example's valid frames with a random level in [-gain_db, gain_db] dB added to every bin and
    a random tilt: a slope along the mel axis from -t/2 dB at the lowest bin to +t/2 at the highest,
    t in [-tilt_db, tilt_db]. Padding stays zero."""
    b, t, m = mel.shape
    kg, kt = jax.random.split(key)
    level = jax.random.uniform(kg, (b, 1), minval=-gain_db, maxval=gain_db)
    slope = jax.random.uniform(kt, (b, 1), minval=-tilt_db, maxval=tilt_db)
    shift_db = level + slope * (jnp.linspace(0.0, 1.0, m)[None, :] - 0.5)
    shift = shift_db / jnp.asarray(std_db, jnp.float32)[None, :]
    valid = jnp.arange(t)[None, :, None] < lengths[:, None, None]
    return jnp.where(valid, mel + shift[:, None, :], mel)


def mix_frequency_style(key, x: jax.Array, lengths: jax.Array, p: float, alpha: float, *,
                        n_mels: int | None = None, f0_column: int | None = None, eps: float = 1e-6) -> jax.Array:
    """Freq-MixStyle (Zhou et al., 2021; per mel bin as Schmid et al., DCASE 2022): with probability
    `p`, an example's per-bin mean and std over its valid frames are replaced by a Beta(alpha, alpha)
    mix of its own and a random batch partner's. A voice's long-term spectrum (vocal tract, recording)
    then comes from real other speakers, where gain and tilt draw simple shapes; the frame-to-frame
    pattern, which carries the emotion, stays the example's own. Padding stays zero.

    Columns from `n_mels` on (prosody; default: none) are left alone, except `f0_column`, whose mean
    follows the same mix: the partner's pitch register comes with its spectrum, a coherent other
    voice, while the contour and its range in octaves stay the example's own."""
    b, t, c = x.shape
    valid = jnp.arange(t)[None, :, None] < lengths[:, None, None]
    count = jnp.maximum(lengths, 1)[:, None, None].astype(x.dtype)
    mu = jnp.where(valid, x, 0.0).sum(axis=1, keepdims=True) / count
    sigma = jnp.sqrt(jnp.where(valid, (x - mu) ** 2, 0.0).sum(axis=1, keepdims=True) / count + eps)
    kl, kp, ku = jax.random.split(key, 3)
    lam = jax.random.beta(kl, alpha, alpha, (b, 1, 1))
    chosen = jax.random.uniform(ku, (b, 1, 1)) < p
    perm = jax.random.permutation(kp, b)
    column = jnp.arange(c)
    styled = column < (c if n_mels is None else n_mels)  # Mean and std mixed.
    moved = styled | (column == f0_column) if f0_column is not None else styled  # Mean mixed.
    mixed_mu = lam * mu + (1 - lam) * mu[perm]
    mixed_sigma = jnp.where(styled, lam * sigma + (1 - lam) * sigma[perm], sigma)  # log F0 keeps its own range.
    return jnp.where(valid & chosen & moved, (x - mu) / sigma * mixed_sigma + mixed_mu, x)


def _factors(key, batch: int, spread: float) -> jax.Array:
    return jax.random.uniform(key, (batch,), minval=1 - spread, maxval=1 + spread)


def apply(key, mel, lengths, targets, cfg: ml_collections.ConfigDict, bins: MelBins):
    """All configured augmentations; the identity when all are off."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    n_mels = len(bins.hz)
    if cfg.speed:
        mel, lengths = change_speed(mel, lengths, _factors(k3, mel.shape[0], cfg.speed), bins)
    if cfg.vtlp:
        factor = _factors(k4, mel.shape[0], cfg.vtlp)
        mel = on_mels(lambda m: scale_frequencies(m, factor, bins.hz), mel, n_mels)
    if cfg.freq_mixstyle:
        if cfg.mixstyle_f0 and bins.log_f0_column is None:
            raise ValueError("augment.mixstyle_f0 moves the log F0 column, which these features lack: "
                             "set features.pitch=True or augment.mixstyle_f0=False")
        mel = mix_frequency_style(jax.random.fold_in(key, 5), mel, lengths, cfg.freq_mixstyle, cfg.mixstyle_alpha,
                                  n_mels=n_mels, f0_column=bins.log_f0_column if cfg.mixstyle_f0 else None)
    if cfg.gain_db or cfg.tilt_db:
        mel = on_mels(lambda m: change_channel(jax.random.fold_in(key, 4), m, lengths, cfg.gain_db, cfg.tilt_db,
                                                bins.std_db), mel, n_mels)
    if cfg.spec_augment:
        mel = spec_augment(k1, mel, lengths, cfg, n_mels)
    if cfg.mixup:
        mel, lengths, targets = mixup(k2, mel, lengths, targets, cfg.mixup_alpha)
    return mel, lengths, targets
