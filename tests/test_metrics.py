"""Every figure of ser_jax.metrics checked against scikit-learn on random and edge-case label sets."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from ser_jax.metrics import classification_metrics, grouped_metrics

NAMES = ["neutral", "happy", "sad", "angry", "fear"]


def _random_labels(seed: int, n: int = 200, num_classes: int = len(NAMES)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, num_classes, n)
    # Mostly right, sometimes a random guess, so the metrics are neither trivial nor chance.
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, num_classes, n))
    return y_true, y_pred


def _never_occurs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = _random_labels(seed)
    y_true[y_true == 4] = 0
    y_pred[y_pred == 4] = 1
    return y_true, y_pred


def _predicted_never_true(seed: int) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = _random_labels(seed)
    y_true[y_true == 3] = 2
    assert (y_pred == 3).any()
    return y_true, y_pred


def _true_never_predicted(seed: int) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = _random_labels(seed)
    y_pred[y_pred == 1] = 0
    return y_true, y_pred


CASES = {
    **{f"random{s}": (lambda s=s: _random_labels(s)) for s in range(4)},
    "small": lambda: _random_labels(7, n=9),
    "never_occurs": lambda: _never_occurs(11),
    "predicted_never_true": lambda: _predicted_never_true(12),
    "true_never_predicted": lambda: _true_never_predicted(13),
}


def _sklearn(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # balanced_accuracy warns when a class is predicted but never true.
        ua = skm.balanced_accuracy_score(y_true, y_pred)
    out = {"accuracy": skm.accuracy_score(y_true, y_pred), "ua": ua}
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=0)
        out.update({f"precision_{average}": p, f"recall_{average}": r, f"f1_{average}": f})
    return out


@pytest.mark.parametrize("case", CASES)
def test_matches_sklearn(case):
    y_true, y_pred = CASES[case]()
    m = classification_metrics(y_true, y_pred, NAMES)
    assert m["num_examples"] == len(y_true)
    assert m["class_names"] == NAMES
    for key, expected in _sklearn(y_true, y_pred).items():
        assert m[key] == pytest.approx(expected, abs=1e-12), key

    labels = list(range(len(NAMES)))
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, average=None, zero_division=0)
    for i, name in enumerate(NAMES):
        got = m["per_class"][name]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((p[i], r[i], f[i]), abs=1e-12), name
        assert got["support"] == s[i]
    np.testing.assert_array_equal(m["confusion"], skm.confusion_matrix(y_true, y_pred, labels=labels))
    np.testing.assert_allclose(m["confusion_normalized"],
                               np.nan_to_num(skm.confusion_matrix(y_true, y_pred, labels=labels, normalize="true")))


def test_absent_class_is_zero_and_left_out_of_macro():
    y_true, y_pred = _never_occurs(11)
    m = classification_metrics(y_true, y_pred, NAMES)
    assert m["per_class"]["fear"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    present = NAMES[:4]
    assert m["f1_macro"] == pytest.approx(np.mean([m["per_class"][n]["f1"] for n in present]))
    assert m["ua"] == pytest.approx(np.mean([m["per_class"][n]["recall"] for n in present]))


def test_predicted_never_true_counts_in_macro_not_ua():
    y_true, y_pred = _predicted_never_true(12)
    m = classification_metrics(y_true, y_pred, NAMES)
    angry = m["per_class"]["angry"]
    assert angry == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["precision_macro"] == pytest.approx(np.mean([m["per_class"][n]["precision"] for n in NAMES]))
    with_support = [n for n in NAMES if n != "angry"]
    assert m["ua"] == pytest.approx(np.mean([m["per_class"][n]["recall"] for n in with_support]))


@pytest.mark.parametrize("case", ["random0", "never_occurs", "predicted_never_true"])
def test_normalized_rows_sum_to_one_or_zero(case):
    y_true, _ = CASES[case]()
    m = classification_metrics(*CASES[case](), NAMES)
    sums = np.asarray(m["confusion_normalized"]).sum(1)
    support = np.bincount(y_true, minlength=len(NAMES))
    np.testing.assert_allclose(sums, np.where(support > 0, 1.0, 0.0))
    assert (support == 0).any() == (case != "random0")


def test_empty_input():
    m = classification_metrics(np.zeros(0, int), np.zeros(0, int), NAMES)
    assert m["num_examples"] == 0
    assert m["accuracy"] == m["ua"] == m["f1_macro"] == m["f1_weighted"] == 0.0
    assert np.asarray(m["confusion"]).shape == (len(NAMES), len(NAMES))


def test_grouped_matches_sklearn_per_group():
    y_true, y_pred = _random_labels(21, n=300)
    groups = np.random.default_rng(22).choice(["f01", "m02", "f03"], size=len(y_true))
    out = grouped_metrics(y_true, y_pred, groups.tolist(), NAMES)
    assert list(out) == ["f01", "f03", "m02"]
    for g, m in out.items():
        sel = groups == g
        expected = _sklearn(y_true[sel], y_pred[sel])
        assert m["num_examples"] == sel.sum()
        for key in ("accuracy", "ua", "f1_macro"):
            assert m[key] == pytest.approx(expected[key], abs=1e-12), (g, key)
        assert set(m) == {"num_examples", "accuracy", "ua", "f1_macro"}


def test_grouped_with_absent_class_in_one_group():
    y_true = np.array([0, 1, 2, 0, 1, 3, 3, 4])
    y_pred = np.array([0, 2, 2, 0, 1, 3, 4, 4])
    groups = ["a", "a", "a", "b", "b", "b", "b", "b"]
    out = grouped_metrics(y_true, y_pred, groups, NAMES)
    a = _sklearn(y_true[:3], y_pred[:3])
    assert out["a"]["ua"] == pytest.approx(a["ua"])
    assert out["a"]["f1_macro"] == pytest.approx(a["f1_macro"])
    assert out["b"]["accuracy"] == pytest.approx(0.8)


@pytest.mark.parametrize("y_true, y_pred, match", [
    ([0, 1, 2], [0, 1], "shape"),
    ([0, 1, 5], [0, 1, 2], "y_true"),
    ([0, 1, 2], [0, -1, 2], "y_pred"),
])
def test_errors(y_true, y_pred, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(np.array(y_true), np.array(y_pred), NAMES)


def test_grouped_error_propagates():
    with pytest.raises(ValueError):
        grouped_metrics(np.array([0, 9]), np.array([0, 1]), ["a", "a"], NAMES)
