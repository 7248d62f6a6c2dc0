"""Loads a window classifier written by `python -m ser_jax.export`; needs only jax and numpy.

    from ser_jax.serving import load_exported
    model = load_exported("workdir/export/ser_window.bin")
    probs = model(window)  # (window_samples,) or (batch, window_samples) float32 at model.sample_rate
    model.class_names[probs.argmax(-1)]

This module imports nothing from Flax or the training code, so a serving process can ship the .bin,
its .json and this file alone (plus jax, jaxlib, numpy and flatbuffers, which jax.export's
deserialiser needs).
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

FORMAT_VERSION = 1


def metadata_path(path: str) -> str:
    """`ser_window.bin` -> `ser_window.json`."""
    return os.path.splitext(path)[0] + ".json"


class ExportedClassifier:
    """Callable `(waveform, num_samples=None) -> probabilities` over fixed-length windows."""

    def __init__(self, exported: "jax.export.Exported", meta: dict | None = None):
        self.exported = exported
        self.meta = meta or {}
        wave_aval = exported.in_avals[0]
        self.window_samples: int = int(self.meta.get("window_samples", wave_aval.shape[-1]))
        self.class_names: tuple[str, ...] = tuple(self.meta.get("class_names", ()))
        self.sample_rate: int | None = self.meta.get("sample_rate")
        batch = wave_aval.shape[0]
        self.batch: int | None = batch if isinstance(batch, int) else None  # None: any batch size.

    def __call__(self, waveform, num_samples=None) -> np.ndarray:
        """(window_samples,) or (batch, window_samples) float32 -> (classes,) or (batch, classes).

        `num_samples` (int or (batch,)) counts the valid samples of a zero-padded, partly filled window.
        """
        x = np.asarray(waveform, np.float32)
        single = x.ndim == 1
        x = np.atleast_2d(x)
        if x.ndim != 2 or x.shape[1] != self.window_samples:
            raise ValueError(f"expected windows of {self.window_samples} samples, got shape {np.shape(waveform)}")
        n = np.broadcast_to(np.asarray(self.window_samples if num_samples is None else num_samples, np.int32),
                            (x.shape[0],))
        if self.batch is not None and x.shape[0] != self.batch:
            raise ValueError(f"this export has a fixed batch of {self.batch}; got {x.shape[0]} windows")
        probs = np.asarray(self.exported.call(x, np.ascontiguousarray(n)))
        return probs[0] if single else probs


def load_exported(path: str) -> ExportedClassifier:
    """Deserialises `path` (and reads the metadata JSON beside it, when present)."""
    with open(path, "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    meta = None
    if os.path.exists(metadata_path(path)):
        with open(metadata_path(path)) as f:
            meta = json.load(f)
    return ExportedClassifier(exported, meta)
