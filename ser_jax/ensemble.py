"""Scores runs from the predictions.csv each run's evaluation wrote: an ensemble (the mean of their
class probabilities per clip, then the usual metrics) or a cross-validation pooled (every test fold's
clips in one confusion matrix). Works from the files, so it costs no model loading and no compute."""

from __future__ import annotations

import csv
from collections.abc import Sequence

import numpy as np

from ser_jax.metrics import classification_metrics, confusion_matrix, metrics_from_confusion

# predictions.csv (written by evaluate): these columns, then one probability column per class.
FIXED_COLUMNS = ("path", "speaker", "gender", "corpus", "true", "predicted")


def read_predictions(path: str) -> tuple[list[str], dict[str, str], dict[str, np.ndarray]]:
    """(class names, clip -> true label, clip -> probabilities) of one predictions.csv."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(header[:len(FIXED_COLUMNS)]) != FIXED_COLUMNS:
            raise ValueError(f"{path}: not a predictions.csv (expected columns {', '.join(FIXED_COLUMNS)}, "
                             f"then one per class; found {header})")
        names = header[len(FIXED_COLUMNS):]
        truth, probabilities = {}, {}
        for line, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise ValueError(f"{path}, line {line}: {len(row)} fields, the header has {len(header)}")
            clip = row[0]
            truth[clip] = row[4]
            probabilities[clip] = np.array(row[len(FIXED_COLUMNS):], np.float64)
    return names, truth, probabilities


def ensemble_metrics(prediction_csvs: Sequence[str]) -> dict:
    """`classification_metrics` of the runs' mean probabilities; every run must have scored the same
    clips with the same label set (runs of one config on one fold, with different seeds)."""
    if not prediction_csvs:
        raise ValueError("an ensemble needs at least one predictions.csv")
    names, truth, summed = read_predictions(prediction_csvs[0])
    for path in prediction_csvs[1:]:
        other_names, other_truth, probabilities = read_predictions(path)
        if other_names != names:
            raise ValueError(f"{path} scores classes {other_names}, {prediction_csvs[0]} scores {names}")
        if other_truth != truth:
            missing = sorted(set(truth) ^ set(other_truth))[:3]
            raise ValueError(f"{path} and {prediction_csvs[0]} did not score the same clips "
                             f"(e.g. {missing or 'the same clips with other labels'})")
        summed = {clip: summed[clip] + p for clip, p in probabilities.items()}
    return classification_metrics(*_labels_and_predictions(prediction_csvs[0], names, truth, summed), names)


def _labels_and_predictions(path: str, names: list[str], truth: dict[str, str],
                            probabilities: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if unknown := sorted(set(truth.values()) - set(names)):
        raise ValueError(f"{path}: true labels {unknown} are not among its classes {names}")
    clips = sorted(truth)
    return (np.array([names.index(truth[c]) for c in clips], np.int64),
            np.array([int(np.argmax(probabilities[c])) for c in clips], np.int64))


def pooled_metrics(prediction_csvs: Sequence[str]) -> dict:
    """Metrics of several runs' predictions taken together, each run's clips counted once per run: a
    cross-validation's test folds in one confusion matrix. Every run must share one label set."""
    if not prediction_csvs:
        raise ValueError("pooling needs at least one predictions.csv")
    counts, first = None, None
    for path in prediction_csvs:
        names, truth, probabilities = read_predictions(path)
        if first is None:
            first = names
        elif names != first:
            raise ValueError(f"{path} scores classes {names}, {prediction_csvs[0]} scores {first}")
        c = confusion_matrix(*_labels_and_predictions(path, names, truth, probabilities), len(names))
        counts = c if counts is None else counts + c
    return metrics_from_confusion(counts, first)
