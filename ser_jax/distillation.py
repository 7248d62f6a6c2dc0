"""Knowledge-distillation targets: what teacher models said about each training clip, averaged and
softened, for a student to learn besides its labels (`config.distill`).

Averaging several CNN-BiLSTMs scores points above any one of them on unseen speakers, at several
times the compute at inference. A single model trained towards their mean probabilities (Hinton et
al., 2015) learns which emotions the ensemble finds alike in each clip, which a one-hot label does
not say, and keeps one model's cost. Teachers come as the predictions.csv files that evaluation
writes (`--mode=eval` on the training clips), so training loads no other model and the targets a
student learnt from stay on disk.

Teachers that trained on the student's clips label them almost perfectly, so their targets say
little beyond the label. A cross-fitted teacher is pieced from models that each scored only the
speakers it held out: its targets are what a model makes of a voice it does not know. On RAVDESS
it screened up and did not beat in-sample teachers on the test folds (docs/results/accuracy.md,
session 18), so it is a setting, not the recipe.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable, Sequence

import numpy as np

from ser_jax.ensemble import read_predictions

# predictions.csv holds probabilities to 6 decimals: a floor keeps log-space softening finite.
PROBABILITY_FLOOR = 1e-6


def teacher_files(spec: str, test_fold: int, cross_fitted: bool = False) -> list[list[str]]:
    """The predictions.csv files of each teacher of `distill.teachers`: comma-separated paths or glob
    patterns, with "{test_fold}" standing for the round's test fold, so one setting serves every round
    of a cross-validation (each round's teachers must not have trained on its test speakers).

    Each file is one teacher; with `cross_fitted`, each comma-separated entry is one teacher pieced
    together from the files it matches (out-of-fold predictions: each piece scored by a model that
    held out the speakers it scores)."""
    teachers = []
    for pattern in (p.strip() for p in spec.split(",") if p.strip()):
        pattern = pattern.replace("{test_fold}", str(test_fold))
        matches = sorted(glob.glob(pattern))
        if not matches:
            raise FileNotFoundError(f"distill.teachers: no predictions file matches {pattern!r}")
        teachers.extend([matches] if cross_fitted else [[m] for m in matches])
    return teachers


def soften(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """p ** (1 / T), renormalised per row: the softmax of the teacher's logits divided by T, recovered
    from its probabilities (log p is the logits up to a per-row constant)."""
    if temperature <= 0:
        raise ValueError(f"distill.temperature must be > 0, got {temperature}")
    logits = np.log(np.maximum(probabilities, PROBABILITY_FLOOR)) / temperature
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _check_uncorrected(path: str) -> None:
    """Refuses predictions that evaluation divided by the teacher's class prior (its report.json,
    written beside them, says so): the student learns its training mix's odds, labels and teachers
    alike, and corrects them once itself; corrected teachers would have it correct twice."""
    report = os.path.join(os.path.dirname(path), "report.json")
    if not os.path.exists(report):
        return
    with open(report) as f:
        correction = json.load(f).get("prior_correction", 0.0)
    if correction:
        raise ValueError(f"{path}: the teacher's probabilities were divided by its class prior (prior_correction "
                         f"{correction} in {report}); score the teacher again with "
                         "--config.eval.prior_correction=0, so the student learns the odds it corrects itself")


def _read_teacher(pieces: Sequence[str], class_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Clip path -> one teacher's probabilities over `class_names`, from the files it is made of."""
    rows: dict[str, np.ndarray] = {}
    scored_by: dict[str, str] = {}
    for path in pieces:
        _check_uncorrected(path)
        names, _, probabilities = read_predictions(path)
        if missing := [c for c in class_names if c not in names]:
            raise ValueError(f"{path}: the teacher has no probability for the student's classes {missing} "
                             f"(its classes: {names})")
        if twice := sorted(set(probabilities) & set(rows)):
            raise ValueError(f"{path} and {scored_by[twice[0]]} both score {len(twice)} clips (e.g. {twice[:3]}): "
                             "the pieces of a cross-fitted teacher must score disjoint clips, each the "
                             "speakers its model held out")
        columns = [names.index(c) for c in class_names]
        for clip, p in probabilities.items():
            rows[clip] = p[columns] / max(p[columns].sum(), PROBABILITY_FLOOR)
            scored_by[clip] = path
    return rows


def teacher_targets(teachers: Sequence[Sequence[str]], class_names: Sequence[str], temperature: float,
                    clips: Iterable[str]) -> dict[str, np.ndarray]:
    """Training clip path -> the teachers' mean probabilities over the student's `class_names`, softened.

    `teachers` holds each teacher's predictions files (one, or a cross-fitted teacher's pieces). A
    teacher may know more classes than the student (their probabilities are dropped and the rest
    renormalised) but not fewer, and may score more clips than `clips`, but must score every one of
    them: a clip with fewer voices would learn from another ensemble. Refused before any training
    step, naming the teacher.
    """
    if not teachers:
        raise ValueError("distill.teachers names no predictions files")
    clips = sorted(set(clips))
    summed = np.zeros((len(clips), len(class_names)), np.float64)
    for pieces in teachers:
        rows = _read_teacher(pieces, class_names)
        if missing := [c for c in clips if c not in rows]:
            raise ValueError(f"the distillation teacher {'+'.join(pieces)} has no prediction for {len(missing)} "
                             f"training clips, e.g. {missing[:3]}: evaluate each teacher on the student's training "
                             "clips (e.g. --mode=eval --config.eval.split=all/full; a teacher trained on several "
                             "corpora scores all of their clips into one file with --config.eval.split=full)")
        summed += np.stack([rows[c] for c in clips])
    return dict(zip(clips, soften(summed / len(teachers), temperature).astype(np.float32)))
