"""The log-Mel frontend, written once for NumPy (offline data_prep) and JAX (on-device streaming).

Both paths run the same code through an array namespace `xp`, so the features a deployed model sees
are the ones it was trained on. The definition is librosa's
`power_to_db(melspectrogram(y, n_fft, hop_length, win_length, window="hann", center=True,
pad_mode="constant", power=2, htk=False, norm="slaney"), ref=1, amin, top_db=None)`, transposed to
(frames, mels). `top_db` is left off on purpose: its clipping depends on the loudest frame of the
whole input, which would make a streaming window's features differ from the same audio offline.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import numpy as np


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = 16000
    n_mels: int = 80
    window_ms: float = 25.0
    hop_ms: float = 10.0
    n_fft: int | None = None  # None: the next power of two >= the window.
    fmin: float = 0.0
    fmax: float | None = None  # None: sample_rate / 2.
    amin: float = 1e-10

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> "FeatureConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(m) - known
        if unknown:
            raise ValueError(f"Unknown feature settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**dict(m))

    @property
    def win_length(self) -> int:
        return int(round(self.sample_rate * self.window_ms / 1000))

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    @property
    def fft_size(self) -> int:
        return self.n_fft or 1 << (self.win_length - 1).bit_length()

    def num_frames(self, num_samples: int) -> int:
        """Frames librosa's centred STFT makes of `num_samples` samples."""
        return 1 + num_samples // self.hop_length


@functools.lru_cache(maxsize=16)
def mel_filterbank(cfg: FeatureConfig) -> np.ndarray:
    """(fft_size // 2 + 1, n_mels) float64 Slaney mel filters, librosa's own."""
    import librosa  # Imported lazily: only the filter construction needs it.

    fb = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.fft_size, n_mels=cfg.n_mels,
                             fmin=cfg.fmin, fmax=cfg.fmax, htk=False, norm="slaney", dtype=np.float64)
    return np.ascontiguousarray(fb.T)


def _frames(padded, n_fft: int, hop: int, n_frames: int, xp):
    """(..., n_frames, n_fft) overlapping frames. NumPy gets a strided view (a fancy-index gather
    costs ten times as long there and dominated data_prep); XLA fuses the gather into the window
    multiply, so JAX takes the gather."""
    if xp is np:
        return np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[..., ::hop, :][..., :n_frames, :]
    index = np.arange(n_frames)[:, None] * hop + np.arange(n_fft)[None, :]
    return padded[..., index]


@functools.lru_cache(maxsize=16)
def analysis_window(cfg: FeatureConfig) -> np.ndarray:
    """Periodic Hann of win_length, zero-padded to fft_size and centred, as librosa does."""
    n = cfg.win_length
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    left = (cfg.fft_size - n) // 2
    return np.pad(hann, (left, cfg.fft_size - n - left))


def log_mel(waveform, cfg: FeatureConfig, xp=np):
    """(..., samples) waveform at cfg.sample_rate -> (..., frames, n_mels) log-Mel power in dB.

    `xp` is `numpy` or `jax.numpy`; the computation dtype follows the input (NumPy data_prep feeds
    float64 for exactness, the jitted JAX path runs float32).
    """
    waveform = xp.asarray(waveform)
    dtype = waveform.dtype
    n_fft, hop = cfg.fft_size, cfg.hop_length
    half = n_fft // 2
    pad = [(0, 0)] * (waveform.ndim - 1) + [(half, half)]
    padded = xp.pad(waveform, pad)
    frames = _frames(padded, n_fft, hop, cfg.num_frames(waveform.shape[-1]), xp)
    frames = frames * xp.asarray(analysis_window(cfg), dtype=dtype)
    spectrum = xp.fft.rfft(frames, n=n_fft, axis=-1)
    power = spectrum.real**2 + spectrum.imag**2
    mel = power @ xp.asarray(mel_filterbank(cfg), dtype=dtype)
    return 10.0 * xp.log10(xp.maximum(mel, cfg.amin))
