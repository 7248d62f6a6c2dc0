"""Sliding-window emotion estimates over a live or replayed audio stream.

`StreamingClassifier` takes mono audio at the model's sample rate in chunks of any size and, every
`hop` samples of audio, classifies the last `window` samples (default 3 s every 0.5 s). Before a
full window has arrived it classifies what there is: the window is zero-padded and given its true
length, which gives the same features as that shorter clip alone. The classifier is any callable
`(waveform (1, window) float32, num_samples (1,) int32) -> (1, classes) probabilities`: the jitted
`ser_jax.predictor.Predictor.window_function` (log-Mel frontend, normalisation and model in one compiled function) or
an exported model from `ser_jax.serving.load_exported`.

Sources of chunks: `file_chunks` (a decoded file, as fast as possible or paced at real speed),
`raw_pcm_chunks` (raw s16le/f32le PCM from a pipe, resampled on the fly by a `PcmDecoder`, which the
server's WebSocket streams use too) and `microphone_chunks` (needs the optional `sounddevice` package).
"""

from __future__ import annotations

import collections
import dataclasses
import queue
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import BinaryIO

import numpy as np

from ser_jax import audio


@dataclasses.dataclass(frozen=True)
class Estimate:
    time: float  # Seconds of audio heard when this estimate was made (the window's end).
    start: float  # Where the window starts (0 until a full window has arrived).
    label: str
    probabilities: dict[str, float]  # Smoothed over the last `smoothing` windows.

    def as_dict(self) -> dict:
        return {"time": round(self.time, 4), "start": round(self.start, 4), "label": self.label,
                "probabilities": self.probabilities}


@dataclasses.dataclass(frozen=True)
class DueWindow:
    """A window that fell due, not yet classified: what a batching server queues for the model."""
    waveform: np.ndarray  # (window,) float32, zero-padded past num_samples.
    num_samples: int
    heard: int  # Samples heard when it fell due (the window's end).


class StreamingClassifier:
    """Sliding windows over a stream, classified by `classify` (see the module docstring).

    `push`/`flush` classify each window as it falls due. A caller that classifies windows itself (the
    server batches many streams' windows into one model call) uses `windows`/`final_window` and hands
    each window's probabilities back, in order, to `estimate`; `classify` may then be None.
    """

    def __init__(self, classify: Callable | None, class_names: Sequence[str], *, sample_rate: int,
                 window_samples: int, hop_samples: int, smoothing: int = 1, min_samples: int = 1):
        if window_samples <= 0 or hop_samples <= 0 or smoothing < 1:
            raise ValueError("window and hop must be positive and smoothing at least 1")
        self.classify, self.class_names = classify, tuple(class_names)
        self.sample_rate, self.window, self.hop = sample_rate, window_samples, hop_samples
        self.min_samples = min_samples  # A final (flushed) window needs at least this many samples.
        self._recent = collections.deque(maxlen=smoothing)
        self._buffer = np.zeros(0, np.float32)  # The last <= window samples heard.
        self._heard = 0
        self._next = hop_samples  # Sample count at which the next estimate is due.
        self._last = 0  # Sample count of the last window taken.

    @property
    def heard(self) -> int:
        """Samples fed so far."""
        return self._heard

    def push(self, samples: np.ndarray) -> list[Estimate]:
        """Feeds mono samples; returns the estimates that fell due (one per hop boundary crossed)."""
        return [self._classified(w) for w in self.windows(samples)]

    def flush(self) -> list[Estimate]:
        """At the end of a stream: an estimate of the last window if audio arrived since the last one."""
        window = self.final_window()
        return [self._classified(window)] if window else []

    def windows(self, samples: np.ndarray) -> list[DueWindow]:
        """Feeds mono samples; returns the windows that fell due, unclassified."""
        samples = np.asarray(samples, np.float32).reshape(-1)
        out = []
        while samples.size:
            take = min(samples.size, self._next - self._heard)
            self._buffer = np.concatenate([self._buffer, samples[:take]])[-self.window:]
            self._heard += take
            samples = samples[take:]
            if self._heard == self._next:
                out.append(self._take())
                self._next += self.hop
        return out

    def final_window(self) -> DueWindow | None:
        """At the end of a stream: the last window if audio arrived since the last one (and enough of it)."""
        if self._heard > self._last and self._buffer.size >= self.min_samples:
            return self._take()
        return None

    def estimate(self, window: DueWindow, probabilities: np.ndarray) -> Estimate:
        """A window's (classes,) probabilities -> its estimate, smoothed over the previous ones."""
        self._recent.append(np.asarray(probabilities, np.float64))
        smoothed = np.mean(self._recent, axis=0)
        n = window.num_samples
        return Estimate(time=window.heard / self.sample_rate, start=(window.heard - n) / self.sample_rate,
                        label=self.class_names[int(smoothed.argmax())],
                        probabilities={c: float(p) for c, p in zip(self.class_names, smoothed)})

    def _take(self) -> DueWindow:
        n = self._buffer.size
        waveform = np.zeros(self.window, np.float32)
        waveform[:n] = self._buffer
        self._last = self._heard
        return DueWindow(waveform, n, self._heard)

    def _classified(self, window: DueWindow) -> Estimate:
        probs = self.classify(window.waveform[None], np.array([window.num_samples], np.int32))
        return self.estimate(window, np.asarray(probs)[0])


def run(stream: StreamingClassifier, chunks: Iterable[np.ndarray], *, flush: bool = True) -> Iterator[Estimate]:
    """Feeds every chunk to `stream`, yielding estimates as they fall due (and the final one)."""
    for chunk in chunks:
        yield from stream.push(chunk)
    if flush:
        yield from stream.flush()


def file_chunks(path: str, sample_rate: int, chunk_samples: int, *, realtime: bool = False) -> Iterator[np.ndarray]:
    """A decoded file (any format, rate, channels) in chunks; with `realtime`, paced at the audio's speed."""
    wave = audio.load_audio(path, sample_rate)
    t0 = time.perf_counter()
    for start in range(0, wave.size, chunk_samples):
        if realtime:  # A chunk is released once it would have been fully recorded.
            due = t0 + min(start + chunk_samples, wave.size) / sample_rate
            time.sleep(max(0.0, due - time.perf_counter()))
        yield wave[start:start + chunk_samples]


def _resampler(rate: int, sample_rate: int):
    """A streaming soxr resampler (None when the rates agree): chunks resample as the whole would."""
    import soxr

    return soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality="HQ") if rate != sample_rate else None


PCM_FORMATS = {"s16le": (np.dtype("<i2"), 1 / 32768.0), "f32le": (np.dtype("<f4"), 1.0)}


class PcmDecoder:
    """Interleaved raw PCM bytes, in pieces of any size -> mono float32 at `sample_rate`.

    A partial frame at the end of a piece is kept for the next; resampling is streamed, so pieces
    decode as the whole would.
    """

    def __init__(self, rate: int, fmt: str, channels: int, sample_rate: int):
        if fmt not in PCM_FORMATS:
            raise ValueError(f"raw PCM format must be one of {sorted(PCM_FORMATS)}, got {fmt!r}")
        if rate <= 0 or channels <= 0:
            raise ValueError(f"rate and channels must be positive, got rate {rate} and {channels} channels")
        self.dtype, self.scale = PCM_FORMATS[fmt]
        self.channels = channels
        self.frame = self.dtype.itemsize * channels
        self._resampler = _resampler(rate, sample_rate)
        self._pending = b""

    def decode(self, data: bytes, *, last: bool = False) -> np.ndarray:
        """The mono samples `data` completes; `last` flushes the resampler at the end of the stream."""
        data = self._pending + data
        usable = len(data) - len(data) % self.frame
        self._pending = data[usable:]
        x = np.frombuffer(data[:usable], self.dtype).astype(np.float32) * np.float32(self.scale)
        x = x.reshape(-1, self.channels).mean(axis=1)
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x, last=last)
        return x.astype(np.float32, copy=False)


def raw_pcm_chunks(stream: BinaryIO, rate: int, fmt: str, channels: int, sample_rate: int, *,
                   chunk_samples: int = 1600) -> Iterator[np.ndarray]:
    """Interleaved raw PCM (`fmt` s16le or f32le) read from a binary stream -> mono float32 at `sample_rate`.

    Chunks are yielded as soon as they are read (so a live pipe stays live); resampling is streamed.
    """
    decoder = PcmDecoder(rate, fmt, channels, sample_rate)
    read = getattr(stream, "read1", stream.read)  # read1: return what the pipe has, not wait for a full chunk.
    while True:
        data = read(chunk_samples * decoder.frame)
        x = decoder.decode(data, last=not data)
        if x.size:
            yield x
        if not data:
            return


def import_sounddevice():
    """The optional `sounddevice` module, or a RuntimeError that says how to install it."""
    try:
        import sounddevice
    except (ImportError, OSError) as e:  # OSError: the package is there but the PortAudio library is not.
        raise RuntimeError("microphone input needs the optional `sounddevice` package and the PortAudio library: "
                           "pip install sounddevice (or pip install 'ser_jax[mic]'); "
                           f"importing it failed with: {e}") from e
    return sounddevice


def microphone_chunks(sample_rate: int, chunk_samples: int, *, device=None) -> Iterator[np.ndarray]:
    """Live microphone audio, mono float32 at `sample_rate`, until interrupted (Ctrl-C).

    Raises RuntimeError at once (not at the first chunk) when sounddevice is missing.
    """
    sd = import_sounddevice()
    info = sd.query_devices(device, "input")
    rate = int(info["default_samplerate"])
    resampler = _resampler(rate, sample_rate)
    block = max(1, round(chunk_samples * rate / sample_rate))

    def chunks():
        blocks: queue.Queue = queue.Queue()

        def callback(indata, frames, time_info, status):
            blocks.put(indata.mean(axis=1).copy())

        with sd.InputStream(samplerate=rate, channels=min(2, int(info["max_input_channels"])) or 1,
                            dtype="float32", blocksize=block, device=device, callback=callback):
            while True:
                x = blocks.get()
                yield resampler.resample_chunk(x) if resampler is not None else x

    return chunks()
