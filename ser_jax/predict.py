"""Emotion predictions from a training workdir: a Python API and `python -m ser_jax.predict`.

Everything a prediction depends on comes from the workdir (model_info.json, config.json, a
checkpoint), so features are computed exactly as in training and never re-typed:

* Whole files / clips (`Predictor.predict`, `predict_batch`, `predict_files`) take the path the
  evaluation takes: the NumPy float64 log-Mel of the whole utterance at the training sample rate,
  normalised by the training mean/std, zero-padded to a multiple of `bucket_frames` frames with the
  true length passed along (the model masks padding, so the padding changes nothing and compiles
  stay few).
* Fixed-length windows (`Predictor.window_function`, used by streaming, export and the latency
  benchmark) run waveform -> log-Mel (JAX) -> normalisation -> model -> probabilities as one jitted
  function. A window holding fewer valid samples than its length (the start of a stream) is
  zero-padded and given its true length, which gives the same features as the shorter clip alone.

Command line (see `--help`):

    python -m ser_jax.predict --workdir DIR [--checkpoint best] PATHS... [--output out.jsonl|out.csv]
    python -m ser_jax.predict --workdir DIR --stream [--window 3.0 --hop 0.5 --smoothing N] [--realtime] FILE
    arecord -f S16_LE -r 16000 -c 1 | python -m ser_jax.predict --workdir DIR --stream -
    python -m ser_jax.predict --workdir DIR --stream --mic
"""

from __future__ import annotations

import argparse
import csv
import functools
import glob
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ser_jax import audio
from ser_jax.features import FeatureConfig, log_mel
from ser_jax.model_info import ModelInfo

BUCKET_FRAMES = 100  # Whole clips are padded to a multiple of this many frames (as evaluation does).
AUDIO_EXTENSIONS = (".wav", ".flac")  # What a folder is searched for (a file named explicitly may be any format).


# ----------------------------------------------------------------------------------------------
# Pure functions: shared by the predictor, streaming, export and the latency benchmark.


def classify_mel(graphdef: nnx.GraphDef, params, batch_stats, mel: jax.Array, lengths: jax.Array) -> jax.Array:
    """Normalised log-Mel (batch, frames, mels) and true frame counts -> (batch, classes) probabilities."""
    model = nnx.merge(graphdef, params, batch_stats)
    return jax.nn.softmax(model(mel, lengths, train=False), axis=-1)


def window_features(waveform: jax.Array, num_samples: jax.Array, *, features: FeatureConfig, mean, std
                    ) -> tuple[jax.Array, jax.Array]:
    """(batch, samples) float32 windows, valid samples per row -> (normalised log-Mel, frame counts).

    Samples past `num_samples` are zeroed, so a partly filled window gives exactly the frames that
    librosa's centred STFT gives the valid samples alone (its end padding is zeros too).
    """
    waveform = jnp.asarray(waveform, jnp.float32)
    num_samples = jnp.asarray(num_samples, jnp.int32)
    valid = jnp.arange(waveform.shape[-1])[None, :] < num_samples[:, None]
    mel = log_mel(jnp.where(valid, waveform, 0.0), features, xp=jnp)
    mel = (mel - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
    return mel, 1 + num_samples // features.hop_length


def window_probabilities(graphdef: nnx.GraphDef, params, batch_stats, waveform: jax.Array, num_samples: jax.Array,
                         *, features: FeatureConfig, mean, std) -> jax.Array:
    """(batch, window samples) waveform at the training rate -> (batch, classes) probabilities."""
    mel, lengths = window_features(waveform, num_samples, features=features, mean=mean, std=std)
    return classify_mel(graphdef, params, batch_stats, mel, lengths)


def _bucket(n: int, size: int) -> int:
    return size * -(-n // size)


def _rows(n: int, batch_size: int) -> int:
    """Rows of a batch of n clips: the next power of two (capped), so few batch shapes are compiled."""
    return min(batch_size, 1 << max(n - 1, 0).bit_length())


class Predictor:
    """A trained model ready for inference on one device.

    `predict*` return `{"label": str, "probabilities": {class name: float}}` per clip.
    """

    def __init__(self, info: ModelInfo, graphdef: nnx.GraphDef, params, batch_stats, *,
                 bucket_frames: int = BUCKET_FRAMES, batch_size: int = 16, device: jax.Device | None = None):
        self.info = info
        self.graphdef = graphdef
        self.device = device or jax.local_devices()[0]
        self.params, self.batch_stats = jax.device_put((params, batch_stats), self.device)
        self.bucket_frames, self.batch_size = bucket_frames, batch_size
        self.step: int | None = None
        self._classify = jax.jit(functools.partial(classify_mel, graphdef))
        self._windows: dict[int, callable] = {}

    @classmethod
    def from_workdir(cls, workdir: str, checkpoint: str | int = "best", **kwargs) -> "Predictor":
        """Restores `checkpoint` ("best", "latest" or a step) of a training workdir."""
        from ser_jax.trained_model import TrainedModel  # Pulls in the training code: only when loading one.

        device = kwargs.pop("device", None) or jax.local_devices()[0]
        trained = TrainedModel.load(workdir, checkpoint, sharding=jax.sharding.SingleDeviceSharding(device))
        predictor = cls(trained.info, trained.graphdef, trained.state.params, trained.state.batch_stats,
                        device=device, **kwargs)
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

    def log_mel(self, waveform: np.ndarray) -> np.ndarray:
        """A mono waveform at the training rate -> normalised (frames, mels) float32, as in training/eval."""
        waveform = np.asarray(waveform)
        if waveform.ndim != 1:
            raise ValueError(f"expected a mono (samples,) waveform, got shape {waveform.shape}")
        mel = log_mel(waveform.astype(np.float64), self.features).astype(np.float32)  # as data_prep.featurize does
        return ((mel - self.info.mean) / self.info.std).astype(np.float32)  # input_pipeline.load_eval_set

    def check_length(self, waveform: np.ndarray, name: str = "<waveform>") -> None:
        cfg = self.features
        if waveform.size < cfg.win_length:
            raise audio.AudioError(name, f"too short: {waveform.size} samples, under one {cfg.window_ms} ms window")

    def probabilities(self, mels: Sequence[np.ndarray]) -> np.ndarray:
        """Normalised log-Mels of any lengths -> (len(mels), classes) probabilities, in order.

        Clips are sorted by length and batched; each batch is padded to a multiple of
        `bucket_frames` frames (and to a power-of-two number of rows) with the true lengths.
        """
        out = np.zeros((len(mels), len(self.class_names)), np.float32)
        order = sorted(range(len(mels)), key=lambda i: mels[i].shape[0])
        n_mels = self.features.n_mels
        for start in range(0, len(order), self.batch_size):
            ids = order[start:start + self.batch_size]
            frames = _bucket(max(mels[i].shape[0] for i in ids), self.bucket_frames)
            batch = np.zeros((_rows(len(ids), self.batch_size), frames, n_mels), np.float32)
            lengths = np.ones(batch.shape[0], np.int32)
            for row, i in enumerate(ids):
                batch[row, :mels[i].shape[0]] = mels[i]
                lengths[row] = mels[i].shape[0]
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
        mels = []
        for i, w in enumerate(waveforms):
            w = audio.prepare_waveform(w, sr, self.sample_rate, f"<waveform {i}>")
            self.check_length(w, f"<waveform {i}>")
            mels.append(self.log_mel(w))
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
                    w = audio.load_audio(path, self.sample_rate)
                    self.check_length(w, path)
                    loaded[i] = self.log_mel(w)
                except audio.AudioError as e:
                    errors[i] = e
            probs = dict(zip(loaded, self.probabilities(list(loaded.values()))))
            for i, path in enumerate(paths[start:start + chunk]):
                yield path, errors[i] if i in errors else {"path": path, **self.result(probs[i])}

    # -- Fixed-length windows (streaming) --------------------------------------------------------

    def window_function(self, window_samples: int):
        """A jitted `(waveform (batch, window_samples) float32, num_samples (batch,) int32) -> probabilities`.

        The log-Mel frontend runs in JAX inside the same compiled function as the model, and the
        weights are closed over (compile-time constants, as in the exported function): on CPU that
        runs about 10% faster than passing them as arguments.
        """
        if window_samples not in self._windows:
            params, stats = jax.device_get((self.params, self.batch_stats))
            fn = jax.jit(functools.partial(window_probabilities, self.graphdef, params, stats,
                                           features=self.features, mean=self.info.mean, std=self.info.std))
            device = self.device

            def call(waveform, num_samples):
                waveform = np.asarray(waveform, np.float32)
                if waveform.shape[-1] != window_samples:
                    raise ValueError(f"expected windows of {window_samples} samples, got shape {waveform.shape}")
                return fn(jax.device_put(waveform, device), jax.device_put(np.asarray(num_samples, np.int32), device))

            self._windows[window_samples] = call
        return self._windows[window_samples]


# ----------------------------------------------------------------------------------------------
# Command line.


def expand_paths(args: Sequence[str]) -> tuple[list[str], list[audio.AudioError]]:
    """Files, folders (searched recursively for .wav/.flac) and glob patterns -> files, and what matched nothing."""
    files, problems = [], []

    def folder(d):
        found = []
        for root, dirs, names in os.walk(d):
            dirs.sort()
            found += [os.path.join(root, f) for f in sorted(names)
                      if f.lower().endswith(AUDIO_EXTENSIONS) and not f.startswith(".")]
        return found

    for arg in args:
        if os.path.isdir(arg):
            found = folder(arg)
            if not found:
                problems.append(audio.AudioError(arg, f"folder holds no {'/'.join(AUDIO_EXTENSIONS)} files"))
            files += found
        elif os.path.exists(arg):
            files.append(arg)
        elif glob.has_magic(arg):
            matched = sorted(glob.glob(arg, recursive=True))
            found = [f for m in matched for f in (folder(m) if os.path.isdir(m) else [m])]
            if not found:
                problems.append(audio.AudioError(arg, "pattern matched no files"))
            files += found
        else:
            problems.append(audio.AudioError(arg, "no such file or folder"))
    return list(dict.fromkeys(files)), problems


def output_format(args) -> str:
    if args.format:
        return args.format
    if args.output and args.output != "-":
        ext = os.path.splitext(args.output)[1].lower()
        if ext in (".jsonl", ".json", ".ndjson"):
            return "jsonl"
        if ext in (".csv", ".tsv"):
            return "csv"
        raise SystemExit(f"--output {args.output!r}: use a .jsonl or .csv name, or set --format")
    return "table"


class Writer:
    """Results as JSON lines, CSV (one probability column per class) or an aligned text table."""

    def __init__(self, stream, fmt: str, class_names: Sequence[str], key_columns: Sequence[str]):
        self.stream, self.fmt, self.class_names, self.keys = stream, fmt, list(class_names), list(key_columns)
        self.widths = [max(len(c), 6) for c in self.class_names]
        self._csv = csv.writer(stream) if fmt == "csv" else None
        self._header_done = False
        self._key_width = {k: max(len(k), 8) for k in self.keys}

    def header(self, key_widths: dict[str, int] | None = None):
        if self._header_done:
            return
        self._header_done = True
        if key_widths:
            self._key_width.update({k: max(v, self._key_width[k]) for k, v in key_widths.items()})
        if self.fmt == "csv":
            self._csv.writerow([*self.keys, "label", *self.class_names])
        elif self.fmt == "table":
            cols = [k.ljust(self._key_width[k]) for k in self.keys]
            cols += ["label".ljust(max(map(len, self.class_names)))]
            cols += [c.rjust(w) for c, w in zip(self.class_names, self.widths)]
            print("  ".join(cols), file=self.stream)

    def write(self, row: dict):
        self.header()
        probs = row["probabilities"]
        if self.fmt == "jsonl":
            self.stream.write(json.dumps(row) + "\n")
        elif self.fmt == "csv":
            self._csv.writerow([*(row[k] for k in self.keys), row["label"],
                                *(f"{probs[c]:.6f}" for c in self.class_names)])
        else:
            cols = [_fmt(row[k]).ljust(self._key_width[k]) for k in self.keys]
            cols += [row["label"].ljust(max(map(len, self.class_names)))]
            cols += [f"{probs[c]:.3f}".rjust(w) for c, w in zip(self.class_names, self.widths)]
            print("  ".join(cols), file=self.stream)
        self.stream.flush()


def _fmt(v) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def _device(name: str | None):
    return int(name) if name is not None and name.isdigit() else name


def _report(error: audio.AudioError) -> None:
    print(f"skipped {error.path}: {error.reason}", file=sys.stderr, flush=True)


def _read_stdin_clip(args, sample_rate: int) -> np.ndarray:
    from ser_jax import streaming

    chunks = list(streaming.raw_pcm_chunks(sys.stdin.buffer, args.stdin_rate, args.stdin_format,
                                           args.stdin_channels, sample_rate))
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def _predict_files(predictor: Predictor, args, out) -> int:
    paths, problems = expand_paths([p for p in args.paths if p != "-"])
    for p in problems:
        _report(p)
    writer = Writer(out, output_format(args), predictor.class_names, ["path"])
    if writer.fmt == "table":
        writer.header({"path": max((len(p) for p in paths), default=0)})
    skipped = len(problems)
    if "-" in args.paths:
        try:
            clip = audio.prepare_waveform(_read_stdin_clip(args, predictor.sample_rate), predictor.sample_rate,
                                          predictor.sample_rate, "<stdin>")
            predictor.check_length(clip, "<stdin>")
            writer.write({"path": "-", **predictor.predict(clip)})
        except audio.AudioError as e:
            _report(e)
            skipped += 1
    for path, result in predictor.predict_files(paths, chunk=args.chunk):
        if isinstance(result, audio.AudioError):
            _report(result)
            skipped += 1
        else:
            writer.write(result)
    if skipped:
        print(f"{skipped} input(s) skipped", file=sys.stderr)
    return 1 if skipped else 0


def _stream(predictor: Predictor, args, out) -> int:
    from ser_jax import streaming

    sr = predictor.sample_rate
    window, hop = int(round(args.window * sr)), int(round(args.hop * sr))
    if window < predictor.features.win_length or hop <= 0:
        raise SystemExit(f"--window must be at least {predictor.features.window_ms} ms and --hop positive")
    classify = predictor.window_function(window)
    classify(np.zeros((1, window), np.float32), np.full(1, window, np.int32))  # Compile before audio arrives.
    chunk = max(1, int(round(args.chunk_ms / 1000 * sr)))
    sources: list[tuple[str, Iterable[np.ndarray]]] = []
    skipped = 0
    if args.mic:
        sources.append(("mic", streaming.microphone_chunks(sr, chunk, device=_device(args.mic_device))))
    if "-" in args.paths:
        sources.append(("-", streaming.raw_pcm_chunks(sys.stdin.buffer, args.stdin_rate, args.stdin_format,
                                                      args.stdin_channels, sr, chunk_samples=chunk)))
    paths, problems = expand_paths([p for p in args.paths if p != "-"])
    for p in problems:
        _report(p)
    skipped += len(problems)
    sources += [(p, streaming.file_chunks(p, sr, chunk, realtime=args.realtime)) for p in paths]
    if not sources:
        raise SystemExit("--stream needs audio: file paths, '-' for raw PCM on stdin, or --mic")
    writer = Writer(out, output_format(args), predictor.class_names, ["source", "time"])
    if writer.fmt == "table":
        writer.header({"source": max(len(s) for s, _ in sources)})
    for name, chunks in sources:
        stream = streaming.StreamingClassifier(classify, predictor.class_names, sample_rate=sr,
                                               window_samples=window, hop_samples=hop, smoothing=args.smoothing,
                                               min_samples=predictor.features.win_length)
        try:
            for estimate in streaming.run(stream, chunks):
                writer.write({"source": name, **estimate.as_dict()})
        except audio.AudioError as e:
            _report(e)
            skipped += 1
        except KeyboardInterrupt:
            break
    return 1 if skipped else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ser_jax.predict", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("paths", nargs="*", help="audio files, folders (searched for .wav/.flac), glob patterns; "
                                            "'-' reads raw PCM from stdin")
    p.add_argument("--workdir", required=True, help="training workdir (model_info.json, config.json, checkpoints/)")
    p.add_argument("--checkpoint", default="best", help="'best', 'latest' or a step number")
    p.add_argument("--output", default=None, help="write results here (.jsonl or .csv); default: a table on stdout")
    p.add_argument("--format", choices=["table", "jsonl", "csv"], default=None,
                   help="output format (default: from --output's extension, else table)")
    p.add_argument("--batch_size", type=int, default=16, help="whole files per model call")
    p.add_argument("--chunk", type=int, default=64, help="files decoded per step of the whole-file mode")
    g = p.add_argument_group("streaming")
    g.add_argument("--stream", action="store_true", help="sliding-window estimates every --hop instead of one per file")
    g.add_argument("--window", type=float, default=3.0, help="window length in seconds")
    g.add_argument("--hop", type=float, default=0.5, help="seconds between estimates")
    g.add_argument("--smoothing", type=int, default=1, help="average the last N windows' probabilities")
    g.add_argument("--realtime", action="store_true", help="play files at real speed (default: as fast as possible)")
    g.add_argument("--chunk_ms", type=float, default=100.0, help="size of the audio chunks fed to the stream")
    g.add_argument("--mic", action="store_true", help="stream from the default microphone (needs sounddevice)")
    g.add_argument("--mic_device", default=None, help="sounddevice input device name or index")
    g = p.add_argument_group("raw PCM on stdin ('-')")
    g.add_argument("--stdin_rate", type=int, default=16000, help="sample rate of the stdin audio")
    g.add_argument("--stdin_format", choices=["s16le", "f32le"], default="s16le", help="sample format")
    g.add_argument("--stdin_channels", type=int, default=1, help="interleaved channels (down-mixed)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.paths and not args.mic:
        build_parser().error("give audio paths ('-' for stdin) or --mic")
    if args.mic and not args.stream:
        build_parser().error("--mic needs --stream")
    if args.mic:
        from ser_jax import streaming

        try:
            streaming.import_sounddevice()
        except RuntimeError as e:
            build_parser().error(str(e))
    from absl import logging

    logging.set_verbosity(logging.ERROR)  # Orbax logs every restore (and read-only warnings).
    predictor = Predictor.from_workdir(args.workdir, args.checkpoint, batch_size=args.batch_size)
    out = sys.stdout if args.output in (None, "-") else open(args.output, "w", newline="")
    try:
        return (_stream if args.stream else _predict_files)(predictor, args, out)
    except BrokenPipeError:  # The reader went away (`... | head`): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if out is not sys.stdout:
            out.close()


if __name__ == "__main__":
    sys.exit(main())
