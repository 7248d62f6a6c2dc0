"""`python -m ser_jax.predict`: emotion predictions for files, folders, stdin or a live stream.

    python -m ser_jax.predict --workdir DIR [--checkpoint best] PATHS... [--output out.jsonl|out.csv]
    python -m ser_jax.predict --model NAME PATHS...   # a model packaged with ser_jax
    python -m ser_jax.predict --workdir DIR --stream [--window 3.0 --hop 0.5 --smoothing N] [--realtime] FILE
    arecord -f S16_LE -r 16000 -c 1 | python -m ser_jax.predict --workdir DIR --stream -
    python -m ser_jax.predict --workdir DIR --stream --mic

The command line around `ser_jax.predictor.Predictor` (the Python API) and `ser_jax.streaming`.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import sys
from collections.abc import Iterable, Sequence

import numpy as np

from ser_jax import audio, streaming
from ser_jax.predictor import Predictor, add_reading_arguments, reading
from ser_jax.tables import format_row


def expand_paths(args: Sequence[str]) -> tuple[list[str], list[audio.AudioError]]:
    """Files, folders (searched recursively for .wav/.flac) and glob patterns -> files, and what matched nothing."""
    files, problems = [], []
    for arg in args:
        if os.path.isdir(arg):
            found = audio.find_audio_files(arg)
            if not found:
                problems.append(audio.AudioError(arg, f"folder holds no {'/'.join(audio.AUDIO_EXTENSIONS)} files"))
            files += found
        elif os.path.exists(arg):
            files.append(arg)
        elif glob.has_magic(arg):
            matched = sorted(glob.glob(arg, recursive=True))
            found = [f for m in matched for f in (audio.find_audio_files(m) if os.path.isdir(m) else [m])]
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
        self._csv = csv.writer(stream) if fmt == "csv" else None
        self._header_done = False
        self._widths = ([max(len(k), 8) for k in self.keys] + [max(map(len, self.class_names))]
                        + [max(len(c), 6) for c in self.class_names])

    def header(self, key_widths: dict[str, int] | None = None):
        """Writes the header once; `key_widths` widens the table's key columns to their longest values."""
        if self._header_done:
            return
        self._header_done = True
        for k, w in (key_widths or {}).items():
            i = self.keys.index(k)
            self._widths[i] = max(w, self._widths[i])
        if self.fmt == "csv":
            self._csv.writerow([*self.keys, "label", *self.class_names])
        elif self.fmt == "table":
            self._table_row([*self.keys, "label", *self.class_names])

    def write(self, row: dict):
        self.header()
        probs = row["probabilities"]
        if self.fmt == "jsonl":
            self.stream.write(json.dumps(row) + "\n")
        elif self.fmt == "csv":
            self._csv.writerow([*(row[k] for k in self.keys), row["label"],
                                *(f"{probs[c]:.6f}" for c in self.class_names)])
        else:
            self._table_row([*(_fmt(row[k]) for k in self.keys), row["label"],
                             *(f"{probs[c]:.3f}" for c in self.class_names)])
        self.stream.flush()

    def _table_row(self, cells: Sequence[str]):
        print(format_row(cells, self._widths, left=len(self.keys) + 1), file=self.stream)


def _fmt(v) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def _device(name: str | None):
    return int(name) if name is not None and name.isdigit() else name


def _report(error: audio.AudioError) -> None:
    print(f"skipped {error.path}: {error.reason}", file=sys.stderr, flush=True)


def _read_stdin_clip(args, sample_rate: int) -> np.ndarray:
    chunks = list(streaming.raw_pcm_chunks(sys.stdin.buffer, args.stdin_rate, args.stdin_format,
                                           args.stdin_channels, sample_rate))
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def _input_files(args) -> tuple[list[str], int]:
    """The files the path arguments name, and how many arguments named none (reported)."""
    paths, problems = expand_paths([p for p in args.paths if p != "-"])
    for p in problems:
        _report(p)
    return paths, len(problems)


def _predict_files(predictor: Predictor, args, out) -> int:
    paths, skipped = _input_files(args)
    writer = Writer(out, output_format(args), predictor.class_names, ["path"])
    if writer.fmt == "table":
        writer.header({"path": max((len(p) for p in paths), default=0)})
    if "-" in args.paths:
        try:
            clip = predictor.prepare(_read_stdin_clip(args, predictor.sample_rate), predictor.sample_rate, "<stdin>")
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
    sr = predictor.sample_rate
    window, hop = int(round(args.window * sr)), int(round(args.hop * sr))
    if window < predictor.features.win_length or hop <= 0:
        raise SystemExit(f"--window must be at least {predictor.features.window_ms} ms and --hop positive")
    classify = predictor.window_function(window)
    classify(np.zeros((1, window), np.float32), np.full(1, window, np.int32))  # Compile before audio arrives.
    chunk = max(1, int(round(args.chunk_ms / 1000 * sr)))
    sources: list[tuple[str, Iterable[np.ndarray]]] = []
    if args.mic:
        sources.append(("mic", streaming.microphone_chunks(sr, chunk, device=_device(args.mic_device))))
    if "-" in args.paths:
        sources.append(("-", streaming.raw_pcm_chunks(sys.stdin.buffer, args.stdin_rate, args.stdin_format,
                                                      args.stdin_channels, sr, chunk_samples=chunk)))
    paths, skipped = _input_files(args)
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
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--workdir", help="training workdir (model_info.json, config.json, checkpoints/)")
    source.add_argument("--model", help="a model packaged with ser_jax (`python -m ser_jax.pretrained` lists them)")
    p.add_argument("--checkpoint", default="best", help="'best', 'latest' or a step number")
    p.add_argument("--output", default=None, help="write results here (.jsonl or .csv); default: a table on stdout")
    p.add_argument("--format", choices=["table", "jsonl", "csv"], default=None,
                   help="output format (default: from --output's extension, else table)")
    p.add_argument("--batch_size", type=int, default=16, help="whole files per model call")
    add_reading_arguments(p)
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
        try:
            streaming.import_sounddevice()
        except RuntimeError as e:
            build_parser().error(str(e))
    from absl import logging

    logging.set_verbosity(logging.ERROR)  # Orbax logs every restore (and read-only warnings).
    if args.model:
        predictor = Predictor.from_pretrained(args.model, batch_size=args.batch_size, **reading(args))
    else:
        predictor = Predictor.from_workdir(args.workdir, args.checkpoint, batch_size=args.batch_size,
                                           **reading(args))
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
