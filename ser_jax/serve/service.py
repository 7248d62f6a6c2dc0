"""The state every endpoint shares: the model, its batcher, the limits and the open streams."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np

from ser_jax.predictor import Predictor
from ser_jax.serve.batcher import BUCKETS, MAX_WAIT_S, WORKERS, MicroBatcher
from ser_jax.serve.limits import Limits


def model_version(predictor: Predictor) -> str:
    """A short hash of the weights, statistics, test-time rates and prior correction: two servers answer
    alike iff their versions match."""
    digest = hashlib.sha256()
    info = predictor.info
    for leaf in jax.tree.leaves(jax.device_get((predictor.params, predictor.batch_stats, info.mean, info.std))):
        digest.update(np.ascontiguousarray(leaf).tobytes())
    digest.update(repr((info.test_time_speeds, info.class_prior, info.prior_correction)).encode())
    return digest.hexdigest()[:12]


@dataclasses.dataclass
class Service:
    predictor: Predictor
    batcher: MicroBatcher
    limits: Limits
    window_samples: int
    hop_samples: int
    source: str  # Where the model came from (a workdir), for GET /v1/model.
    version: str = ""  # A hash of the weights (model_version), computed at start-up.
    streams: set = dataclasses.field(default_factory=set)  # Open `StreamSession`s.
    draining: bool = False  # Set on SIGTERM: new work is refused while open streams finish.
    # Whole-clip predictions run here, one at a time, beside the batcher's window calls: a clip of a new
    # length compiles the clip function, which must not stall the streams.
    clips: ThreadPoolExecutor = dataclasses.field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="clips"))
    uploads: asyncio.Semaphore = dataclasses.field(init=False)  # At most `limits.max_uploads` at once.

    def __post_init__(self):
        self.uploads = asyncio.Semaphore(self.limits.max_uploads)

    @classmethod
    def create(cls, predictor: Predictor, source: str, *, window_s: float = 3.0, hop_s: float = 0.5,
               buckets: Sequence[int] = BUCKETS, max_wait_s: float = MAX_WAIT_S, workers: int = WORKERS,
               limits: Limits = Limits()) -> "Service":
        """The predictor's jitted window function behind a micro-batcher, with these window/hop and limits."""
        sr = predictor.sample_rate
        window, hop = int(round(window_s * sr)), int(round(hop_s * sr))
        if window < predictor.features.win_length or hop <= 0:
            raise ValueError(f"the window must be at least {predictor.features.window_ms} ms and the hop positive")
        batcher = MicroBatcher(predictor.window_function(window), window, buckets=buckets, max_wait_s=max_wait_s,
                               workers=workers)
        return cls(predictor, batcher, limits, window, hop, source)

    @property
    def sample_rate(self) -> int:
        return self.predictor.sample_rate

    def refusal(self, *, new_stream: bool = False) -> str | None:
        """Why new work must be refused now (the server is draining or at capacity), or None."""
        if self.draining:
            return "server is shutting down"
        if new_stream and len(self.streams) >= self.limits.max_streams:
            return f"server at capacity: {len(self.streams)} streams open (limit {self.limits.max_streams})"
        if self.batcher.pending > self.limits.max_pending_windows:
            return (f"server at capacity: {self.batcher.pending} windows waiting for the model "
                    f"(limit {self.limits.max_pending_windows})")
        return None

    def describe(self) -> dict:
        """GET /v1/model: what a client needs to talk to this model."""
        sr = self.sample_rate
        return {"class_names": list(self.predictor.class_names), "sample_rate": sr,
                "window_s": self.window_samples / sr, "hop_s": self.hop_samples / sr,
                "model_version": self.version, "checkpoint_step": self.predictor.step, "source": self.source,
                "features": {"n_mels": self.predictor.features.n_mels,
                             "min_samples": self.predictor.features.win_length},
                "test_time_speeds": list(self.predictor.info.test_time_speeds),
                "prior_correction": self.predictor.info.prior_correction,
                "batching": {"buckets": list(self.batcher.buckets), "max_wait_ms": self.batcher.max_wait_s * 1e3,
                             "workers": self.batcher.workers}}
