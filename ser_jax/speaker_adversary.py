"""Speaker-adversarial training (`train.speaker_adversary`): domain-adversarial training (Ganin and
Lempitsky, 2015) with the training speakers as the domains.

A small classifier learns to tell the training speakers apart from the utterance embedding the
emotion head reads; between the two, a gradient-reversal layer hands the encoder the opposite of
that classifier's gradient, scaled by a weight that ramps up from 0 over training. The encoder is
thus pushed towards embeddings that still separate the emotions but no longer identify the voice:
what a speaker-independent test asks of it. Training only: the adversary's weights live in the train
state, never in the model that evaluation and deployment restore.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

HIDDEN = 64  # The adversary's one hidden layer, a little narrower than the embedding it reads (96 in the recipe).


@jax.custom_vjp
def reverse_gradient(x: jax.Array, scale: jax.Array) -> jax.Array:
    """The identity forward; backward, the incoming gradient times -scale (and none for `scale`)."""
    return x


def _reverse_forward(x, scale):
    return x, scale


def _reverse_backward(scale, g):
    return -scale * g, jnp.zeros_like(scale)


reverse_gradient.defvjp(_reverse_forward, _reverse_backward)


def reversal_scale(step: jax.Array, total_steps: int, weight: float) -> jax.Array:
    """`weight` times Ganin and Lempitsky's ramp 2 / (1 + exp(-10 p)) - 1, p the fraction of training
    done: 0 at the start, while the embedding still means nothing to either classifier, 0.76 of
    `weight` a quarter of the way in, nearly all of it from halfway."""
    p = step.astype(jnp.float32) / max(total_steps, 1)
    return weight * (2.0 / (1.0 + jnp.exp(-10.0 * p)) - 1.0)


def init_params(key: jax.Array, features: int, num_speakers: int) -> dict:
    """A two-layer classifier from `features`-wide embeddings to `num_speakers` logits: plain arrays,
    since it never leaves the train state."""
    k1, k2 = jax.random.split(key)
    init = jax.nn.initializers.lecun_normal()
    return {"hidden": {"kernel": init(k1, (features, HIDDEN)), "bias": jnp.zeros(HIDDEN)},
            "out": {"kernel": init(k2, (HIDDEN, num_speakers)), "bias": jnp.zeros(num_speakers)}}


def speaker_logits(params: dict, embedding: jax.Array) -> jax.Array:
    """(batch, features) -> (batch, speakers) float32 logits through one ReLU hidden layer."""
    h = jax.nn.relu(embedding.astype(jnp.float32) @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    return h @ params["out"]["kernel"] + params["out"]["bias"]
