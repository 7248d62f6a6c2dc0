"""Sequence layers that honour true lengths, so padding never changes what a model predicts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

_HALF_PRECISION = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def length_mask(lengths: jax.Array, max_len: int) -> jax.Array:
    """(batch, max_len) True on valid frames."""
    return jnp.arange(max_len)[None, :] < lengths[:, None]


def _reverse_within_length(lengths: jax.Array, max_len: int) -> jax.Array:
    """Per-example gather indices that reverse the valid prefix and leave padding in place."""
    t = jnp.arange(max_len)[None, :]
    return jnp.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)


class BiLSTM(nnx.Module):
    """Bidirectional LSTM as one `lax.scan` over time carrying both directions.

    The input projection of every frame and both directions is one matmul outside the scan (the
    step then only multiplies the recurrent state); the backward direction reads each sequence
    reversed within its own length, so its state starts at the last valid frame, not in padding.
    """

    def __init__(self, in_features: int, hidden: int, *, dtype=None, rngs: nnx.Rngs):
        self.hidden = hidden
        self.dtype = dtype
        self.input_proj = nnx.Linear(in_features, 2 * 4 * hidden, dtype=dtype, rngs=rngs,
                                     bias_init=self._forget_bias_init)
        ortho = jax.nn.initializers.orthogonal()
        keys = jax.random.split(rngs.params(), 2)
        self.recurrent = nnx.Param(jnp.stack([ortho(k, (hidden, 4 * hidden)) for k in keys]))

    def _forget_bias_init(self, key, shape, dtype=jnp.float32):
        """Forget-gate bias 1 (Jozefowicz et al., 2015): gradients flow through time from the start."""
        gate = (jnp.arange(shape[0]) // self.hidden) % 4
        return jnp.where(gate == 1, 1.0, 0.0).astype(dtype)

    def __call__(self, x: jax.Array, lengths: jax.Array) -> jax.Array:
        """(batch, time, features) -> (batch, time, 2 * hidden); outputs past a length are undefined."""
        b, t, _ = x.shape
        h = self.hidden
        gates = self.input_proj(x).reshape(b, t, 2, 4 * h)
        rev = _reverse_within_length(lengths, t)
        backward = jnp.take_along_axis(gates[:, :, 1], rev[..., None], axis=1)
        gates = jnp.stack([gates[:, :, 0], backward], axis=0).transpose(2, 0, 1, 3)  # (t, 2, b, 4h)
        w = self.recurrent.value.astype(gates.dtype)

        def step(carry, g):
            h_prev, c_prev = carry
            z = (g + jnp.einsum("dbh,dhk->dbk", h_prev.astype(w.dtype), w)).astype(jnp.float32)
            i, f, u, o = jnp.split(z, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c_prev + jax.nn.sigmoid(i) * jnp.tanh(u)
            h_new = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h_new, c), h_new

        zeros = jnp.zeros((2, b, h), jnp.float32)
        _, out = jax.lax.scan(step, (zeros, zeros), gates)  # (t, 2, b, h)
        fwd = out[:, 0].transpose(1, 0, 2)
        bwd = jnp.take_along_axis(out[:, 1].transpose(1, 0, 2), rev[..., None], axis=1)
        return jnp.concatenate([fwd, bwd], axis=-1).astype(x.dtype)


class AttentionPooling(nnx.Module):
    """Softmax-weighted mean over valid frames (padded frames get exactly zero weight).

    With `with_std`, the weighted standard deviation is appended (attentive statistics pooling,
    Okabe et al., 2018): how much a feature varies over the utterance, which a mean cannot carry,
    is what pitch range and loudness dynamics look like to the head.
    """

    def __init__(self, in_features: int, attention_dim: int, *, with_std: bool = False, dtype=None,
                 rngs: nnx.Rngs):
        self.with_std = with_std
        self.score_hidden = nnx.Linear(in_features, attention_dim, dtype=dtype, rngs=rngs)
        # No bias: softmax ignores a constant, so its gradient would be pure rounding noise.
        self.score = nnx.Linear(attention_dim, 1, use_bias=False, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        logits = self.score(jnp.tanh(self.score_hidden(x)))[..., 0].astype(jnp.float32)
        weights = jax.nn.softmax(jnp.where(mask, logits, -jnp.inf), axis=-1)
        x = jnp.where(mask[..., None], x.astype(jnp.float32), 0.0)
        mean = jnp.einsum("bt,btd->bd", weights, x)
        if not self.with_std:
            return mean
        var = jnp.einsum("bt,btd->bd", weights, jnp.square(x)) - jnp.square(mean)
        return jnp.concatenate([mean, jnp.sqrt(jnp.maximum(var, 0.0) + 1e-5)], axis=-1)


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean over valid frames of (batch, time, features)."""
    m = mask.astype(jnp.float32)[..., None]
    return (x.astype(jnp.float32) * m).sum(1) / jnp.maximum(m.sum(1), 1.0)


def time_deltas(x: jax.Array, lengths: jax.Array, width: int = 2) -> jax.Array:
    """Regression slope of each (batch, time, features) column over +-`width` frames (the HTK delta).

    Frames past the ends of an utterance repeat its first or last valid frame, so the slopes at its
    edges, and every slope of a valid frame, are those of the unpadded utterance; padding stays zero.
    """
    t = jnp.arange(x.shape[1])[None, :]
    last = jnp.maximum(lengths[:, None] - 1, 0)

    def frames(offset: int) -> jax.Array:
        return jnp.take_along_axis(x, jnp.clip(t + offset, 0, last)[..., None], axis=1)

    slope = sum(n * (frames(n) - frames(-n)) for n in range(1, width + 1))
    slope = slope / (2 * sum(n * n for n in range(1, width + 1)))
    return jnp.where(length_mask(lengths, x.shape[1])[..., None], slope, 0).astype(x.dtype)


def normalize_per_utterance(x: jax.Array, mask: jax.Array, eps: float = 1e-3) -> jax.Array:
    """Each utterance's features to zero mean and unit variance over its own valid frames, per bin.

    Removes what is constant over an utterance (recording level, microphone and room colouring, much
    of the speaker's timbre), which a model trained on a dozen voices would otherwise learn; padded
    frames stay zero and take no part in the statistics.
    """
    m = mask.astype(jnp.float32)[..., None]
    count = jnp.maximum(m.sum(1, keepdims=True), 1.0)
    mean = (x * m).sum(1, keepdims=True) / count
    var = (jnp.square(x - mean) * m).sum(1, keepdims=True) / count
    return jnp.where(m > 0, (x - mean) * jax.lax.rsqrt(var + eps), 0.0)


def normalize_utterance_gain(x: jax.Array, mask: jax.Array, eps: float = 1e-3) -> jax.Array:
    """Each utterance shifted and scaled by one mean and one std over all its valid frames and bins.

    Removes the recording gain alone: unlike the per-bin `normalize_per_utterance`, the shape of the
    long-term spectrum (spectral tilt, vocal effort) and how much each band varies are kept, and
    those carry much of what tells angry or happy from sad or calm.
    """
    m = mask.astype(jnp.float32)[..., None]
    count = jnp.maximum(m.sum((1, 2), keepdims=True) * x.shape[-1], 1.0)
    mean = (x * m).sum((1, 2), keepdims=True) / count
    var = (jnp.square(x - mean) * m).sum((1, 2), keepdims=True) / count
    return jnp.where(m > 0, (x - mean) * jax.lax.rsqrt(var + eps), 0.0)


def rotary(x: jax.Array) -> jax.Array:
    """Rotary position embedding of (batch, time, heads, head_dim) queries or keys, frame t at angle t."""
    half = x.shape[-1] // 2
    freqs = 10000.0 ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = jnp.arange(x.shape[1], dtype=jnp.float32)[:, None] * freqs  # (time, half)
    cos, sin = jnp.cos(angles)[None, :, None], jnp.sin(angles)[None, :, None]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def attention_implementation(dtype: jnp.dtype, head_dim: int) -> str | None:
    """cuDNN's fused flash-attention kernel where it applies (half precision on a GPU, head size a
    multiple of 8 up to 128); XLA's otherwise."""
    fused = dtype in _HALF_PRECISION and head_dim % 8 == 0 and head_dim <= 128
    return "cudnn" if fused and jax.default_backend() == "gpu" else None


class SelfAttention(nnx.Module):
    """Multi-head self-attention with rotary positions over each utterance's valid frames only."""

    def __init__(self, dim: int, heads: int, *, dropout: float, dtype, rngs: nnx.Rngs):
        self.heads = heads
        self.dtype = dtype
        self.norm = nnx.LayerNorm(dim, dtype=dtype, rngs=rngs)
        self.qkv = nnx.Linear(dim, 3 * dim, dtype=dtype, rngs=rngs)
        self.out = nnx.Linear(dim, dim, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x, lengths, *, train: bool, rngs: nnx.Rngs | None):
        b, t, d = x.shape
        q, k, v = jnp.unstack(self.qkv(self.norm(x)).reshape(b, t, 3, self.heads, d // self.heads), axis=2)
        lengths = lengths.astype(jnp.int32)
        # Keys past a length are never attended to; queries past it give zeros.
        h = jax.nn.dot_product_attention(rotary(q), rotary(k), v, query_seq_lengths=lengths,
                                         key_value_seq_lengths=lengths,
                                         implementation=attention_implementation(self.dtype, d // self.heads))
        return self.dropout(self.out(h.reshape(b, t, d)), deterministic=not train, rngs=rngs)
