"""`python -m data_prep --corpus=NAME --source_dir=PATH --data_dir=OUT [--split=speaker|all] [--folds=K]`.

Exit status: 0 when every file was used, 1 when the dataset was written but some files were skipped
(listed above the counts and in the report file), 2 when nothing could be written.
"""

from __future__ import annotations

import sys

from absl import app, flags

from data_prep import builder
from data_prep.corpora import base
from ser_jax.features import FeatureConfig

flags.DEFINE_enum("corpus", None, base.CORPUS_NAMES, "Which corpus reader to use.", required=True)
flags.DEFINE_string("source_dir", None, "The corpus folder as downloaded (synthetic: generated here if empty).")
flags.DEFINE_string("data_dir", None, "Where TFDS datasets are written.", required=True)
flags.DEFINE_enum("split", "speaker", ["speaker", "all"], "speaker: speaker-disjoint train/validation/test; all: every utterance in one split, read as split 'all'.")
flags.DEFINE_integer("folds", None, "Make K speaker-disjoint folds fold0..fold{K-1} for cross-validation instead.")
flags.DEFINE_integer("seed", 0, "Seed of the speaker assignment (splits are deterministic given it).")
flags.DEFINE_float("validation_fraction", 0.1, "Share of speakers in validation (--split=speaker).")
flags.DEFINE_float("test_fraction", 0.1, "Share of speakers in test (--split=speaker).")
flags.DEFINE_integer("workers", None, "Feature-extraction processes (default: all cores).")
flags.DEFINE_boolean("include_song", False, "RAVDESS: also take the song recordings (vocal channel 02).")
flags.DEFINE_integer("synthetic_speakers", 10, "synthetic: number of speakers generated.")
flags.DEFINE_integer("synthetic_utterances", 4, "synthetic: utterances per speaker and emotion.")
flags.DEFINE_integer("sample_rate", 16000, "Feature sample rate; audio is resampled to it.")
flags.DEFINE_integer("n_mels", 80, "Mel bins.")
flags.DEFINE_float("window_ms", 25.0, "Analysis window.")
flags.DEFINE_float("hop_ms", 10.0, "Hop between frames.")
flags.DEFINE_float("fmin", 0.0, "Lowest mel frequency.")
flags.DEFINE_float("fmax", None, "Highest mel frequency (default: Nyquist).")
flags.DEFINE_float("trim_db", None, "Cut leading/trailing audio this many dB below the loudest frame (default: keep all).")


def format_counts(counts: dict[str, dict[str, int]]) -> str:
    """The closing table: utterances per split (rows) and emotion (columns)."""
    emotions = [e for e in base.EMOTIONS if any(e in c for c in counts.values())]
    width = max(9, *(len(e) + 1 for e in emotions))
    header = "split".ljust(12) + "".join(e.rjust(width) for e in emotions) + "total".rjust(8)
    rows = [header]
    for split, c in counts.items():
        rows.append(split.ljust(12) + "".join(str(c.get(e, 0)).rjust(width) for e in emotions)
                    + str(sum(c.values())).rjust(8))
    totals = {e: sum(c.get(e, 0) for c in counts.values()) for e in emotions}
    rows.append("total".ljust(12) + "".join(str(totals[e]).rjust(width) for e in emotions)
                + str(sum(totals.values())).rjust(8))
    return "\n".join(rows)


def main(argv):
    del argv
    f = flags.FLAGS
    options = {"include_song": f.include_song} if f.corpus == "ravdess" else {}
    if f.corpus == "synthetic":
        options = {"n_speakers": f.synthetic_speakers, "utterances_per_emotion": f.synthetic_utterances,
                   "seed": f.seed}
    settings = builder.Settings(
        corpus=f.corpus, split=f.split, folds=f.folds, seed=f.seed,
        validation_fraction=f.validation_fraction, test_fraction=f.test_fraction,
        features=FeatureConfig(sample_rate=f.sample_rate, n_mels=f.n_mels, window_ms=f.window_ms,
                               hop_ms=f.hop_ms, fmin=f.fmin, fmax=f.fmax),
        trim_db=f.trim_db, reader_options=options)
    try:
        result = builder.prepare(settings, f.data_dir, f.source_dir, workers=f.workers)
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
