"""The per-file work of data_prep, run in a pool of worker processes: audio file -> TFDS example.

Kept apart from `builder` so that spawned workers import only NumPy, soundfile and soxr, not TFDS:
worker start-up is paid on every run.
"""

from __future__ import annotations

import ctypes

import numpy as np
import threadpoolctl

from data_prep.corpora import base
from ser_jax.audio import AudioError, load_audio
from ser_jax.dataset_format import TEXT_FIELDS
from ser_jax.features import FeatureConfig, clip_features


def init_feature_worker() -> None:
    """Makes a feature worker use exactly one core, without allocator churn.

    The pool already has a worker per core; OpenBLAS's own threads on top oversubscribed them, so
    two workers ran slower than one. And glibc handed each clip's megabyte-sized temporaries back
    to the OS and page-faulted them in again for the next clip, which was two thirds of log_mel's
    time; raising its mmap and trim thresholds keeps that memory in the process.
    """
    threadpoolctl.threadpool_limits(1)
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # Not glibc (macOS, musl): nothing to tune.
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 64 << 20)
    libc.mallopt(m_trim_threshold, 128 << 20)


def featurize(job: tuple[base.Utterance, FeatureConfig]) -> dict | base.Problem:
    """One utterance -> a TFDS example, or the Problem that kept it out (runs in worker processes)."""
    utt, cfg = job
    try:
        wave = load_audio(utt.path, cfg.sample_rate, min_samples=cfg.win_length)
    except AudioError as e:
        return base.Problem(utt.path, e.reason)
    mel = clip_features(wave, cfg)
    example = {f: getattr(utt, f) for f in TEXT_FIELDS}
    example.update(mel=mel, label=utt.emotion, duration=np.float32(wave.size / cfg.sample_rate))
    return example
