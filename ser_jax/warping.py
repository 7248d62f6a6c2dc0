"""Moving a feature image in time and frequency through the true centre frequency of each mel bin:
playing it faster or slower (every duration divided by the rate, every frequency multiplied by it,
F0 with them) and scaling its frequencies alone.

Training draws random rates and factors from these (`augment`: speed perturbation, VTLP); a trained
model can average its predictions over fixed rates (`inference.test_time_speeds`), which is why
they live apart from the training-only augmentations, importable by inference code.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ser_jax.features import PROSODY_COLUMNS, FeatureConfig, mel_center_frequencies

_LOG_F0 = PROSODY_COLUMNS.index("log2_f0_100hz")  # Its place among the columns after the mel bins.


class MelBins(NamedTuple):
    """What moving frequencies, levels and F0 needs to know about the columns of the input."""

    hz: np.ndarray  # Each mel bin's centre frequency.
    std_db: np.ndarray  # The decibels one unit of the normalised input stands for, per mel bin.
    log_f0_std: float | None = None  # The octaves one unit of the log F0 column stands for (None: no prosody).

    @classmethod
    def of(cls, features: FeatureConfig, std: np.ndarray) -> "MelBins":
        """From the feature settings and the training statistics' per-column std."""
        std = np.asarray(std)
        return cls(mel_center_frequencies(features), std[:features.n_mels],
                   float(std[features.n_mels + _LOG_F0]) if features.pitch else None)

    @property
    def log_f0_column(self) -> int | None:
        """The log F0 column's index in the input (None: no prosody columns)."""
        return None if self.log_f0_std is None else len(self.hz) + _LOG_F0


def _linear_resample(x: jax.Array, positions: jax.Array, axis: int) -> jax.Array:
    """x (batch, time, mels) read at fractional `positions` (batch, size) along `axis` (1 or 2)."""
    size = x.shape[axis]
    lo = jnp.clip(jnp.floor(positions), 0, size - 1)
    frac = jnp.clip(positions - lo, 0.0, 1.0)
    lo = lo.astype(jnp.int32)
    hi = jnp.minimum(lo + 1, size - 1)
    expand = (lambda a: a[:, :, None]) if axis == 1 else (lambda a: a[:, None, :])

    def read(index):
        return jnp.take_along_axis(x, jnp.broadcast_to(expand(index), x.shape), axis=axis)

    return read(lo) * (1 - expand(frac)) + read(hi) * expand(frac)


def scale_frequencies(mel: jax.Array, factor: jax.Array, mel_hz: np.ndarray) -> jax.Array:
    """Each example's spectrum with every frequency multiplied by its `factor` (batch,).

    Bin k takes the (interpolated) value the input had at mel_hz[k] / factor; bins whose source lies
    past either end repeat the edge bin.
    """
    mel_hz = jnp.asarray(mel_hz, jnp.float32)
    index = jnp.arange(mel_hz.shape[0], dtype=jnp.float32)
    source = jax.vmap(lambda f: jnp.interp(mel_hz / f, mel_hz, index))(factor)
    return _linear_resample(mel, source, axis=2)


def change_speed(x: jax.Array, lengths: jax.Array, rate: jax.Array, bins: MelBins):
    """Each example played `rate` (batch,) times faster: frames resampled, frequencies scaled (F0's
    too), new lengths."""
    frames = x.shape[1]
    positions = jnp.arange(frames, dtype=jnp.float32)[None, :] * rate[:, None]
    new_lengths = jnp.clip(jnp.floor(lengths / rate), 1, frames).astype(lengths.dtype)
    x = _linear_resample(x, positions, axis=1)
    valid = jnp.arange(frames)[None, :, None] < new_lengths[:, None, None]
    x = on_mels(lambda mel: scale_frequencies(mel, rate, bins.hz), x, len(bins.hz))
    if bins.log_f0_std is not None:
        x = x.at[..., bins.log_f0_column].add(jnp.log2(rate)[:, None] / bins.log_f0_std)
    return jnp.where(valid, x, 0.0), new_lengths


def on_mels(fn, x: jax.Array, n_mels: int) -> jax.Array:
    """`fn` applied to the mel bins of `x`, the prosody columns after them kept as they are."""
    if x.shape[-1] == n_mels:
        return fn(x)
    return jnp.concatenate([fn(x[..., :n_mels]), x[..., n_mels:]], axis=-1)
