"""CNN over the (time, mel) log-Mel image, a BiLSTM over time, length-aware pooling, softmax head.

`channels=()` gives the LSTM-only model and `lstm_hidden=0` the CNN-only one: the three models of the
comparison are this one module, so they differ only in what they are meant to differ in.
`attention_heads` adds a residual self-attention layer over the encoder's output before pooling (as
in the residual-LSTM-with-attention models of the SER literature): utterance-wide context that a
BiLSTM of 48 units per direction carries only through its state. `lstm_skip` passes the conv features
around the BiLSTM to join its output, so the layers after it read both, as the CNN-only model reads
the conv features: with self-attention there, the BiLSTM's outputs are otherwise a bottleneck the
CNN-only model does without (off: screened in session 31, the model then scores as the CNN-only one).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ser_jax.models.layers import (AttentionPooling, BiLSTM, SelfAttention, length_mask, masked_mean,
                                   normalize_per_utterance, normalize_utterance_gain, time_deltas)

# model.input_norm -> what the model does to its (dataset-normalised) input first.
INPUT_NORMS = {"dataset": None, "utterance": normalize_per_utterance, "gain": normalize_utterance_gain}
# model.pooling: a weighted mean over valid frames, that and the weighted std, or a plain mean.
POOLINGS = ("attention", "attention_stats", "mean")


class ConvBlock(nnx.Module):
    """3x3 conv, masked BatchNorm, ReLU, 2x2 max-pool, dropout; padded frames stay exactly zero.

    With `instance_norm` > 0, that fraction of the output channels is normalised by each utterance's
    own statistics over its valid frames instead (IBN-Net's mix, Pan et al., 2018): a channel's
    level over a whole clip is mostly its speaker's and recording's, not its emotion's, and instance
    normalisation removes it where batch statistics keep it; the other channels keep it for the
    layers that need it.

    With `residual`, the block is a ResNet basic block before the pooling (He et al., 2016): a second
    3x3 conv and BatchNorm, added to the block's input (through a 1x1 conv and BatchNorm where the
    channel count changes) before the ReLU. The second BatchNorm's scale starts at zero (Goyal et
    al., 2017), so each block starts as its shortcut and the deeper path is learnt only as it helps.
    """

    def __init__(self, in_channels: int, out_channels: int, *, instance_norm: float = 0.0, residual: bool = False,
                 dropout: float, dtype, rngs: nnx.Rngs):
        self.conv = nnx.Conv(in_channels, out_channels, (3, 3), use_bias=False, dtype=dtype, rngs=rngs)
        self.instance = round(instance_norm * out_channels)
        self.instance_norm = (nnx.GroupNorm(self.instance, num_groups=self.instance, epsilon=1e-5, dtype=dtype,
                                            rngs=rngs) if self.instance else None)
        self.norm = nnx.BatchNorm(out_channels - self.instance, momentum=0.9, dtype=dtype, rngs=rngs)
        self.conv2 = (nnx.Conv(out_channels, out_channels, (3, 3), use_bias=False, dtype=dtype, rngs=rngs)
                      if residual else None)
        self.norm2 = (nnx.BatchNorm(out_channels, momentum=0.9, scale_init=nnx.initializers.zeros, dtype=dtype,
                                    rngs=rngs) if residual else None)
        projected = residual and in_channels != out_channels
        self.shortcut = (nnx.Conv(in_channels, out_channels, (1, 1), use_bias=False, dtype=dtype, rngs=rngs)
                         if projected else None)
        self.shortcut_norm = nnx.BatchNorm(out_channels, momentum=0.9, dtype=dtype, rngs=rngs) if projected else None
        # Whole feature maps are dropped (spatial dropout): neighbouring time-frequency cells are
        # strongly correlated, so per-cell dropout regularises little, and its random bits dominate
        # the step time on CPUs.
        self.dropout = nnx.Dropout(dropout, broadcast_dims=(1, 2))

    def __call__(self, x, lengths, *, train: bool, rngs: nnx.Rngs | None):
        valid = length_mask(lengths, x.shape[1])[:, :, None, None]
        inputs = jnp.where(valid, x, 0)
        x = self.conv(inputs)
        mask, k = jnp.broadcast_to(valid, x.shape), self.instance
        batch_normed = self.norm(x[..., k:], use_running_average=not train, mask=mask[..., k:])
        x = (jnp.concatenate([self.instance_norm(x[..., :k], mask=mask[..., :k]), batch_normed], axis=-1)
             if k else batch_normed)
        x = jnp.where(valid, jax.nn.relu(x), 0)
        if self.conv2 is not None:
            shortcut = inputs
            if self.shortcut is not None:
                shortcut = self.shortcut_norm(self.shortcut(inputs), use_running_average=not train, mask=mask)
            x = self.norm2(self.conv2(x), use_running_average=not train, mask=mask)
            x = jnp.where(valid, jax.nn.relu(x + shortcut), 0)
        # ReLU outputs are >= 0, so zero padding to even sizes never wins a max over valid frames.
        x = jnp.pad(x, ((0, 0), (0, x.shape[1] % 2), (0, x.shape[2] % 2), (0, 0)))
        b, t, m, c = x.shape  # 2x2 max-pool as a reshape: XLA:CPU's reduce_window gradient is slow.
        x = x.reshape(b, t // 2, 2, m // 2, 2, c).max(axis=(2, 4))
        return self.dropout(x, deterministic=not train, rngs=rngs), (lengths + 1) // 2


class LogMelClassifier(nnx.Module):
    """What every model on the log-Mel image shares: input normalisation and the conv blocks in front
    (`front_end`), pooling over valid frames (`pool_frames`) and the softmax head at the end
    (`classify`); a model's `embed` puts its sequence encoder in between.

    With `deltas` 1 or 2, each mel bin's slope over time (and the slope of that) joins the mel image
    as a second (and third) input channel of the first conv block, or as more columns where there are
    no conv blocks: how fast the spectrum moves, computed after augmentation so that it follows the
    augmented image, for the cost of a wider first layer.

    The input's last `prosody` columns (periodicity and log F0, `FeatureConfig.pitch`) are not part
    of the mel image: they bypass the conv blocks and join each of its output steps, the frames it
    pooled together side by side, so the encoder gets the pitch contour at full time resolution.

    A base class rather than submodules, so that the parameters keep their checkpoint paths
    (`blocks/0/conv/kernel`, `head/kernel`, ...) in the models that build on it.
    """

    def __init__(self, n_mels: int, channels: Sequence[int], *, prosody: int, deltas: int, instance_norm: float,
                 residual: bool, dropout: float, input_norm: str, dtype: str, rngs: nnx.Rngs):
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"model.input_norm must be one of {sorted(INPUT_NORMS)}, got {input_norm!r}")
        if deltas not in (0, 1, 2):
            raise ValueError(f"model.deltas must be 0, 1 or 2 (orders of time derivatives), got {deltas!r}")
        if not 0.0 <= instance_norm <= 1.0:
            raise ValueError(f"model.instance_norm is a fraction of each conv block's channels, got {instance_norm!r}")
        if instance_norm and len(channels) < 2:
            raise ValueError("model.instance_norm applies to every conv block but the last, which keeps batch "
                             f"statistics: it needs two or more conv blocks, got model.channels={tuple(channels)}")
        if residual and not channels:
            raise ValueError("model.residual makes each conv block a residual block: it needs model.channels")
        self.dtype = jnp.dtype(dtype)
        self.input_norm = input_norm
        self.n_mels, self.prosody, self.deltas = n_mels, prosody, deltas
        ins = (1 + deltas, *channels[:-1])
        self.blocks = nnx.List([ConvBlock(i, o, instance_norm=instance_norm if b < len(channels) - 1 else 0.0,
                                          residual=residual, dropout=dropout, dtype=self.dtype, rngs=rngs)
                                for b, (i, o) in enumerate(zip(ins, channels))])
        for _ in channels:  # Odd mel counts are padded to even before each pooling.
            n_mels = (n_mels + 1) // 2
        self.time_stride = 2 ** len(channels)
        image_features = n_mels * channels[-1] if channels else n_mels * (1 + deltas)
        self.frame_features = image_features + self.time_stride * prosody

    def front_end(self, x: jax.Array, lengths: jax.Array, *, train: bool, rngs: nnx.Rngs | None
                  ) -> tuple[jax.Array, jax.Array]:
        """(batch, frames, mels + prosody) -> (batch, frames', frame_features) in the compute dtype, and lengths'."""
        if (norm := INPUT_NORMS[self.input_norm]) is not None:
            x = norm(x.astype(jnp.float32), length_mask(lengths, x.shape[1]))
        x = x.astype(self.dtype)
        mel, extra, frame_lengths = [x[..., :self.n_mels]], x[..., self.n_mels:], lengths
        for _ in range(self.deltas):
            mel.append(time_deltas(mel[-1], lengths))
        if not self.blocks:
            return jnp.concatenate([*mel, extra], axis=-1), lengths
        x = jnp.stack(mel, axis=-1)
        for block in self.blocks:
            x, lengths = block(x, lengths, train=train, rngs=rngs)
        x = x.reshape(*x.shape[:2], -1)
        if self.prosody:
            b, frames, _ = extra.shape
            extra = jnp.where(length_mask(frame_lengths, frames)[..., None], extra, 0)
            extra = jnp.pad(extra, ((0, 0), (0, x.shape[1] * self.time_stride - frames), (0, 0)))
            x = jnp.concatenate([x, extra.reshape(b, x.shape[1], -1)], axis=-1)
        return x, lengths

    def build_head(self, features: int, num_classes: int, *, pooling: str, attention_dim: int, dropout: float,
                   rngs: nnx.Rngs) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"model.pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pool = (AttentionPooling(features, attention_dim, with_std=pooling == "attention_stats", dtype=self.dtype,
                                      rngs=rngs) if pooling != "mean" else None)
        self.dropout = nnx.Dropout(dropout)
        self.embedding_features = 2 * features if pooling == "attention_stats" else features
        self.head = nnx.Linear(self.embedding_features, num_classes, dtype=self.dtype, rngs=rngs)

    def pool_frames(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """(batch, frames, features) and the valid-frame mask -> (batch, embedding) float32."""
        return self.pool(x, mask) if self.pool is not None else masked_mean(x, mask)

    def classify(self, embedding: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None) -> jax.Array:
        """(batch, embedding) -> (batch, classes) float32 logits."""
        embedding = self.dropout(embedding.astype(self.dtype), deterministic=not train, rngs=rngs)
        return self.head(embedding).astype(jnp.float32)

    def embed(self, x: jax.Array, lengths: jax.Array, *, train: bool = False,
              rngs: nnx.Rngs | None = None) -> jax.Array:
        """(batch, frames, mels + prosody) normalised features and true lengths -> (batch, embedding)
        float32: the utterance vector the head classifies (and speaker-adversarial training reads)."""
        raise NotImplementedError

    def __call__(self, x: jax.Array, lengths: jax.Array, *, train: bool = False,
                 rngs: nnx.Rngs | None = None) -> jax.Array:
        """(batch, frames, mels + prosody) normalised features and true lengths -> (batch, classes) float32 logits."""
        return self.classify(self.embed(x, lengths, train=train, rngs=rngs), train=train, rngs=rngs)


class Model(LogMelClassifier):
    def __init__(self, *, num_classes: int, n_mels: int, prosody: int = 0, channels: Sequence[int] = (32, 64),
                 deltas: int = 0, instance_norm: float = 0.0, residual: bool = False, lstm_hidden: int = 128,
                 lstm_skip: bool = False, attention_heads: int = 0, pooling: str = "attention",
                 attention_dim: int = 64, dropout: float = 0.3,
                 input_norm: str = "dataset", dtype: str = "float32", rngs: nnx.Rngs):
        if not channels and not lstm_hidden:
            raise ValueError("a model needs conv channels, an LSTM, or both")
        if lstm_skip and not lstm_hidden:
            raise ValueError("model.lstm_skip passes features around the BiLSTM: it needs model.lstm_hidden > 0")
        super().__init__(n_mels, channels, prosody=prosody, deltas=deltas, instance_norm=instance_norm,
                         residual=residual, dropout=dropout, input_norm=input_norm, dtype=dtype, rngs=rngs)
        dtype = self.dtype
        features = self.frame_features
        self.lstm = BiLSTM(features, lstm_hidden, dtype=dtype, rngs=rngs) if lstm_hidden else None
        self.lstm_skip = lstm_skip
        if lstm_hidden:
            features = 2 * lstm_hidden + (features if lstm_skip else 0)
        if attention_heads and (features % attention_heads or (features // attention_heads) % 2):
            raise ValueError(f"model.attention_heads={attention_heads} must split the {features} encoder features "
                             "into heads of an even size (rotary positions rotate pairs of features)")
        self.attention = (SelfAttention(features, attention_heads, dropout=dropout, dtype=dtype, rngs=rngs)
                          if attention_heads else None)
        self.build_head(features, num_classes, pooling=pooling, attention_dim=attention_dim, dropout=dropout,
                        rngs=rngs)

    def embed(self, x: jax.Array, lengths: jax.Array, *, train: bool = False,
              rngs: nnx.Rngs | None = None) -> jax.Array:
        x, lengths = self.front_end(x, lengths, train=train, rngs=rngs)
        mask = length_mask(lengths, x.shape[1])
        if self.lstm is not None:
            encoded = self.lstm(x, lengths)
            x = jnp.concatenate([x, encoded], axis=-1) if self.lstm_skip else encoded
        if self.attention is not None:
            x = x + self.attention(x, lengths, train=train, rngs=rngs)
        return self.pool_frames(x, mask)
