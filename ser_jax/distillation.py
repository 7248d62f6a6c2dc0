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

Online teachers (`distill.teacher_models`) are the trained models themselves, read on each augmented
training batch: the student matches them on the very view it sees (a sped-up, masked, restyled
clip), where an in-sample teacher is unsure and its answer says more than the label ("function
matching", Beyer et al., 2022), instead of on the clean clip it has memorised.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ser_jax import config_files, trained_model
from ser_jax.ensemble import read_predictions
from ser_jax.model_info import ModelInfo

# predictions.csv holds probabilities to 6 decimals: a floor keeps log-space softening finite.
PROBABILITY_FLOOR = 1e-6

T = TypeVar("T")


def teacher_files(spec: str, test_fold: int, cross_fitted: bool = False) -> list[list[str]]:
    """The predictions.csv files of each teacher of `distill.teachers`: comma-separated paths or glob
    patterns, with "{test_fold}" standing for the round's test fold, so one setting serves every round
    of a cross-validation (each round's teachers must not have trained on its test speakers).

    Each file is one teacher; with `cross_fitted`, each comma-separated entry is one teacher pieced
    together from the files it matches (out-of-fold predictions: each piece scored by a model that
    held out the speakers it scores)."""
    teachers = []
    for matches in _matches(spec, test_fold, "distill.teachers", "predictions file"):
        teachers.extend([matches] if cross_fitted else [[m] for m in matches])
    return teachers


def _matches(spec: str, test_fold: int, setting: str, what: str) -> list[list[str]]:
    """The paths each comma-separated glob pattern of `spec` matches, "{test_fold}" filled in; a
    pattern that matches nothing is refused."""
    found = []
    for pattern in (p.strip() for p in spec.split(",") if p.strip()):
        pattern = pattern.replace("{test_fold}", str(test_fold))
        if not (matches := sorted(glob.glob(pattern))):
            raise FileNotFoundError(f"{setting}: no {what} matches {pattern!r}")
        found.append(matches)
    return found


def teacher_shares(weights: str, teachers: Sequence[str]) -> list[float]:
    """Each online teacher's share of the mean (`distill.teacher_weights`, comma-separated, one per teacher;
    empty: equal), checked against `teachers` (their names, for the error)."""
    shares = [float(w) for w in weights.split(",")] if weights.strip() else [1.0] * len(teachers)
    if len(shares) != len(teachers) or min(shares) < 0 or max(shares) <= 0:
        raise ValueError(f"distill.teacher_weights={weights!r} must give each of the {len(teachers)} online "
                         f"teachers ({', '.join(teachers)}) a weight >= 0, at least one of them > 0")
    return shares


def read_teachers(teachers: Sequence[T], shares: Sequence[float]) -> tuple[list[T], tuple[float, ...]]:
    """The online teachers training reads, those of share > 0, and their ensemble weights: () where the
    shares are equal, which the ensemble reads as a plain mean."""
    kept = [(t, s) for t, s in zip(teachers, shares) if s > 0]
    weights = tuple(s for _, s in kept)
    return [t for t, _ in kept], weights if len(set(weights)) > 1 else ()


def load_online_teacher(spec: str, test_fold: int, checkpoint: str, student: ModelInfo,
                        weights: str = "") -> trained_model.TrainedModel:
    """The models of `distill.teacher_models` (training workdirs: comma-separated paths or globs, with
    "{test_fold}"), each at `checkpoint`, as one model: several are read as their ensemble, each
    weighted by its entry of `weights` (`distill.teacher_weights`: comma-separated, one per workdir;
    empty: equal). A teacher of weight 0 is not read at all: it can still be the warm start.

    They must read the student's inputs as it does (its classes in its order, its feature settings,
    its normalisation statistics, which come from the training data): a teacher trained on other data
    would answer about other inputs. Refused before any training step, naming the teacher.
    """
    workdirs = [w for matches in _matches(spec, test_fold, "distill.teacher_models", "training workdir")
                for w in matches]
    workdirs, shares = read_teachers(workdirs, teacher_shares(weights, workdirs))
    members = [trained_model.TrainedModel.load(w, checkpoint) for w in workdirs]
    for member in members:
        if differs := trained_model.input_difference(member.info, student):
            raise ValueError(f"distill.teacher_models: {member.checkpoint} differs from the student in its "
                             f"{', '.join(differs)}; an online teacher must be trained on the student's data")
    if len(members) == 1:
        return members[0]
    configs = [config_files.load_from_workdir(w).model for w in workdirs]
    return trained_model.ensemble(members, configs, shares)[0]


def warm_start(spec: str, test_fold: int, checkpoint: str, model_config: Mapping) -> trained_model.TrainedModel:
    """The first model of `distill.teacher_models`, at `checkpoint`, for a student of `model_config` to
    start from (`distill.warm_start`): it must be the student's architecture, whose weights it replaces."""
    workdir = _matches(spec, test_fold, "distill.teacher_models", "training workdir")[0][0]
    # Compared as JSON holds them (tuples as lists), as the teacher's config.json recorded its own.
    teacher_model = json.loads(json.dumps(config_files.load_from_workdir(workdir).model.to_dict()))
    model_config = json.loads(json.dumps(dict(model_config)))
    if teacher_model != model_config:
        differs = sorted(k for k in {*teacher_model, *model_config} if teacher_model.get(k) != model_config.get(k))
        raise ValueError(f"distill.warm_start: the first teacher, {workdir}, is another model than the student "
                         f"(model.{', model.'.join(differs)} differ); the student starts from its weights, so "
                         "it must be the same architecture")
    return trained_model.TrainedModel.load(workdir, checkpoint)


def shrink_and_perturb(teacher: dict, initial: dict, keep: float) -> dict:
    """`keep` of the teacher's weights plus the rest of a fresh initialisation's, leaf by leaf (Ash &
    Adams, 2020): a warm start that keeps the teacher's features but not all of its commitment to
    them, so the student can move further towards the pair it learns from."""
    if not 0 < keep <= 1:
        raise ValueError(f"distill.warm_start_keep must be in (0, 1], got {keep}")
    return jax.tree.map(lambda t, i: keep * t + (1 - keep) * i, teacher, initial)


def online_targets(graphdef: nnx.GraphDef, variables: dict, mel: jax.Array, lengths: jax.Array,
                   temperature: float) -> jax.Array:
    """The teacher's class probabilities for a batch as the student sees it, softened by `temperature`
    (the softmax of its logits / T), with no gradient: the teacher is fixed."""
    teacher = nnx.merge(graphdef, variables["params"], variables["batch_stats"])
    logits = jax.lax.stop_gradient(teacher(mel, lengths, train=False))
    return jax.nn.softmax(logits.astype(jnp.float32) / temperature, axis=-1)


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
