"""Decoding audio of any format, rate and channel count into the mono waveform the frontend expects."""

from __future__ import annotations

import os
import struct

import numpy as np
import soundfile as sf
import soxr

# Peak amplitude below which a recording is taken as silent (about -100 dBFS): such a file has no
# speech to learn from, and its log-Mel would be the floor value everywhere.
SILENCE_PEAK = 1e-5


class AudioError(ValueError):
    """A file that cannot be used, with the reason in words (reports name the file and the reason)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def _wav_truncation(path: str) -> str | None:
    """libsndfile silently reads what is there of a cut-off WAV; compare with the header instead."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return None
        endian = "<" if head[:4] == b"RIFF" else ">"
        size = os.fstat(f.fileno()).st_size
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


def load_audio(path: str, sample_rate: int) -> np.ndarray:
    """Mono float32 waveform of `path` at `sample_rate`; raises AudioError for unusable files."""
    try:
        if os.path.getsize(path) == 0:
            raise AudioError(path, "empty file (0 bytes)")
        if path.lower().endswith(".wav") and (problem := _wav_truncation(path)):
            raise AudioError(path, problem)
        data, sr = sf.read(path, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(path, f"unreadable audio ({e})") from e
    return prepare_waveform(data, sr, sample_rate, path)


def prepare_waveform(data: np.ndarray, sr: int, sample_rate: int, name: str = "<waveform>") -> np.ndarray:
    """Down-mixes (samples, channels) or (samples,) audio and resamples it; checks it is usable."""
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
    return mono


def trim_silence(waveform: np.ndarray, top_db: float, frame_length: int, hop_length: int) -> np.ndarray:
    """The waveform without its leading and trailing silence: frames `top_db` below the loudest.

    RAVDESS clips open with about a second of room noise; training crops that contain mostly silence
    teach the model the room, not the voice. Frame for frame this is `librosa.effects.trim` (centred
    RMS frames; the kept span runs from the first loud frame's centre to one hop past the last's).
    """
    half = frame_length // 2
    padded = np.pad(np.asarray(waveform, np.float64), (half, half))
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame_length)[::hop_length]
    frames = frames[:1 + waveform.size // hop_length]
    power = np.maximum(np.mean(frames**2, axis=-1), 1e-10)
    loud = np.flatnonzero(10 * np.log10(power / power.max()) > -top_db)
    if loud.size == 0:
        return waveform[:0]
    return waveform[loud[0] * hop_length:min(waveform.size, (loud[-1] + 1) * hop_length)]
