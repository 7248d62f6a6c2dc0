"""Classification metrics from label arrays: accuracy, UA, precision/recall/F1 and the confusion matrix.

Everything derives from one confusion matrix, so the figures always agree with each other. Classes
with no examples and no predictions have undefined precision/recall; they count as 0 in the macro
averages only when they have support or predictions (scikit-learn's `zero_division=0` convention, and
the classes a model was trained on but a test set lacks do not drag UA down).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[i, j] = examples of true class i predicted as class j."""
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but y_pred has {y_pred.shape}")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} has labels outside [0, {num_classes})")
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(num.shape, np.float64), where=den > 0)


def metrics_from_confusion(counts: np.ndarray, class_names: Sequence[str]) -> dict:
    counts = np.asarray(counts, np.int64)
    tp = np.diag(counts).astype(np.float64)
    support = counts.sum(1)
    predicted = counts.sum(0)
    precision, recall = _ratio(tp, predicted), _ratio(tp, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    present = (support + predicted) > 0  # Classes that occur at all, in the labels or the predictions.
    total = int(support.sum())
    weights = _ratio(support.astype(np.float64), np.full(support.shape, float(total)))

    def macro(x):
        return float(x[present].mean()) if present.any() else 0.0

    row_sums = counts.sum(1, keepdims=True)
    return {
        "num_examples": total,
        "accuracy": float(tp.sum() / total) if total else 0.0,
        # UA: mean recall over the classes that have examples, the field's headline on imbalanced sets.
        "ua": float(recall[support > 0].mean()) if total else 0.0,
        "precision_macro": macro(precision), "recall_macro": macro(recall), "f1_macro": macro(f1),
        "precision_weighted": float((precision * weights).sum()),
        "recall_weighted": float((recall * weights).sum()),
        "f1_weighted": float((f1 * weights).sum()),
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                             "support": int(support[i])} for i, name in enumerate(class_names)},
        "class_names": list(class_names),
        "confusion": counts.tolist(),
        "confusion_normalized": _ratio(counts.astype(np.float64), np.broadcast_to(row_sums, counts.shape)).tolist(),
    }


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]) -> dict:
    """All headline metrics for integer labels in [0, len(class_names))."""
    return metrics_from_confusion(confusion_matrix(y_true, y_pred, len(class_names)), class_names)


def grouped_metrics(y_true: np.ndarray, y_pred: np.ndarray, groups: Sequence[str],
                    class_names: Sequence[str]) -> Mapping[str, dict]:
    """Accuracy, UA and macro F1 per group (speaker, gender, corpus), with the group's size."""
    y_true, y_pred, groups = np.asarray(y_true), np.asarray(y_pred), np.asarray(groups)
    out = {}
    for g in sorted(set(groups.tolist())):
        sel = groups == g
        m = classification_metrics(y_true[sel], y_pred[sel], class_names)
        out[g] = {k: m[k] for k in ("num_examples", "accuracy", "ua", "f1_macro")}
    return out
