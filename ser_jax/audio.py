"""Decoding audio of any format, rate and channel count into the mono waveform the frontend expects."""

from __future__ import annotations

import io
import os
import struct
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac")  # What a folder is searched for.
# Peak amplitude below which a recording is taken as silent (about -100 dBFS): such a file has no
# speech to learn from, and its log-Mel would be the floor value everywhere.
SILENCE_PEAK = 1e-5


class AudioError(ValueError):
    """A file that cannot be used, with the reason in words (reports name the file and the reason)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def _wav_truncation(f: BinaryIO) -> str | None:
    """libsndfile silently reads what is there of a cut-off WAV; compare with the header instead.

    `f` is a seekable binary file at its start; it is left at an arbitrary position.
    """
    head = f.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
        return None
    endian = "<" if head[:4] == b"RIFF" else ">"
    size = f.seek(0, os.SEEK_END)
    f.seek(12)
    while True:
        chunk = f.read(8)
        if len(chunk) < 8:
            return None
        cid, length = chunk[:4], struct.unpack(endian + "I", chunk[4:])[0]
        if cid == b"data":
            available = size - f.tell()
            if length != 0xFFFFFFFF and length > available:
                return f"truncated: header declares {length} data bytes, file holds {available}"
            return None
        f.seek(length + (length & 1), os.SEEK_CUR)


def find_audio_files(folder: str) -> list[str]:
    """The .wav/.flac files below `folder` (hidden ones left out), in a stable order."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        found += [os.path.join(root, f) for f in sorted(names)
                  if f.lower().endswith(AUDIO_EXTENSIONS) and not f.startswith(".")]
    return found


def load_audio(path: str, sample_rate: int, *, min_samples: int = 1) -> np.ndarray:
    """Mono float32 waveform of `path` at `sample_rate`; raises AudioError for unusable files."""
    try:
        if os.path.getsize(path) == 0:
            raise AudioError(path, "empty file (0 bytes)")
        if path.lower().endswith(".wav"):
            with open(path, "rb") as f:
                if problem := _wav_truncation(f):
                    raise AudioError(path, problem)
        data, sr = sf.read(path, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(path, f"unreadable audio ({e})") from e
    return prepare_waveform(data, sr, sample_rate, path, min_samples=min_samples)


def decode_audio(data: bytes, name: str = "<upload>") -> tuple[np.ndarray, int]:
    """Encoded audio held in memory (any format libsndfile reads) -> ((samples, channels) float32, rate).

    Raises AudioError for empty, truncated (WAV) or undecodable bytes; `prepare_waveform` checks the rest.
    """
    if not data:
        raise AudioError(name, "empty file (0 bytes)")
    if problem := _wav_truncation(io.BytesIO(data)):
        raise AudioError(name, problem)
    try:
        return sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(name, f"unreadable audio ({e})") from e


def prepare_waveform(data: np.ndarray, sr: int, sample_rate: int, name: str = "<waveform>", *,
                     min_samples: int = 1) -> np.ndarray:
    """Down-mixes (samples, channels) or (samples,) audio and resamples it; checks it is usable.

    `min_samples` (at `sample_rate`) is what the feature frontend needs: one analysis window.
    """
    data = np.asarray(data, dtype=np.float32)
    mono = data.mean(axis=1) if data.ndim == 2 else data
    if mono.ndim != 1:
        raise AudioError(name, f"expected (samples,) or (samples, channels) audio, got shape {data.shape}")
    if mono.size == 0:
        raise AudioError(name, "no audio samples")
    if not np.all(np.isfinite(mono)):
        raise AudioError(name, "audio contains NaN or infinite samples")
    if np.max(np.abs(mono)) < SILENCE_PEAK:
        raise AudioError(name, f"silent (peak amplitude below {SILENCE_PEAK:g})")
    if sr != sample_rate:
        mono = soxr.resample(mono, sr, sample_rate, quality="HQ").astype(np.float32)
    if mono.size < min_samples:
        raise AudioError(name, f"too short: {mono.size} samples at {sample_rate} Hz, under the {min_samples} "
                               f"of one analysis window")
    return mono
