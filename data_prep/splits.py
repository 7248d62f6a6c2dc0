"""Speaker-independent splits: no speaker's voice is ever on both sides of an evaluation."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ser_jax.dataset_format import MIN_FOLDS, fold_name


class TooFewSpeakers(ValueError):
    """A corpus has too few speakers for the split asked of it (TESS has two)."""


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
        raise TooFewSpeakers(f"A speaker-independent split needs at least 3 speakers, this corpus has {n}")
    n_test = max(1, round(test_fraction * n))
    n_val = max(1, round(validation_fraction * n))
    if n_test + n_val >= n:
        raise TooFewSpeakers(f"{n} speakers are too few for {n_val} validation and {n_test} test speakers")
    order = _interleaved_speakers(genders, seed)
    return {s: "test" if i < n_test else "validation" if i < n_test + n_val else "train"
            for i, s in enumerate(order)}


def speaker_folds(genders: Mapping[str, str], folds: int, *, seed: int = 0) -> dict[str, str]:
    """Speaker -> "fold{i}", k folds of (near) equal speaker count, dealt in turn from the
    gender-alternating order.

    With two genders of equal size and an even k, every fold therefore holds one gender, alternating
    with the fold index (RAVDESS `--folds=6`: folds 0, 2, 4 female, 1, 3, 5 male), so each round
    validates on the other gender than it tests on and, without refit, trains on both equally; with
    an odd k, folds of two speakers or more mix them. Every cross-validated figure of the project is
    on these folds.
    """
    if not MIN_FOLDS <= folds <= len(genders):
        raise TooFewSpeakers(f"--folds must be between {MIN_FOLDS} and the number of speakers ({len(genders)}), "
                         f"got {folds}")
    return {s: fold_name(i % folds) for i, s in enumerate(_interleaved_speakers(genders, seed))}
