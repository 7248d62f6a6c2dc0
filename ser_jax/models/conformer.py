"""The CNN front-end of cnn_bilstm, then a small Conformer encoder over time, pooling and head.

A Conformer (Gulati et al., 2020) rather than a plain Transformer: its depthwise convolution models
the local context of each frame (pitch movements, syllable-scale energy) for a few thousand
parameters, a bias toward local patterns that 1,080 clips cannot teach self-attention alone; the
attention adds the utterance-wide context. `conv_kernel=0` drops the convolution module and leaves
a pre-norm Transformer (with both half feed-forwards), so a comparison can ask what it is worth.

Blocks are pre-norm (LayerNorm before each sublayer, one after the stack), macaron-style: half a
feed-forward, self-attention, the convolution module, half a feed-forward. Positions are rotary
(RoPE: relative offsets through a rotation of queries and keys), which, unlike an additive relative
bias, leaves the attention call a plain one that fused kernels take. Attention runs through
`jax.nn.dot_product_attention` with each utterance's true length, and the convolution sees padded
frames as zeros, so padding never changes a prediction. The convolution module normalises with
LayerNorm instead of the paper's BatchNorm: statistics that never mix utterances or frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ser_jax.models.cnn_bilstm import LogMelClassifier
from ser_jax.models.layers import SelfAttention, length_mask


class FeedForward(nnx.Module):
    def __init__(self, dim: int, hidden: int, *, dropout: float, dtype, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(dim, dtype=dtype, rngs=rngs)
        self.up = nnx.Linear(dim, hidden, dtype=dtype, rngs=rngs)
        self.down = nnx.Linear(hidden, dim, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x, *, train: bool, rngs: nnx.Rngs | None):
        h = self.dropout(jax.nn.silu(self.up(self.norm(x))), deterministic=not train, rngs=rngs)
        return self.dropout(self.down(h), deterministic=not train, rngs=rngs)


class ConvModule(nnx.Module):
    """Pointwise conv + GLU, depthwise conv over time, LayerNorm, SiLU, pointwise conv."""

    def __init__(self, dim: int, kernel: int, *, dropout: float, dtype, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(dim, dtype=dtype, rngs=rngs)
        self.glu = nnx.Linear(dim, 2 * dim, dtype=dtype, rngs=rngs)
        self.depthwise = nnx.Conv(dim, dim, (kernel,), feature_group_count=dim, dtype=dtype, rngs=rngs)
        self.depthwise_norm = nnx.LayerNorm(dim, dtype=dtype, rngs=rngs)
        self.pointwise = nnx.Linear(dim, dim, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x, valid, *, train: bool, rngs: nnx.Rngs | None):
        h = jax.nn.glu(self.glu(self.norm(x)), axis=-1)
        # Padded frames as zeros: the valid frames near the end then see what "SAME" padding shows
        # them in the unpadded utterance.
        h = self.depthwise(jnp.where(valid[..., None], h, 0))
        h = self.pointwise(jax.nn.silu(self.depthwise_norm(h)))
        return self.dropout(h, deterministic=not train, rngs=rngs)


class ConformerBlock(nnx.Module):
    def __init__(self, dim: int, heads: int, ff_hidden: int, conv_kernel: int, *, dropout: float, dtype,
                 rngs: nnx.Rngs):
        self.ff1 = FeedForward(dim, ff_hidden, dropout=dropout, dtype=dtype, rngs=rngs)
        self.attention = SelfAttention(dim, heads, dropout=dropout, dtype=dtype, rngs=rngs)
        self.conv = ConvModule(dim, conv_kernel, dropout=dropout, dtype=dtype, rngs=rngs) if conv_kernel else None
        self.ff2 = FeedForward(dim, ff_hidden, dropout=dropout, dtype=dtype, rngs=rngs)

    def __call__(self, x, lengths, valid, *, train: bool, rngs: nnx.Rngs | None):
        x = x + 0.5 * self.ff1(x, train=train, rngs=rngs)
        x = x + self.attention(x, lengths, train=train, rngs=rngs)
        if self.conv is not None:
            x = x + self.conv(x, valid, train=train, rngs=rngs)
        return x + 0.5 * self.ff2(x, train=train, rngs=rngs)


class Model(LogMelClassifier):
    def __init__(self, *, num_classes: int, n_mels: int, prosody: int = 0, channels: Sequence[int] = (32, 64),
                 deltas: int = 0, instance_norm: float = 0.0, residual: bool = False, d_model: int = 96,
                 num_layers: int = 2, num_heads: int = 4, ff_mult: int = 2, conv_kernel: int = 15,
                 pooling: str = "attention", attention_dim: int = 64, dropout: float = 0.3,
                 input_norm: str = "dataset", dtype: str = "float32", rngs: nnx.Rngs):
        if d_model % num_heads or (d_model // num_heads) % 2:
            raise ValueError(f"model.d_model={d_model} must split into model.num_heads={num_heads} heads of an "
                             "even size (rotary positions rotate pairs of features)")
        super().__init__(n_mels, channels, prosody=prosody, deltas=deltas, instance_norm=instance_norm,
                         residual=residual, dropout=dropout, input_norm=input_norm, dtype=dtype, rngs=rngs)
        dtype = self.dtype
        self.project = nnx.Linear(self.frame_features, d_model, dtype=dtype, rngs=rngs)
        self.layers = nnx.List([ConformerBlock(d_model, num_heads, ff_mult * d_model, conv_kernel, dropout=dropout,
                                               dtype=dtype, rngs=rngs) for _ in range(num_layers)])
        self.norm = nnx.LayerNorm(d_model, dtype=dtype, rngs=rngs)
        self.build_head(d_model, num_classes, pooling=pooling, attention_dim=attention_dim, dropout=dropout, rngs=rngs)

    def embed(self, x: jax.Array, lengths: jax.Array, *, train: bool = False,
              rngs: nnx.Rngs | None = None) -> jax.Array:
        x, lengths = self.front_end(x, lengths, train=train, rngs=rngs)
        valid = length_mask(lengths, x.shape[1])
        x = self.project(x)
        for layer in self.layers:
            x = layer(x, lengths, valid, train=train, rngs=rngs)
        return self.pool_frames(self.norm(x), valid)
