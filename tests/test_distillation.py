"""Distillation targets: teachers' predictions files averaged and softened, then carried by the
training batches into the loss."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from ser_jax import distillation
from ser_jax.ensemble import FIXED_COLUMNS

TEACHER_CLASSES = ["angry", "calm", "neutral", "sad"]


def _write(path, probabilities: dict[str, list[float]], classes=TEACHER_CLASSES) -> str:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*FIXED_COLUMNS, *classes])
        for clip, p in probabilities.items():
            w.writerow([clip, "ravdess/01", "male", "ravdess", "angry", classes[int(np.argmax(p))], *p])
    return str(path)


def test_teachers_are_averaged_over_the_students_classes_then_softened(tmp_path):
    a = _write(tmp_path / "a.csv", {"x.wav": [0.5, 0.2, 0.2, 0.1], "y.wav": [0.0, 0.0, 0.0, 1.0]})
    b = _write(tmp_path / "b.csv", {"x.wav": [0.7, 0.2, 0.0, 0.1], "y.wav": [0.0, 0.2, 0.0, 0.8]})
    # The student knows three of the teachers' four classes: "neutral" is dropped, the rest renormalised.
    students = ["angry", "calm", "sad"]
    plain = distillation.teacher_targets([[a], [b]], students, temperature=1.0, clips=["x.wav", "y.wav"])
    assert sorted(plain) == ["x.wav", "y.wav"]
    np.testing.assert_allclose(plain["x.wav"], (np.array([.5, .2, .1]) / .8 + np.array([.7, .2, .1])) / 2, atol=1e-6)
    np.testing.assert_allclose(plain["y.wav"], [0.0, 0.1, 0.9], atol=1e-5)

    soft = distillation.teacher_targets([[a], [b]], students, temperature=2.0, clips=["x.wav", "y.wav"])
    expected = np.sqrt(plain["x.wav"]) / np.sqrt(plain["x.wav"]).sum()  # softmax(log p / 2)
    np.testing.assert_allclose(soft["x.wav"], expected, atol=1e-6)
    # Flatter, same order; a zero probability stays finite and small.
    assert soft["x.wav"].max() < plain["x.wav"].max() and soft["x.wav"].argmax() == plain["x.wav"].argmax()
    assert 0 < soft["y.wav"][0] < 1e-2 and soft["y.wav"].sum() == pytest.approx(1.0)


def test_teachers_missing_a_class_or_a_training_clip_are_refused_by_name(tmp_path):
    a = _write(tmp_path / "a.csv", {"x.wav": [0.5, 0.2, 0.2, 0.1], "z.wav": [0.1, 0.2, 0.2, 0.5]})
    with pytest.raises(ValueError, match=r"a\.csv.*\['happy'\]"):
        distillation.teacher_targets([[a]], ["angry", "happy"], temperature=1.0, clips=["x.wav"])
    # A teacher may score more than the training clips (z.wav is not one), not fewer.
    b = _write(tmp_path / "b.csv", {"x.wav": [0.5, 0.2, 0.2, 0.1]})
    targets = distillation.teacher_targets([[a], [b]], TEACHER_CLASSES, temperature=1.0, clips=["x.wav"])
    assert list(targets) == ["x.wav"]
    with pytest.raises(ValueError, match=r"teacher .*b\.csv has no prediction for 1 training clips.*z\.wav"):
        distillation.teacher_targets([[a], [b]], TEACHER_CLASSES, temperature=1.0, clips=["x.wav", "z.wav"])
    with pytest.raises(ValueError, match="temperature"):
        distillation.teacher_targets([[a]], TEACHER_CLASSES, temperature=0.0, clips=["x.wav"])


def test_teacher_files_stand_in_each_rounds_fold_and_expand_globs(tmp_path):
    for fold in (0, 1):
        for seed in (0, 1):
            (tmp_path / f"fold{fold}_seed{seed}.csv").write_text("")
    spec = f"{tmp_path}/fold{{test_fold}}_seed*.csv, {tmp_path}/fold0_seed0.csv"
    assert distillation.teacher_files(spec, 1) == [
        [f"{tmp_path}/fold1_seed0.csv"], [f"{tmp_path}/fold1_seed1.csv"], [f"{tmp_path}/fold0_seed0.csv"]]
    # Cross-fitted: each entry is one teacher, pieced from everything it matches.
    assert distillation.teacher_files(spec, 1, cross_fitted=True) == [
        [f"{tmp_path}/fold1_seed0.csv", f"{tmp_path}/fold1_seed1.csv"], [f"{tmp_path}/fold0_seed0.csv"]]
    with pytest.raises(FileNotFoundError, match="fold2_seed"):
        distillation.teacher_files(spec, 2)


def test_a_cross_fitted_teacher_is_pieced_from_disjoint_files_and_averaged_with_whole_ones(tmp_path):
    # Two models, each scoring the clips of the speakers it held out, make one teacher of x and y.
    piece_x = _write(tmp_path / "x.csv", {"x.wav": [0.6, 0.2, 0.2, 0.0]})
    piece_y = _write(tmp_path / "y.csv", {"y.wav": [0.0, 0.1, 0.1, 0.8]})
    whole = _write(tmp_path / "whole.csv", {"x.wav": [1.0, 0.0, 0.0, 0.0], "y.wav": [0.0, 0.0, 0.0, 1.0]})
    targets = distillation.teacher_targets([[piece_x, piece_y], [whole]], TEACHER_CLASSES, temperature=1.0,
                                           clips=["x.wav", "y.wav"])
    np.testing.assert_allclose(targets["x.wav"], [0.8, 0.1, 0.1, 0.0], atol=1e-6)
    np.testing.assert_allclose(targets["y.wav"], [0.0, 0.05, 0.05, 0.9], atol=1e-6)
    # Pieces that both score a clip are refused, naming both files.
    overlap = _write(tmp_path / "overlap.csv", {"y.wav": [0.2, 0.2, 0.2, 0.4], "z.wav": [1, 0, 0, 0]})
    with pytest.raises(ValueError, match=r"overlap\.csv and .*y\.csv both score 1 clips.*disjoint"):
        distillation.teacher_targets([[piece_x, piece_y, overlap]], TEACHER_CLASSES, temperature=1.0,
                                     clips=["x.wav", "y.wav"])


def test_teachers_read_with_a_prior_correction_are_refused(tmp_path):
    """Evaluation writes report.json beside predictions.csv: a teacher scored with its class prior
    divided out would have the student correct twice, so it must be scored with the correction off."""
    for correction in (1.0, 0.0):
        folder = tmp_path / f"prior{correction:g}"
        folder.mkdir()
        a = _write(folder / "predictions.csv", {"x.wav": [0.5, 0.2, 0.2, 0.1]})
        (folder / "report.json").write_text(json.dumps({"prior_correction": correction}))
        if correction:
            with pytest.raises(ValueError, match=r"prior1/predictions\.csv: .*--config\.eval\.prior_correction=0"):
                distillation.teacher_targets([[a]], TEACHER_CLASSES, temperature=1.0, clips=["x.wav"])
        else:
            targets = distillation.teacher_targets([[a]], TEACHER_CLASSES, temperature=1.0, clips=["x.wav"])
            np.testing.assert_allclose(targets["x.wav"], [0.5, 0.2, 0.2, 0.1], atol=1e-6)
