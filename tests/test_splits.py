import pytest

from data_prep import splits
from ser_jax.datasets import cross_validation_splits


def _genders(n):
    return {f"c/{i:02d}": "male" if i % 2 else "female" for i in range(1, n + 1)}


def test_speaker_splits_are_disjoint_complete_balanced_and_deterministic():
    g = _genders(18)
    a = splits.speaker_splits(g, seed=3)
    assert a == splits.speaker_splits(g, seed=3)
    assert a != splits.speaker_splits(g, seed=4)
    assert set(a) == set(g)
    by_split = {s: [k for k, v in a.items() if v == s] for s in ("train", "validation", "test")}
    assert [len(by_split[s]) for s in ("train", "validation", "test")] == [14, 2, 2]
    for s in ("validation", "test"):
        assert sorted(g[k] for k in by_split[s]) == ["female", "male"]


def test_speaker_splits_need_three_speakers():
    with pytest.raises(ValueError, match="at least 3 speakers"):
        splits.speaker_splits(_genders(2))


def test_folds_partition_speakers_evenly():
    g = _genders(18)
    f = splits.speaker_folds(g, 5, seed=0)
    sizes = sorted(list(f.values()).count(f"fold{i}") for i in range(5))
    assert sizes == [3, 3, 4, 4, 4]
    assert f == splits.speaker_folds(g, 5, seed=0)
    with pytest.raises(ValueError, match="--folds"):
        splits.speaker_folds(g, 19)


def test_fold_genders_follow_the_dealing_order():
    g = _genders(18)

    def fold_genders(k):
        f = splits.speaker_folds(g, k, seed=0)
        return [sorted({g[s] for s, fold in f.items() if fold == f"fold{i}"}) for i in range(k)]

    # One gender per fold, alternating: the 6-fold protocol every figure is measured on.
    assert fold_genders(6) == [["female"], ["male"]] * 3
    assert fold_genders(3) == [["female", "male"]] * 3


def test_cross_validation_rounds_use_each_fold_once_as_test():
    names = [f"fold{i}" for i in range(4)]
    tests = []
    for i in range(4):
        r = cross_validation_splits(names, i)
        assert sorted(r["train"] + r["validation"] + r["test"]) == names
        tests += r["test"]
    assert sorted(tests) == names
    with pytest.raises(ValueError):
        cross_validation_splits(names[:2], 0)


def test_a_chosen_validation_fold_leaves_both_held_out_folds_out_of_training():
    names = [f"fold{i}" for i in range(6)]
    r = cross_validation_splits(names, 1, validation_fold=4)
    assert r == {"train": ["fold0", "fold2", "fold3", "fold5"], "validation": ["fold4"], "test": ["fold1"]}
    assert cross_validation_splits(names, 5)["validation"] == ["fold0"]
    for bad in (1, 6, -1):
        with pytest.raises(ValueError, match="validation_fold"):
            cross_validation_splits(names, 1, validation_fold=bad)
