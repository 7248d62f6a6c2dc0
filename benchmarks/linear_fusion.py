"""Late fusion of deep runs with the linear bar: does a logistic regression on openSMILE ComParE-2016
functionals, trained on exactly the speakers a run was trained on, add to that run's probabilities?

    pip install opensmile scikit-learn   # as for benchmarks/linear_baseline.py
    python benchmarks/linear_fusion.py --source_dir ../shared/data/ravdess --cache /tmp/compare_2016.npz \
        --predictions 'W/cnn_bilstm/fold*_seed0/val_latest_uncorrected/predictions.csv' [--C 0.01,1]

Each predictions.csv (an evaluation's output: `--mode=eval`, or a `ser_jax.compare` round) is read
with its run's model_info.json (the nearest directory above it holding one): the run's training
folds, class prior and recorded prior correction. The logistic regression trains on the clips of
those folds (the folds of `data_prep --folds=K`, K from the run's split names), standardised by
their statistics, and reads the csv's clips, which must all belong to other speakers. The fused
reading is the one an ensemble of models gets (`ser_jax.pretrained --workdir A,B`): the mean of
the two members' uncorrected probabilities, divided by the training class prior to the run's
recorded power. The run's own probabilities are uncorrected first if its evaluation corrected
them (its report.json says). Scored on the clips of the csv: the run alone, the linear model alone
(corrected the same way) and the two fused, per file and on average.

Validation readings decide whether fusion is a lever; test-fold readings report it.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from benchmarks.linear_baseline import classifier, functionals, unweighted_accuracy  # noqa: E402
from data_prep.corpora import base  # noqa: E402
from data_prep.splits import speaker_folds  # noqa: E402
from ser_jax import ensemble  # noqa: E402
from ser_jax.model_info import FILE as MODEL_INFO, ModelInfo  # noqa: E402


def run_dir(predictions: str) -> str:
    """The workdir of the run that wrote `predictions`: the nearest directory above holding model_info.json."""
    d = os.path.dirname(os.path.abspath(predictions))
    while not os.path.exists(os.path.join(d, MODEL_INFO)):
        if os.path.dirname(d) == d:
            raise SystemExit(f"{predictions}: no {MODEL_INFO} in any directory above it; which run wrote it?")
        d = os.path.dirname(d)
    return d


def recorded_correction(predictions: str, info: ModelInfo) -> float:
    """The prior correction the evaluation that wrote `predictions` applied (its report.json's)."""
    report = os.path.join(os.path.dirname(predictions), "report.json")
    if not os.path.exists(report):
        raise SystemExit(f"{predictions}: no report.json beside it to say whether it was prior-corrected")
    with open(report) as f:
        correction = json.load(f).get("prior_correction")
    return info.prior_correction if correction is None else float(correction)


def run_folds(info: ModelInfo, predictions: str) -> tuple[int, list[int]]:
    """(K, the folds the run trained on) from its split names ("fold0" ... of `data_prep --folds=K`)."""
    if len(info.corpora) != 1:
        raise SystemExit(f"{predictions}: the run trained on {len(info.corpora)} corpora; fusion reads one")
    splits = info.corpora[0]["splits"]
    folds = len({n for names in splits.values() for n in names})  # A refit run has no validation fold.
    return folds, [int(n.removeprefix("fold")) for n in splits["train"]]


def fuse(predictions: str, info: ModelInfo, train_folds: list[int], fold: np.ndarray, x: np.ndarray,
         emotions: np.ndarray, basenames: list[str], cs: list[float], fitted: dict) -> dict:
    """The run, the linear model and the two fused on the csv's clips; `fold` is each utterance's;
    `fitted` keeps the linear models, one per training set and C, for the runs that share them."""
    class_names, truth, probabilities = ensemble.read_predictions(predictions)
    if list(class_names) != list(info.class_names):
        raise SystemExit(f"{predictions} scores {class_names}, its run {info.class_names}")
    index = {b: i for i, b in enumerate(basenames)}
    clips = sorted(truth)
    if missing := [c for c in clips if os.path.basename(c) not in index]:
        raise SystemExit(f"{predictions}: {len(missing)} clips are not in the source corpus, e.g. {missing[0]}")
    rows = np.array([index[os.path.basename(c)] for c in clips])
    if heard := sorted({c for c, r in zip(clips, rows) if fold[r] in train_folds})[:3]:
        raise SystemExit(f"{predictions}: clips of speakers its run trained on ({heard}); not a held-out reading")
    train = np.isin(fold, train_folds)
    y = np.array([class_names.index(truth[c]) for c in clips])
    deep = np.array([probabilities[c] for c in clips])
    applied = info.with_prior_correction(recorded_correction(predictions, info)).prior_offset()
    if applied is not None:  # Uncorrected again.
        deep = deep * np.exp(-applied)
        deep /= deep.sum(-1, keepdims=True)
    offset = info.prior_offset()
    offset = 0.0 if offset is None else offset

    def ua(p: np.ndarray) -> float:
        return 100 * unweighted_accuracy(y, np.argmax(np.log(np.maximum(p, 1e-12)) + offset, -1))

    out = {"predictions": predictions, "clips": len(clips), "train_folds": train_folds,
           "run": ua(deep), "by_C": {}}
    for c in cs:
        key = (len(np.unique(fold)), tuple(sorted(train_folds)), c)
        if key not in fitted:
            fitted[key] = classifier(c).fit(x[train], emotions[train])
        model = fitted[key]
        linear = model.predict_proba(x[rows])[:, [list(model.classes_).index(n) for n in class_names]]
        out["by_C"][str(c)] = {"linear": ua(linear), "fused": ua((deep + linear) / 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source_dir", required=True)
    parser.add_argument("--corpus", default="ravdess")
    parser.add_argument("--predictions", required=True, help="comma-separated predictions.csv files or globs")
    parser.add_argument("--C", default="0.01,1", help="inverse regularisation strengths to report")
    parser.add_argument("--cache", default="", help="an .npz to keep the functionals in between runs")
    parser.add_argument("--output", default="benchmarks/results/linear_fusion.json")
    args = parser.parse_args()

    files = sorted({p for pattern in args.predictions.split(",") for p in glob.glob(pattern)})
    if not files:
        raise SystemExit(f"no predictions.csv matches {args.predictions}")
    scan = base.get_corpus(args.corpus).scan(args.source_dir)
    utterances = sorted(scan.utterances, key=lambda u: u.path)
    basenames = [os.path.basename(u.path) for u in utterances]
    if len(set(basenames)) != len(basenames):
        raise SystemExit(f"{args.source_dir}: file names repeat across folders; clips are matched by file name")
    x = functionals([u.path for u in utterances], args.cache)
    emotions = np.array([u.emotion for u in utterances])
    genders = {u.speaker: u.gender for u in utterances}
    fold_of: dict[int, np.ndarray] = {}  # K -> each utterance's fold, as data_prep --folds=K deals them.
    cs = [float(c) for c in args.C.split(",")]
    results, fitted = [], {}
    for path in files:
        info = ModelInfo.load(run_dir(path))
        folds, train_folds = run_folds(info, path)
        if folds not in fold_of:
            of = speaker_folds(genders, folds)
            fold_of[folds] = np.array([int(of[u.speaker].removeprefix("fold")) for u in utterances])
        r = fuse(path, info, train_folds, fold_of[folds], x, emotions, basenames, cs, fitted)
        results.append(r)
        print(f"{path}: run {r['run']:.1f}  " + "  ".join(
            f"C={c}: linear {v['linear']:.1f} fused {v['fused']:.1f}" for c, v in r["by_C"].items()))
    summary = {"run": float(np.mean([r["run"] for r in results])),
               "by_C": {str(c): {k: float(np.mean([r["by_C"][str(c)][k] for r in results])) for k in ("linear", "fused")}
                        for c in cs}}
    print(f"mean over {len(results)}: run {summary['run']:.1f}  " + "  ".join(
        f"C={c}: linear {v['linear']:.1f} fused {v['fused']:.1f}" for c, v in summary["by_C"].items()))
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"corpus": args.corpus, "results": results, "mean": summary}, f, indent=1)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
