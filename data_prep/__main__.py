"""`python -m data_prep --corpus=NAME --source_dir=PATH --data_dir=OUT [--split=speaker|all] [--folds=K]`.

Exit status: 0 when every file was used, 1 when the dataset was written but some files were skipped
(listed above the counts and in the report file), 2 when nothing could be written.
"""

from __future__ import annotations

import sys

from absl import app, flags

from data_prep import builder
from data_prep.corpora import base
from ser_jax.dataset_format import EMOTIONS
from ser_jax.features import FeatureConfig
from ser_jax.tables import format_table

_DEFAULT_FEATURES = FeatureConfig()

flags.DEFINE_enum("corpus", None, base.CORPUS_NAMES, "Which corpus reader to use.", required=True)
flags.DEFINE_string("source_dir", None, "The corpus folder as downloaded (synthetic: generated here if empty).")
flags.DEFINE_string("data_dir", None, "Where TFDS datasets are written.", required=True)
flags.DEFINE_enum("split", "speaker", ["speaker", "all"], "speaker: speaker-disjoint train/validation/test; all: every utterance in one split, read as split 'all'.")
flags.DEFINE_integer("folds", None, "Make K >= 3 speaker-disjoint folds fold0..fold{K-1} for cross-validation instead.")
flags.DEFINE_integer("seed", 0, "Seed of the speaker assignment (splits are deterministic given it).")
flags.DEFINE_float("validation_fraction", 0.1, "Share of speakers in validation (--split=speaker).")
flags.DEFINE_float("test_fraction", 0.1, "Share of speakers in test (--split=speaker).")
flags.DEFINE_integer("workers", None, "Feature-extraction processes (default: all cores).")
flags.DEFINE_boolean("include_song", False, "RAVDESS: also take the song recordings (vocal channel 02).")
# Unset synthetic sizes take the generator's defaults, as a training config without them does.
flags.DEFINE_integer("synthetic_speakers", None, "synthetic: number of speakers generated.")
flags.DEFINE_integer("synthetic_utterances", None, "synthetic: utterances per speaker and emotion.")
flags.DEFINE_integer("synthetic_seed", None, "synthetic: seed of the generated audio.")
flags.DEFINE_integer("sample_rate", _DEFAULT_FEATURES.sample_rate, "Feature sample rate; audio is resampled to it.")
flags.DEFINE_integer("n_mels", _DEFAULT_FEATURES.n_mels, "Mel bins.")
flags.DEFINE_float("window_ms", _DEFAULT_FEATURES.window_ms, "Analysis window.")
flags.DEFINE_float("hop_ms", _DEFAULT_FEATURES.hop_ms, "Hop between frames.")
flags.DEFINE_integer("n_fft", None, "FFT size (default: the next power of two >= the window).")
flags.DEFINE_float("fmin", _DEFAULT_FEATURES.fmin, "Lowest mel frequency.")
flags.DEFINE_float("fmax", None, "Highest mel frequency (default: Nyquist).")
flags.DEFINE_boolean("pitch", _DEFAULT_FEATURES.pitch, "Add each frame's periodicity and log F0 after the "
                     "mel bins (prosody that 40 mel bins cannot resolve); --nopitch: log-Mel only.")
flags.DEFINE_float("trim_db", _DEFAULT_FEATURES.trim_db, "Cut leading/trailing audio this many dB below each "
                   "clip's loudest frame (0: keep it all).")


def format_counts(counts: dict[str, dict[str, int]]) -> str:
    """The closing table: utterances per split (rows) and emotion (columns)."""
    emotions = [e for e in EMOTIONS if any(e in c for c in counts.values())]
    totals = {e: sum(c.get(e, 0) for c in counts.values()) for e in emotions}
    rows = [[split, *(c.get(e, 0) for e in emotions), sum(c.values())] for split, c in counts.items()]
    rows.append(["total", *totals.values(), sum(totals.values())])
    return "\n".join(format_table(["split", *emotions, "total"], rows, rule=False))


def settings_from_flags(f: flags.FlagValues) -> builder.Settings:
    """The dataset settings the flags ask for (raises ValueError for impossible ones)."""
    options = {"include_song": f.include_song} if f.corpus == "ravdess" else {}
    if f.corpus == "synthetic":
        given = {"n_speakers": f.synthetic_speakers, "utterances_per_emotion": f.synthetic_utterances,
                 "seed": f.synthetic_seed}
        options = {k: v for k, v in given.items() if v is not None}
    return builder.Settings(
        corpus=f.corpus, split=f.split, folds=f.folds, seed=f.seed,
        validation_fraction=f.validation_fraction, test_fraction=f.test_fraction,
        features=FeatureConfig(sample_rate=f.sample_rate, n_mels=f.n_mels, window_ms=f.window_ms,
                               hop_ms=f.hop_ms, n_fft=f.n_fft, fmin=f.fmin, fmax=f.fmax, trim_db=f.trim_db,
                               pitch=f.pitch),
        reader_options=options)


def main(argv):
    del argv
    try:
        settings = settings_from_flags(flags.FLAGS)
        result = builder.prepare(settings, flags.FLAGS.data_dir, flags.FLAGS.source_dir, workers=flags.FLAGS.workers)
    except (ValueError, FileNotFoundError) as e:
        print(f"data_prep: error: {e}", file=sys.stderr)
        return 2
    for p in result.problems:
        print(f"skipped {p.path}: {p.reason}", file=sys.stderr)
    print(("Reused existing dataset " if result.reused else "Wrote dataset ") + result.dataset_dir)
    if result.problems:
        print(f"{len(result.problems)} file(s) skipped; see {result.dataset_dir}/{builder.REPORT_FILE}")
    print(format_counts(result.counts))
    return 1 if result.problems else 0


if __name__ == "__main__":
    app.run(main)
