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
import warnings
from typing import Any, Mapping

import numpy as np


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """The frontend's settings; the defaults are the recommended ones (what configs/base.py trains on
    and `python -m data_prep` prepares)."""

    sample_rate: int = 16000
    n_mels: int = 40
    window_ms: float = 25.0
    hop_ms: float = 10.0
    n_fft: int | None = None  # None: the next power of two >= the window.
    fmin: float = 0.0
    fmax: float | None = None  # None: sample_rate / 2.
    amin: float = 1e-10
    # Whole clips lose leading/trailing audio this many dB below their loudest frame (None or 0: kept).
    trim_db: float | None = 40.0
    # Two more columns after the mel bins: each frame's periodicity and log2 F0 (`prosody`). 40 mel
    # bins do not resolve the harmonics of a male voice, so without them a model hears no pitch.
    pitch: bool = True

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> "FeatureConfig":
        """Stored or configured settings; ones stored before a setting existed mean what they meant then."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(m) - known
        if unknown:
            raise ValueError(f"Unknown feature settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{**_BEFORE_THEY_EXISTED, **dict(m)})

    @property
    def win_length(self) -> int:
        return int(round(self.sample_rate * self.window_ms / 1000))

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    @property
    def fft_size(self) -> int:
        return self.n_fft or 1 << (self.win_length - 1).bit_length()

    @property
    def prosody_columns(self) -> int:
        return len(PROSODY_COLUMNS) if self.pitch else 0

    @property
    def dim(self) -> int:
        """Columns per frame: the mel bins, then the prosody columns."""
        return self.n_mels + self.prosody_columns

    def num_frames(self, num_samples: int) -> int:
        """Frames librosa's centred STFT makes of `num_samples` samples."""
        return 1 + num_samples // self.hop_length


# Settings added after datasets and models were first stored, at the value that reproduces what a
# mapping without them described (datasets and models of before session 8 have no prosody columns).
_BEFORE_THEY_EXISTED = {"pitch": False}

# The prosody columns, in order. Periodicity is the normalised autocorrelation at the chosen lag
# (0: noise or silence, 1: perfectly periodic); log2(F0 / 100 Hz) is that lag's frequency, reported
# for every frame (unvoiced ones included, where periodicity says how little it means), so speed
# perturbation can shift the whole column.
PROSODY_COLUMNS = ("periodicity", "log2_f0_100hz")
F0_RANGE_HZ = (75.0, 600.0)  # Praat's default pitch floor and ceiling.
_PITCH_PERIODS = 3  # The pitch window holds this many periods of the floor (40 ms), as Praat's does.
_OCTAVE_COST = 0.01  # Praat's: per octave, favours the higher of two near-equal candidates (no octave drops).
# The autocorrelation is read at quarter-sample lags: at whole-sample lags a high voice's peak falls
# between samples and loses to its own second period (560 Hz read as 280). Half-sample lags come from
# the power spectrum zero-padded to twice its length (exact band-limited interpolation); the quarter
# lags between them from a windowed sinc over _MIDPOINT_TAPS values on each side. That is within 1e-5
# of a four-times-padded transform (the half-sample sequence holds nothing above half its band), and
# the transform, most of the frontend's time, is half as long: 1.5 times faster for one window, 2.5
# for four (one core).
_LAG_STEPS_PER_SAMPLE = 4
_MIDPOINT_TAPS = 8

_MEL_LINEAR_HZ = 200.0 / 3  # Hz per mel below the break.
_BREAK_HZ = 1000.0
_MEL_BREAK = _BREAK_HZ / _MEL_LINEAR_HZ
_MEL_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(hz) -> np.ndarray:
    """Slaney's mel scale (librosa's default, htk=False): linear to 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _MEL_LINEAR_HZ
    log = _MEL_BREAK + np.log(np.maximum(hz, _BREAK_HZ) / _BREAK_HZ) / _MEL_LOG_STEP
    return np.where(hz >= _BREAK_HZ, log, linear)


def mel_to_hz(mel) -> np.ndarray:
    """The inverse of `hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    log = _BREAK_HZ * np.exp(_MEL_LOG_STEP * (mel - _MEL_BREAK))
    return np.where(mel >= _MEL_BREAK, log, mel * _MEL_LINEAR_HZ)


def _mel_edges_hz(cfg: FeatureConfig) -> np.ndarray:
    """The n_mels + 2 corner frequencies of the triangular filters, equally spaced in mel."""
    fmax = cfg.sample_rate / 2 if cfg.fmax is None else cfg.fmax
    return mel_to_hz(np.linspace(hz_to_mel(cfg.fmin), hz_to_mel(fmax), cfg.n_mels + 2))


def mel_center_frequencies(cfg: FeatureConfig) -> np.ndarray:
    """(n_mels,) centre frequency in Hz of each mel bin (where its triangle peaks)."""
    return _mel_edges_hz(cfg)[1:-1]


@functools.lru_cache(maxsize=16)
def mel_filterbank(cfg: FeatureConfig) -> np.ndarray:
    """(fft_size // 2 + 1, n_mels) float64 Slaney-normalised triangular mel filters.

    The same numbers as `librosa.filters.mel(..., htk=False, norm="slaney")` (tests check it), built
    here because importing librosa costs every data_prep worker and every predictor process over a
    second (scipy.signal) for one small matrix.
    """
    fft_hz = np.fft.rfftfreq(cfg.fft_size, d=1.0 / cfg.sample_rate)
    edges_hz = _mel_edges_hz(cfg)
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    empty = np.flatnonzero(weights.max(axis=1) == 0)
    if empty.size:
        warnings.warn(f"mel filters {empty.tolist()} cover no FFT bin at {cfg.sample_rate} Hz with a "
                      f"{cfg.fft_size}-point FFT; use fewer mels or a longer window", stacklevel=2)
    return np.ascontiguousarray(weights.T)


@functools.lru_cache(maxsize=16)
def analysis_window(cfg: FeatureConfig) -> np.ndarray:
    """Periodic Hann of win_length, zero-padded to fft_size and centred, as librosa does."""
    n = cfg.win_length
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    left = (cfg.fft_size - n) // 2
    return np.pad(hann, (left, cfg.fft_size - n - left))


def _frames(padded, n_fft: int, hop: int, n_frames: int, xp):
    """(..., n_frames, n_fft) overlapping frames. NumPy gets a strided view (a fancy-index gather
    costs ten times as long there and dominated data_prep); XLA fuses the gather into the window
    multiply, so JAX takes the gather."""
    if xp is np:
        return np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[..., ::hop, :][..., :n_frames, :]
    index = np.arange(n_frames)[:, None] * hop + np.arange(n_fft)[None, :]
    return padded[..., index]


def loud_span(waveform, num_samples, cfg: FeatureConfig, xp=np):
    """(start, end) sample indices of the audio that trimming keeps, for (..., samples) waveforms
    whose first `num_samples` samples are valid (and the rest zero).

    RAVDESS clips open with about a second of room noise; crops that are mostly silence teach a
    model the room, not the voice. The span is what `librosa.effects.trim(top_db=cfg.trim_db,
    frame_length=win_length, hop_length=hop_length)` keeps (centred RMS frames; it runs from the
    first frame within `trim_db` of the loudest to one hop past the last), widened to one analysis
    window when a lone click is all that is loud. Written once for NumPy and JAX, like `log_mel`, so
    streaming windows are trimmed exactly as the clips a model was trained on.
    """
    win, hop = cfg.win_length, cfg.hop_length
    n_frames = cfg.num_frames(waveform.shape[-1])
    padded = xp.pad(xp.asarray(waveform), [(0, 0)] * (waveform.ndim - 1) + [(win // 2, win // 2)])
    power = xp.maximum(xp.mean(_frames(padded, win, hop, n_frames, xp) ** 2, axis=-1), 1e-10)
    valid = xp.arange(n_frames) < cfg.num_frames(xp.asarray(num_samples))[..., None]
    loudest = xp.max(xp.where(valid, power, 0.0), axis=-1, keepdims=True)
    loud = valid & (10 * xp.log10(power / loudest) > -cfg.trim_db)
    first = xp.argmax(loud, axis=-1)
    last = n_frames - 1 - xp.argmax(loud[..., ::-1], axis=-1)
    start, end = first * hop, xp.minimum(num_samples, (last + 1) * hop)
    short = end - start < win
    start = xp.where(short, xp.maximum(0, xp.minimum(start - (win - (end - start)) // 2, num_samples - win)), start)
    return start, xp.where(short, xp.minimum(start + win, num_samples), end)


def trim_silence(waveform: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """The clip without its leading and trailing audio `cfg.trim_db` below its loudest frame."""
    start, end = loud_span(waveform, waveform.size, cfg)
    return waveform[int(start):int(end)]


def clip_features(waveform: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """A whole clip's (frames, cfg.dim) float32 features as datasets store them: trimmed if the
    config says so, computed in float64."""
    if cfg.trim_db:
        waveform = trim_silence(waveform, cfg)
    return frame_features(np.asarray(waveform, np.float64), cfg).astype(np.float32)


def frame_features(waveform, cfg: FeatureConfig, xp=np):
    """(..., samples) -> (..., frames, cfg.dim): the log-Mel bins, then the prosody columns if on."""
    mel = log_mel(waveform, cfg, xp)
    if not cfg.pitch:
        return mel
    return xp.concatenate([mel, prosody(waveform, cfg, xp).astype(mel.dtype)], axis=-1)


def normalize(mel, mean, std):
    """Per-mel-bin standardisation by the training statistics (NumPy or JAX arrays alike)."""
    return (mel - mean) / std


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


@functools.lru_cache(maxsize=16)
def _pitch_analysis(cfg: FeatureConfig) -> tuple[int, int, int, int, np.ndarray, np.ndarray]:
    """Window length, FFT size, lag range (in lag steps) and the Hann window with its own normalised
    autocorrelation at lags min_lag - 1 .. max_lag + 1, which Boersma's method divides out (so a long
    lag is not penalised for the taper)."""
    win = int(round(cfg.sample_rate * _PITCH_PERIODS / F0_RANGE_HZ[0]))
    steps_per_s = _LAG_STEPS_PER_SAMPLE * cfg.sample_rate
    min_lag, max_lag = int(np.ceil(steps_per_s / F0_RANGE_HZ[1])), int(np.floor(steps_per_s / F0_RANGE_HZ[0]))
    # Long enough that the lags read (up to the floor's period, and the interpolation's reach) do not
    # wrap around; the FFTs are most of the frontend's time, so no longer.
    n_fft = 1 << (win + max_lag // _LAG_STEPS_PER_SAMPLE + _MIDPOINT_TAPS).bit_length()
    if (min_lag - 1) // 2 < _MIDPOINT_TAPS:
        raise ValueError(f"sample rate {cfg.sample_rate} Hz is too low for pitch up to {F0_RANGE_HZ[1]} Hz")
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * (np.arange(win) + 0.5) / win)
    energy, window_ac = _autocorrelation(np.fft.rfft(hann, n_fft), n_fft, min_lag - 1, max_lag + 2, np)
    return win, n_fft, min_lag, max_lag, hann, window_ac / energy


@functools.lru_cache(maxsize=1)
def _midpoint_filter() -> np.ndarray:
    """Weights reading a band-limited sequence half-way between two samples from _MIDPOINT_TAPS on each side."""
    offsets = np.arange(1 - _MIDPOINT_TAPS, _MIDPOINT_TAPS + 1)
    weights = np.sinc(0.5 - offsets) * np.kaiser(2 * _MIDPOINT_TAPS, 12.0)
    return weights / weights.sum()


def _autocorrelation(spectrum, n_fft: int, start: int, stop: int, xp):
    """(lag 0, lags start..stop-1 in 1 / _LAG_STEPS_PER_SAMPLE samples) of the autocorrelation of frames
    with this rfft, scaled as the inverse transform of the power spectrum padded four times."""
    power = (spectrum.real**2 + spectrum.imag**2) / 2
    half = xp.fft.irfft(power, n=2 * n_fft, axis=-1)  # At half-sample lags.
    lo, hi = start // 2, (stop + 1) // 2  # The half-sample lags that, with the midpoints after them, cover the range.
    taps = 1 - _MIDPOINT_TAPS
    midpoints = sum(float(w) * half[..., lo + taps + k:hi + taps + k] for k, w in enumerate(_midpoint_filter()))
    both = xp.stack([half[..., lo:hi], midpoints], axis=-1).reshape(*half.shape[:-1], 2 * (hi - lo))
    return half[..., 0], both[..., start - 2 * lo:stop - 2 * lo]


def prosody(waveform, cfg: FeatureConfig, xp=np):
    """(..., samples) -> (..., frames, 2): periodicity and log2(F0 / 100 Hz) per frame.

    The autocorrelation method of Boersma (1993, Praat's "ac"): a 40 ms Hann window centred where the
    log-Mel's frames are (so the columns line up frame for frame), the frame's normalised
    autocorrelation divided by the window's, read at quarter-sample lags, the best lag between 600
    and 75 Hz with Praat's octave cost, refined by a parabola through its neighbours. Written for
    NumPy and JAX like `log_mel`.
    """
    waveform = xp.asarray(waveform)
    dtype = waveform.dtype
    win, n_fft, min_lag, max_lag, hann, window_ac = _pitch_analysis(cfg)
    padded = xp.pad(waveform, [(0, 0)] * (waveform.ndim - 1) + [(win // 2, win - win // 2)])
    frames = _frames(padded, win, cfg.hop_length, cfg.num_frames(waveform.shape[-1]), xp)
    frames = (frames - xp.mean(frames, axis=-1, keepdims=True)) * xp.asarray(hann, dtype=dtype)
    energy, ac = _autocorrelation(xp.fft.rfft(frames, n=n_fft, axis=-1), n_fft, min_lag - 1, max_lag + 2, xp)
    energy = energy[..., None]
    # r[..., i] is at lag min_lag - 1 + i: the candidates and one neighbour on each side.
    r = xp.where(energy > 1e-10, ac / xp.maximum(energy, 1e-10), 0.0) / xp.asarray(window_ac, dtype=dtype)
    lags = np.arange(min_lag, max_lag + 1)
    steps_per_s = _LAG_STEPS_PER_SAMPLE * cfg.sample_rate
    octave_cost = _OCTAVE_COST * np.log2(F0_RANGE_HZ[0] * lags / steps_per_s)
    best = xp.argmax(r[..., 1:-1] - xp.asarray(octave_cost, dtype=dtype), axis=-1)[..., None] + 1
    before, peak, after = (xp.take_along_axis(r, best + d, axis=-1)[..., 0] for d in (-1, 0, 1))
    curvature = before - 2 * peak + after
    shift = xp.where(curvature < 0, 0.5 * (before - after) / xp.where(curvature < 0, curvature, -1.0), 0.0)
    period = xp.clip(best[..., 0] + (min_lag - 1) + xp.clip(shift, -0.5, 0.5), steps_per_s / F0_RANGE_HZ[1],
                     steps_per_s / F0_RANGE_HZ[0])
    log_f0 = xp.log2(steps_per_s / period / 100.0)
    return xp.stack([xp.clip(peak, 0.0, 1.0), log_f0], axis=-1).astype(dtype)
