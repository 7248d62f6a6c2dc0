"""Pure inference functions shared by the predictor, streaming, export and the latency benchmark.

* `log_probabilities`: the model's class log-probabilities, averaged over the clip played at several
  speeds where the model was trained to be read that way (`ModelInfo.test_time_speeds`), over
  several crops of a clip longer than the training crops where asked (`eval.test_time_crops`), and
  corrected for the training class prior where it records one (`ModelInfo.prior_offset`).
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
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ser_jax.features import FeatureConfig, frame_features, loud_span, normalize
from ser_jax.model_info import ModelInfo
from ser_jax.warping import MelBins, change_speed


def log_probabilities(model: nnx.Module, mel: jax.Array, lengths: jax.Array, *, speeds: Sequence[float] = (),
                      bins: MelBins | None = None, prior_offset: np.ndarray | None = None, crops: int = 0,
                      crop_frames: int = 0) -> jax.Array:
    """(batch, classes) log-probabilities of the model in inference mode.

    `prior_offset` (classes,) is added to them before they are renormalised: -log of the training
    class frequencies turns the model's odds into those of equally common classes.

    With `speeds`, the clip is played at each of those rates (as speed perturbation plays it in
    training: durations divided, frequencies and F0 multiplied; `bins` describes the columns) and the
    probabilities are averaged: a model trained on varied speeds then judges the clip by what it
    hears at all of them, not at the one rate the speaker happened to use. All rates go through the
    model as one batch, padded so the slowest still fits.

    With `crops` > 1, a clip longer than `crop_frames` (the training crops' length) is read as that
    many crops of it, evenly spaced from its start to its end, and the probabilities averaged: the
    model is read at the length it was trained on, and every part of the clip is heard. Shorter
    clips are read whole.
    """
    if crops > 1 and mel.shape[1] > crop_frames:
        batch = mel.shape[0]
        mel, lengths = _evenly_spaced_crops(mel, lengths, crops, crop_frames)
        each = _averaged_log_probabilities(model, mel, lengths, speeds, bins).reshape(crops, batch, -1)
        log_p = jax.nn.logsumexp(each, axis=0) - math.log(crops)
    else:
        log_p = _averaged_log_probabilities(model, mel, lengths, speeds, bins)
    if prior_offset is None:
        return log_p
    return jax.nn.log_softmax(log_p + jnp.asarray(prior_offset, log_p.dtype), axis=-1)


def _averaged_log_probabilities(model: nnx.Module, mel: jax.Array, lengths: jax.Array, speeds: Sequence[float],
                                bins: MelBins | None) -> jax.Array:
    if not speeds:
        return jax.nn.log_softmax(model(mel, lengths, train=False), axis=-1)
    if bins is None:
        raise ValueError("test-time speeds need the mel bins of the input (MelBins.of(features, std))")
    batch, frames = mel.shape[:2]
    mel = jnp.pad(mel, ((0, 0), (0, max(0, math.ceil(frames / min(speeds)) - frames)), (0, 0)))
    rates = jnp.repeat(jnp.asarray(speeds, jnp.float32), batch)
    played, played_lengths = change_speed(jnp.tile(mel, (len(speeds), 1, 1)), jnp.tile(lengths, len(speeds)),
                                          rates, bins)
    each = jax.nn.log_softmax(model(played, played_lengths, train=False), axis=-1).reshape(len(speeds), batch, -1)
    return jax.nn.logsumexp(each, axis=0) - math.log(len(speeds))  # log of the mean probability, stably.


def _evenly_spaced_crops(mel: jax.Array, lengths: jax.Array, crops: int, crop_frames: int
                         ) -> tuple[jax.Array, jax.Array]:
    """(batch, frames, columns) -> (crops x batch, crop_frames, columns), crop-major: each clip's crops
    start evenly from 0 to its length - crop_frames; a clip no longer than that gives itself `crops` times."""
    excess = jnp.maximum(lengths - crop_frames, 0).astype(jnp.float32)
    starts = jnp.round(excess[None, :] * jnp.linspace(0.0, 1.0, crops)[:, None]).astype(jnp.int32)  # (crops, batch)
    frames = jnp.minimum(starts[..., None] + jnp.arange(crop_frames), mel.shape[1] - 1)  # (crops, batch, crop_frames)
    windows = jnp.take_along_axis(mel[None], frames[..., None], axis=2)
    return (windows.reshape(crops * mel.shape[0], crop_frames, mel.shape[2]),
            jnp.tile(jnp.minimum(lengths, crop_frames), crops))


def classify_mel(graphdef: nnx.GraphDef, params, batch_stats, mel: jax.Array, lengths: jax.Array, *,
                 speeds: Sequence[float] = (), bins: MelBins | None = None,
                 prior_offset: np.ndarray | None = None) -> jax.Array:
    """Normalised log-Mel (batch, frames, mels) and true frame counts -> (batch, classes) probabilities."""
    model = nnx.merge(graphdef, params, batch_stats)
    return jnp.exp(log_probabilities(model, mel, lengths, speeds=speeds, bins=bins, prior_offset=prior_offset))


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
                         *, features: FeatureConfig, mean, std, speeds: Sequence[float] = (),
                         prior_offset: np.ndarray | None = None) -> jax.Array:
    """(batch, window samples) waveform at the training rate -> (batch, classes) probabilities."""
    mel, lengths = window_features(waveform, num_samples, features=features, mean=mean, std=std)
    return classify_mel(graphdef, params, batch_stats, mel, lengths, speeds=speeds,
                        bins=MelBins.of(features, std), prior_offset=prior_offset)


def window_classifier(info: ModelInfo, graphdef: nnx.GraphDef, params, batch_stats) -> Callable:
    """`(waveform (batch, samples) float32, num_samples (batch,) int32) -> probabilities`, weights closed over.

    The weights become compile-time constants (as in the exported function): on CPU that runs about
    10% faster than passing them as arguments.
    """
    params, batch_stats = jax.device_get((params, batch_stats))
    return functools.partial(window_probabilities, graphdef, params, batch_stats, features=info.features,
                             mean=np.asarray(info.mean), std=np.asarray(info.std), speeds=info.test_time_speeds,
                             prior_offset=info.prior_offset())
