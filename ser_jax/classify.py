"""Pure inference functions shared by the predictor, streaming, export and the latency benchmark.

* `classify_mel`: normalised log-Mel (batch, frames, mels) and true lengths -> probabilities.
* `window_features` / `window_probabilities`: fixed-length waveform windows -> log-Mel and, if the
  model has them, prosody columns (JAX) ->
  normalisation -> model -> probabilities, as one jittable function. A window holding fewer valid
  samples than its length (the start of a stream) is zero-padded and given its true length, which
  gives the same features as the shorter clip alone.
* `window_classifier`: that function with a trained model's weights closed over, ready to jit or
  export.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ser_jax.features import FeatureConfig, frame_features, loud_span, normalize
from ser_jax.model_info import ModelInfo


def classify_mel(graphdef: nnx.GraphDef, params, batch_stats, mel: jax.Array, lengths: jax.Array) -> jax.Array:
    """Normalised log-Mel (batch, frames, mels) and true frame counts -> (batch, classes) probabilities."""
    model = nnx.merge(graphdef, params, batch_stats)
    return jax.nn.softmax(model(mel, lengths, train=False), axis=-1)


def window_features(waveform: jax.Array, num_samples: jax.Array, *, features: FeatureConfig, mean, std
                    ) -> tuple[jax.Array, jax.Array]:
    """(batch, samples) float32 windows, valid samples per row -> (normalised features, frame counts).

    Samples past `num_samples` are zeroed, so a partly filled window gives exactly the frames that
    librosa's centred STFT gives the valid samples alone (its end padding is zeros too). With
    `features.trim_db` each window loses its quiet edges first, as whole clips do.
    """
    waveform = jnp.asarray(waveform, jnp.float32)
    num_samples = jnp.asarray(num_samples, jnp.int32)
    positions = jnp.arange(waveform.shape[-1])[None, :]
    waveform = jnp.where(positions < num_samples[:, None], waveform, 0.0)
    if features.trim_db:
        start, end = loud_span(waveform, num_samples, features, xp=jnp)
        waveform = jnp.take_along_axis(waveform, jnp.minimum(positions + start[:, None], waveform.shape[-1] - 1), -1)
        num_samples = end - start
        waveform = jnp.where(positions < num_samples[:, None], waveform, 0.0)
    mel = frame_features(waveform, features, xp=jnp)
    mel = normalize(mel, jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32))
    return mel, features.num_frames(num_samples)


def window_probabilities(graphdef: nnx.GraphDef, params, batch_stats, waveform: jax.Array, num_samples: jax.Array,
                         *, features: FeatureConfig, mean, std) -> jax.Array:
    """(batch, window samples) waveform at the training rate -> (batch, classes) probabilities."""
    mel, lengths = window_features(waveform, num_samples, features=features, mean=mean, std=std)
    return classify_mel(graphdef, params, batch_stats, mel, lengths)


def window_classifier(info: ModelInfo, graphdef: nnx.GraphDef, params, batch_stats) -> Callable:
    """`(waveform (batch, samples) float32, num_samples (batch,) int32) -> probabilities`, weights closed over.

    The weights become compile-time constants (as in the exported function): on CPU that runs about
    10% faster than passing them as arguments.
    """
    params, batch_stats = jax.device_get((params, batch_stats))
    return functools.partial(window_probabilities, graphdef, params, batch_stats, features=info.features,
                             mean=np.asarray(info.mean), std=np.asarray(info.std))
