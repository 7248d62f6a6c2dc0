"""Speaker-independent splits: no speaker's voice is ever on both sides of an evaluation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def _interleaved_speakers(genders: Mapping[str, str], seed: int) -> list[str]:
    """Speakers in a seeded order that alternates genders, so any prefix is gender-balanced."""
    rng = np.random.default_rng(seed)
    groups = []
    for gender in sorted(set(genders.values())):
        members = sorted(s for s, g in genders.items() if g == gender)
        groups.append([members[i] for i in rng.permutation(len(members))])
    order = []
    for i in range(max(len(g) for g in groups)):
        order += [g[i] for g in groups if i < len(g)]
    return order


def speaker_splits(genders: Mapping[str, str], *, validation_fraction: float = 0.1,
                   test_fraction: float = 0.1, seed: int = 0) -> dict[str, str]:
    """Speaker -> "train" | "validation" | "test"; at least one speaker in each."""
    n = len(genders)
    if n < 3:
        raise ValueError(f"A speaker-independent split needs at least 3 speakers, this corpus has {n}")
    n_test = max(1, round(test_fraction * n))
    n_val = max(1, round(validation_fraction * n))
    if n_test + n_val >= n:
        raise ValueError(f"{n} speakers are too few for {n_val} validation and {n_test} test speakers")
    order = _interleaved_speakers(genders, seed)
    return {s: "test" if i < n_test else "validation" if i < n_test + n_val else "train"
            for i, s in enumerate(order)}


def speaker_folds(genders: Mapping[str, str], folds: int, *, seed: int = 0) -> dict[str, str]:
    """Speaker -> "fold{i}", k folds of (near) equal speaker count and gender mix."""
    if not 2 <= folds <= len(genders):
        raise ValueError(f"--folds must be between 2 and the number of speakers ({len(genders)}), got {folds}")
    return {s: f"fold{i % folds}" for i, s in enumerate(_interleaved_speakers(genders, seed))}


def cross_validation_splits(fold_names: Sequence[str], test_fold: int) -> dict[str, list[str]]:
    """Train/validation/test split lists for one CV round: test = fold i, validation = fold i+1."""
    k = len(fold_names)
    if k < 3:
        raise ValueError(f"cross-validation needs at least 3 folds (train, validation, test), got {k}")
    if not 0 <= test_fold < k:
        raise ValueError(f"fold {test_fold} is out of range for {k} folds")
    test, val = fold_names[test_fold], fold_names[(test_fold + 1) % k]
    return {"train": [f for f in fold_names if f not in (test, val)], "validation": [val], "test": [test]}
