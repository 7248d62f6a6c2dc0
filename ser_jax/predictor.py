"""`Predictor`: emotion predictions from a training workdir, for whole clips and streaming windows.

Everything a prediction depends on comes from the workdir (model_info.json, config.json, the
checkpoint's model item), so features are computed exactly as in training and never re-typed:

* Whole files / clips (`predict`, `predict_batch`, `predict_files`) take the path evaluation takes:
  the NumPy float64 log-Mel of the whole utterance at the training sample rate, normalised by the
  training mean/std, zero-padded to a multiple of `bucket_frames` frames with the true length passed
  along (the model masks padding, so the padding changes nothing and compiles stay few).
* Fixed-length windows (`window_function`, used by streaming) run waveform -> log-Mel (JAX) ->
  normalisation -> model -> probabilities as one jitted function (`ser_jax.classify`).

Importing this module loads no training code, no dataset reader and no data_prep.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence

import jax
import numpy as np
from flax import nnx

from ser_jax import audio, batching, pretrained
from ser_jax.classify import classify_mel, window_classifier
from ser_jax.features import FeatureConfig, clip_features, normalize
from ser_jax.model_info import ModelInfo, check_speeds
from ser_jax.trained_model import TrainedModel
from ser_jax.warping import MelBins

BUCKET_FRAMES = 100  # Whole clips are padded to a multiple of this many frames (as evaluation does).


def _rows(n: int, batch_size: int) -> int:
    """Rows of a batch of n clips: the next power of two (capped), so few batch shapes are compiled."""
    return min(batch_size, 1 << max(n - 1, 0).bit_length())


def add_reading_arguments(parser: argparse.ArgumentParser) -> None:
    """--test_time_speeds and --prior_correction, for the command lines that load a Predictor
    (predict, serve, export); `reading(args)` turns them into the Predictor's keyword arguments."""

    def speeds(text: str) -> tuple[float, ...]:
        try:
            return check_speeds(() if text.strip().lower() == "none" else tuple(float(s) for s in text.split(",")))
        except ValueError as e:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated playback rates between 0.5 and 2 (e.g. 0.9,1,1.1) or 'none', "
                f"got {text!r}") from e

    parser.add_argument("--test_time_speeds", type=speeds, default=None,
                        help="read every clip or window at these rates instead of the ones recorded with the "
                             "model ('none': one pass, the clip as it is; fewer rates, less latency)")

    def strength(text: str) -> float:
        try:
            if (value := float(text)) >= 0:
                return value
        except ValueError:
            pass
        raise argparse.ArgumentTypeError(f"expected a number >= 0 (0: no correction), got {text!r}")

    parser.add_argument("--prior_correction", type=strength, default=None,
                        help="divide the probabilities by the training class frequencies to this power instead of "
                             "the recorded one (0: the training mix's odds; 1: every emotion equally likely)")


def reading(args: argparse.Namespace) -> dict:
    """The Predictor keyword arguments of `add_reading_arguments`' flags."""
    return {"test_time_speeds": args.test_time_speeds, "prior_correction": args.prior_correction}


class Predictor:
    """A trained model ready for inference on one device.

    `predict*` return `{"label": str, "probabilities": {class name: float}}` per clip.
    """

    def __init__(self, info: ModelInfo, graphdef: nnx.GraphDef, params, batch_stats, *,
                 bucket_frames: int = BUCKET_FRAMES, batch_size: int = 16, device: jax.Device | None = None,
                 test_time_speeds: Sequence[float] | None = None, prior_correction: float | None = None):
        """`test_time_speeds` replaces the rates the model was trained to be read at (None: keep them;
        (): one pass per clip or window, giving up the averaging's accuracy for latency);
        `prior_correction` the recorded correction for the training class prior (None: keep it)."""
        if info.speaker_normalized:
            raise ValueError("this model was trained with transductive per-speaker normalisation "
                             "(data.transductive_speaker_norm): it needs each speaker's other clips, so it is "
                             "for evaluation (python -m ser_jax.main --mode=eval) only; deploy an inductive model")
        self.info = info if test_time_speeds is None else info.with_speeds(test_time_speeds)
        if prior_correction is not None:
            self.info = self.info.with_prior_correction(prior_correction)
        self.graphdef = graphdef
        self.device = device or jax.local_devices()[0]
        self.params, self.batch_stats = jax.device_put((params, batch_stats), self.device)
        self.bucket_frames, self.batch_size = bucket_frames, batch_size
        self.step: int | None = None
        self._classify = jax.jit(functools.partial(
            classify_mel, graphdef, speeds=self.info.test_time_speeds,
            bins=MelBins.of(self.info.features, self.info.std), prior_offset=self.info.prior_offset()))
        self._windows: dict[int, Callable] = {}

    @classmethod
    def from_workdir(cls, workdir: str, checkpoint: str | int = "best", **kwargs) -> "Predictor":
        """Restores `checkpoint` ("best", "latest" or a step) of a training workdir."""
        device = kwargs.pop("device", None) or jax.local_devices()[0]
        trained = TrainedModel.load(workdir, checkpoint, sharding=jax.sharding.SingleDeviceSharding(device))
        return cls.from_trained(trained, device=device, **kwargs)

    @classmethod
    def from_pretrained(cls, name: str, **kwargs) -> "Predictor":
        """A model packaged with ser_jax (`python -m ser_jax.pretrained` lists them), or such a folder."""
        return cls.from_trained(pretrained.load(name), **kwargs)

    @classmethod
    def from_trained(cls, trained: TrainedModel, **kwargs) -> "Predictor":
        predictor = cls(trained.info, trained.graphdef, trained.params, trained.batch_stats, **kwargs)
        predictor.step = trained.step
        return predictor

    # -- What the model was trained with -----------------------------------------------------

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names

    @property
    def features(self) -> FeatureConfig:
        return self.info.features

    @property
    def sample_rate(self) -> int:
        return self.info.features.sample_rate

    # -- Whole clips ---------------------------------------------------------------------------

    def clip_features(self, waveform: np.ndarray) -> np.ndarray:
        """A mono waveform at the training rate -> normalised (frames, features.dim) float32, as in training/eval."""
        waveform = np.asarray(waveform)
        if waveform.ndim != 1:
            raise ValueError(f"expected a mono (samples,) waveform, got shape {waveform.shape}")
        return normalize(clip_features(waveform, self.features), self.info.mean, self.info.std).astype(np.float32)

    def prepare(self, waveform: np.ndarray, sample_rate: int, name: str) -> np.ndarray:
        """Any rate and channel count -> a usable mono waveform at the model's rate (else audio.AudioError)."""
        return audio.prepare_waveform(waveform, sample_rate, self.sample_rate, name,
                                      min_samples=self.features.win_length)

    def probabilities(self, mels: Sequence[np.ndarray]) -> np.ndarray:
        """Normalised features (`clip_features`) of any lengths -> (len(mels), classes) probabilities, in order.

        Clips are sorted by length and batched; each batch is padded to a multiple of
        `bucket_frames` frames (and to a power-of-two number of rows) with the true lengths.
        """
        out = np.zeros((len(mels), len(self.class_names)), np.float32)
        order = sorted(range(len(mels)), key=lambda i: mels[i].shape[0])
        for start in range(0, len(order), self.batch_size):
            ids = order[start:start + self.batch_size]
            batch, lengths = batching.pad_batch(
                [mels[i] for i in ids], rows=_rows(len(ids), self.batch_size), columns=self.features.dim,
                frames=batching.bucketed(max(mels[i].shape[0] for i in ids), self.bucket_frames))
            probs = self._classify(self.params, self.batch_stats, jax.device_put(batch, self.device),
                                   jax.device_put(lengths, self.device))
            out[ids] = np.asarray(probs)[:len(ids)]
        return out

    def result(self, probabilities: np.ndarray) -> dict:
        probabilities = np.asarray(probabilities, np.float64)
        return {"label": self.class_names[int(probabilities.argmax())],
                "probabilities": {c: float(p) for c, p in zip(self.class_names, probabilities)}}

    def predict_batch(self, waveforms: Sequence[np.ndarray], sample_rate: int | None = None) -> list[dict]:
        """Whole clips ((samples,) or (samples, channels), at `sample_rate`, default the model's) -> results."""
        sr = sample_rate or self.sample_rate
        mels = [self.clip_features(self.prepare(w, sr, f"<waveform {i}>")) for i, w in enumerate(waveforms)]
        return [self.result(p) for p in self.probabilities(mels)]

    def predict(self, waveform: np.ndarray, sample_rate: int | None = None) -> dict:
        """One whole clip -> {"label", "probabilities"}; raises audio.AudioError if it is unusable."""
        return self.predict_batch([waveform], sample_rate)[0]

    def predict_files(self, paths: Iterable[str], *, chunk: int = 64) -> Iterator[tuple[str, dict | audio.AudioError]]:
        """(path, result) for every path in order; the result is the AudioError of a file that was skipped.

        Files are decoded (any format libsndfile reads, any rate and channel count) `chunk` at a time.
        """
        paths = list(paths)
        for start in range(0, len(paths), chunk):
            loaded: dict[int, np.ndarray] = {}
            errors: dict[int, audio.AudioError] = {}
            for i, path in enumerate(paths[start:start + chunk]):
                try:
                    loaded[i] = self.clip_features(audio.load_audio(path, self.sample_rate,
                                                              min_samples=self.features.win_length))
                except audio.AudioError as e:
                    errors[i] = e
            probs = dict(zip(loaded, self.probabilities(list(loaded.values()))))
            for i, path in enumerate(paths[start:start + chunk]):
                yield path, errors[i] if i in errors else {"path": path, **self.result(probs[i])}

    # -- Fixed-length windows (streaming) --------------------------------------------------------

    def window_function(self, window_samples: int) -> Callable:
        """A jitted `(waveform (batch, window_samples) float32, num_samples (batch,) int32) -> probabilities`.

        The log-Mel frontend runs in JAX inside the same compiled function as the model.
        """
        if window_samples not in self._windows:
            fn = jax.jit(window_classifier(self.info, self.graphdef, self.params, self.batch_stats))
            device = self.device

            def call(waveform, num_samples):
                waveform = np.asarray(waveform, np.float32)
                if waveform.shape[-1] != window_samples:
                    raise ValueError(f"expected windows of {window_samples} samples, got shape {waveform.shape}")
                return fn(jax.device_put(waveform, device), jax.device_put(np.asarray(num_samples, np.int32), device))

            self._windows[window_samples] = call
        return self._windows[window_samples]
