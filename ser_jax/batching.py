"""Variable-length clips padded into batches, for evaluation and prediction alike.

Frames are padded to a multiple of `bucket_frames` (few compiled shapes, little waste) and the
true lengths go along: the models mask padding, so it never changes a prediction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bucketed(frames: int, bucket_frames: int) -> int:
    """`frames` rounded up to a whole number of buckets."""
    return bucket_frames * -(-frames // bucket_frames)


def pad_batch(mels: Sequence[np.ndarray], *, rows: int, frames: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, frames, columns) zero-padded features in the first rows, and lengths (1 in filler rows)."""
    batch = np.zeros((rows, frames, columns), np.float32)
    lengths = np.ones(rows, np.int32)
    for row, mel in enumerate(mels):
        batch[row, :mel.shape[0]] = mel
        lengths[row] = mel.shape[0]
    return batch, lengths
