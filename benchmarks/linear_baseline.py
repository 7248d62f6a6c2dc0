"""The linear bar of issue 11, reproduced: openSMILE ComParE-2016 functionals + logistic regression in
speaker-fold cross-validation, with the same folds as `data_prep --folds=K`, under both protocols
of `ser_jax.compare`, for any number of folds: a learning curve over training speakers.

    pip install opensmile scikit-learn   # not dependencies of ser_jax: this script alone needs them
    python benchmarks/linear_baseline.py --source_dir ../shared/data/ravdess --folds 3,6,9,18 \
        [--cache /tmp/compare_2016.npz] [--C 0.001,0.01,0.1,1] [--output benchmarks/results/linear_baseline.json]

Round i of K folds tests on fold i. Protocol "refit": the logistic regression trains on the other
K-1 folds (the bar's protocol, and the deep recipe's `data.refit=True`). Protocol "validation":
it trains on the K-2 folds left once fold i+1 is set aside to validate on, as the deep recipe does
without refit. C is chosen on the validation folds only (mean validation UA over the rounds) and
used for both protocols, so no test fold picks anything. Features are standardised with the
training folds' statistics. The 6,373 functionals of each clip are computed once (a few minutes on
2 cores) and cached.

Why a learning curve: the field's figures on RAVDESS come from 24 actors (19-23 of them training);
our data has 18, so 12-17. How much a model gains per training speaker says how much of the gap
to those figures is the protocol and how much the model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from data_prep.corpora import base  # noqa: E402
from data_prep.splits import speaker_folds  # noqa: E402


def functionals(paths: list[str], cache: str) -> np.ndarray:
    """ComParE-2016 functionals of each file (rows in `paths` order), cached by path list."""
    if cache and os.path.exists(cache):
        stored = np.load(cache, allow_pickle=False)
        if list(stored["paths"]) == paths:
            return stored["features"]
    import opensmile

    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.ComParE_2016,
                            feature_level=opensmile.FeatureLevel.Functionals, num_workers=os.cpu_count())
    start = time.perf_counter()
    features = smile.process_files(paths).to_numpy(np.float32)
    print(f"ComParE-2016 functionals of {len(paths)} files: {features.shape[1]} each, "
          f"{time.perf_counter() - start:.0f} s")
    if cache:
        np.savez(cache, paths=np.array(paths), features=features)
    return features


def unweighted_accuracy(y: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean([np.mean(predicted[y == c] == c) for c in np.unique(y)]))


def classifier(c: float) -> Pipeline:
    """The bar's model: functionals standardised by the training clips' statistics, then a
    multinomial logistic regression of inverse regularisation strength `c` (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))


def fit_predict(x_train, y_train, x_test, c: float) -> np.ndarray:
    return classifier(c).fit(x_train, y_train).predict(x_test)


def cross_validate(x, y, speakers, genders, folds: int, cs: list[float]) -> dict:
    fold_of = speaker_folds(genders, folds)
    fold = np.array([int(fold_of[s].removeprefix("fold")) for s in speakers])
    val_ua = {c: [] for c in cs}
    for i in range(folds):
        val, train = fold == (i + 1) % folds, (fold != i) & (fold != (i + 1) % folds)
        for c in cs:
            val_ua[c].append(unweighted_accuracy(y[val], fit_predict(x[train], y[train], x[val], c)))
    best_c = max(cs, key=lambda c: np.mean(val_ua[c]))
    out = {"folds": folds, "validation_ua_by_C": {str(c): float(np.mean(v)) for c, v in val_ua.items()},
           "C": best_c}
    for protocol in ("validation", "refit"):
        rounds, per_speaker = [], {}
        for i in range(folds):
            test = fold == i
            train = (fold != i) if protocol == "refit" else (fold != i) & (fold != (i + 1) % folds)
            predicted = fit_predict(x[train], y[train], x[test], best_c)
            rounds.append(unweighted_accuracy(y[test], predicted))
            for s in np.unique(speakers[test]):
                mine = speakers[test] == s
                per_speaker[str(s)] = unweighted_accuracy(y[test][mine], predicted[mine])
        training_speakers = len(set(speakers)) * (folds - (1 if protocol == "refit" else 2)) / folds
        out[protocol] = {"training_speakers": training_speakers, "ua_per_fold": rounds,
                         "ua_mean": float(np.mean(rounds)), "ua_std": float(np.std(rounds, ddof=1)),
                         "ua_per_speaker": per_speaker}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source_dir", required=True)
    parser.add_argument("--corpus", default="ravdess")
    parser.add_argument("--folds", default="6", help="comma-separated fold counts, e.g. 3,6,9,18")
    parser.add_argument("--C", default="0.0001,0.001,0.01,0.1,1", help="inverse regularisation strengths to choose from")
    parser.add_argument("--cache", default="", help="an .npz to keep the functionals in between runs")
    parser.add_argument("--output", default="benchmarks/results/linear_baseline.json")
    args = parser.parse_args()

    scan = base.get_corpus(args.corpus).scan(args.source_dir)
    for problem in scan.problems:
        print(f"skipped {problem.path}: {problem.reason}", file=sys.stderr)
    utterances = sorted(scan.utterances, key=lambda u: u.path)
    if not utterances:
        raise SystemExit(f"no {args.corpus} files under {args.source_dir}")
    x = functionals([u.path for u in utterances], args.cache)
    labels = sorted({u.emotion for u in utterances})
    y = np.array([labels.index(u.emotion) for u in utterances])
    speakers = np.array([u.speaker for u in utterances])
    genders = {u.speaker: u.gender for u in utterances}
    cs = [float(c) for c in args.C.split(",")]
    results = []
    for k in (int(f) for f in args.folds.split(",")):
        start = time.perf_counter()
        r = cross_validate(x, y, speakers, genders, k, cs)
        r["seconds"] = round(time.perf_counter() - start, 1)
        results.append(r)
        for protocol in ("validation", "refit"):
            p = r[protocol]
            print(f"{k} folds, {protocol:10s} ({p['training_speakers']:4.1f} training speakers, C={r['C']}): "
                  f"UA {100 * p['ua_mean']:.1f} ± {100 * p['ua_std']:.1f}  "
                  f"per fold {' '.join(f'{100 * u:.1f}' for u in p['ua_per_fold'])}")
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"corpus": args.corpus, "clips": len(utterances), "features": int(x.shape[1]),
                   "results": results}, f, indent=1)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
