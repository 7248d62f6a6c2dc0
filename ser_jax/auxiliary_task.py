"""An auxiliary task (`train.auxiliary_task`): multi-task learning on one more field of each clip.

A linear head beside the emotion head reads the same utterance embedding and learns another of the
clip's text fields (RAVDESS's "intensity", normal or strong; any corpus' "gender"), its loss added
to the emotion loss with `train.auxiliary_weight`. The shared encoder is then asked for what
separates those values too (how strongly an emotion is played; the voice's register), as in the
multi-task SER models of the literature (gender: Li et al., 2019; arousal and valence: Kim et al.,
2017). Clips whose field is empty or unknown (TESS's intensity) add nothing to it. Training only:
the head lives in the train state, never in the model that evaluation and deployment restore.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

from ser_jax import dataset_format as fmt
from ser_jax.input_pipeline import text_field

UNKNOWN = ("", "unknown", "unspecified")  # What the corpus readers write where a clip has no value.


def field_ids(sources: Sequence, field: str) -> dict[str, int]:
    """The known values of `field` over the training examples of `sources`, sorted, -> class ids."""
    if field not in fmt.TEXT_FIELDS:
        raise ValueError(f"train.auxiliary_task={field!r} is not a text field of the dataset "
                         f"(one of {', '.join(fmt.TEXT_FIELDS)})")
    values = sorted({text_field(s[i], field) for s in sources for i in range(len(s))} - set(UNKNOWN))
    if len(values) < 2:
        raise ValueError(f"train.auxiliary_task={field!r}: the training clips have {len(values)} known value(s) "
                         f"of it ({values}); an auxiliary task needs two or more to tell apart")
    return {v: i for i, v in enumerate(values)}


def init_params(key: jax.Array, features: int, num_values: int) -> dict:
    """A linear head from `features`-wide embeddings to `num_values` logits: plain arrays, since it
    never leaves the train state."""
    return {"kernel": jax.nn.initializers.lecun_normal()(key, (features, num_values)), "bias": jnp.zeros(num_values)}


def loss_and_accuracy(params: dict, embedding: jax.Array, ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The head's mean cross-entropy and accuracy over the examples with a known value (`ids` >= 0;
    -1: unknown, left out); both 0 for a batch with none."""
    logits = embedding.astype(jnp.float32) @ params["kernel"] + params["bias"]
    known = ids >= 0
    count = jnp.maximum(known.sum(), 1)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(ids, 0))
    correct = jnp.argmax(logits, -1) == ids
    return jnp.where(known, losses, 0.0).sum() / count, jnp.where(known, correct, False).sum() / count
