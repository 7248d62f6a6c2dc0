"""On-device augmentation inside the jitted train step: SpecAugment and mixup, each on/off by config."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections


def _band_masks(key, n_masks: int, max_width: int, limit: jax.Array, size: int) -> jax.Array:
    """(batch, size) True inside any of `n_masks` random bands of width < max_width below `limit`."""
    batch = limit.shape[0]
    kw, ks = jax.random.split(key)
    width = jax.random.randint(kw, (batch, n_masks), 0, max_width + 1)
    start = (jax.random.uniform(ks, (batch, n_masks)) * jnp.maximum(limit[:, None] - width, 1)).astype(jnp.int32)
    pos = jnp.arange(size)[None, None, :]
    return ((pos >= start[..., None]) & (pos < (start + width)[..., None])).any(axis=1)


def spec_augment(key, mel: jax.Array, lengths: jax.Array, cfg: ml_collections.ConfigDict) -> jax.Array:
    """Time and frequency masks (Park et al., 2019), set to 0 = the normalised mean; time masks fall
    inside each utterance's valid frames."""
    b, t, m = mel.shape
    kf, kt = jax.random.split(key)
    freq = _band_masks(kf, cfg.freq_masks, cfg.freq_mask_width, jnp.full((b,), m), m)
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


def apply(key, mel, lengths, targets, cfg: ml_collections.ConfigDict):
    """All configured augmentations; the identity when both are off."""
    k1, k2 = jax.random.split(key)
    if cfg.spec_augment:
        mel = spec_augment(k1, mel, lengths, cfg)
    if cfg.mixup:
        mel, lengths, targets = mixup(k2, mel, lengths, targets, cfg.mixup_alpha)
    return mel, lengths, targets
