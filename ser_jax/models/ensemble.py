"""Several trained models read as one: the mean of their class probabilities.

Models of one recipe trained from different seeds err on different clips, so their average does
better on unseen speakers than any of them (three CNN-BiLSTMs of the recipe: 64.6 UA on average in
6-fold speaker CV against 60.9 for one, docs/results/accuracy.md). As a model like any other, an
ensemble goes through prediction, streaming, `jax.export` and serving unchanged; it is assembled
from trained runs (`python -m ser_jax.pretrained --workdir A,B,C`, `trained_model.ensemble`), not
trained, and its members are any models of this package, each built from its own config.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ser_jax.models import create_model


class Model(nnx.Module):
    def __init__(self, *, num_classes: int, n_mels: int, prosody: int = 0, members: Sequence[Mapping],
                 weights: Sequence[float] = (), rngs: nnx.Rngs):
        """`weights`: each member's share of the mean, normalised to sum to 1 (empty: equal shares)."""
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two member model configs, got {len(members)}")
        weights = tuple(float(w) for w in weights) or (1.0,) * len(members)
        if len(weights) != len(members) or min(weights) <= 0:
            raise ValueError(f"an ensemble's weights must be one positive number per member ({len(members)}), "
                             f"got {list(weights)}")
        self.log_shares = tuple(math.log(w / sum(weights)) for w in weights)
        self.members = nnx.List([create_model(m, num_classes=num_classes, n_mels=n_mels, prosody=prosody, rngs=rngs)
                                 for m in members])

    def __call__(self, x: jax.Array, lengths: jax.Array, *, train: bool = False,
                 rngs: nnx.Rngs | None = None) -> jax.Array:
        """(batch, frames, mels + prosody) -> (batch, classes) log of the members' (weighted) mean
        probabilities, which are logits like any model's (their softmax is that mean)."""
        if train:
            raise ValueError("an ensemble is assembled from trained models (python -m ser_jax.pretrained "
                             "--workdir A,B,...), not trained: train its members as separate runs")
        each = jnp.stack([jax.nn.log_softmax(m(x, lengths, train=False), axis=-1) + share
                          for m, share in zip(self.members, self.log_shares, strict=True)])
        return jax.nn.logsumexp(each, axis=0)
