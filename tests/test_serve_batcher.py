"""The micro-batcher on its own, with a stand-in model that records its calls: batching, buckets,
live-before-bulk order, dropped windows and failed calls."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from ser_jax.serve.batcher import MicroBatcher

WINDOW = 4


class RecordingModel:
    """Probabilities (first sample, valid samples) per row; can be held busy and made to fail."""

    def __init__(self):
        self.calls: list[list[float]] = []  # First samples of the real rows (padding rows are 0).
        self.shapes: list[tuple[int, ...]] = []
        self.release = threading.Event()
        self.release.set()
        self.fail_on: float | None = None  # A call holding a window of this tag fails.

    def __call__(self, waveform: np.ndarray, num_samples: np.ndarray) -> np.ndarray:
        self.release.wait(10)
        self.shapes.append(waveform.shape)
        self.calls.append([float(x) for x in waveform[:, 0] if x])
        if self.fail_on in self.calls[-1]:
            raise RuntimeError("model failed")
        return np.stack([waveform[:, 0], num_samples.astype(np.float32)], axis=1)


def window(tag: float) -> np.ndarray:
    return np.full(WINDOW, tag, np.float32)


def run(scenario, model: RecordingModel, **kwargs):
    async def main():
        batcher = MicroBatcher(model, WINDOW, **kwargs)
        batcher.start()
        try:
            return await scenario(batcher)
        finally:
            await batcher.stop()

    return asyncio.run(main())


def test_waiting_windows_share_one_call_padded_to_a_bucket():
    model = RecordingModel()

    async def scenario(batcher):
        futures = [batcher.submit(window(i + 1), i + 1) for i in range(5)]
        return [await f for f in futures], batcher.stats.as_dict()

    results, stats = run(scenario, model, buckets=(1, 4, 8), max_wait_s=0.05, workers=1)
    assert model.shapes == [(8, WINDOW)] and model.calls == [[1, 2, 3, 4, 5]]
    np.testing.assert_array_equal(results, [[i + 1, i + 1] for i in range(5)])  # Each row back to its caller.
    assert stats["calls"] == 1 and stats["windows"] == 5 and stats["batch_sizes"] == {5: 1}


def test_live_windows_go_before_bulk_ones_and_calls_are_capped_at_the_largest_bucket():
    model = RecordingModel()

    async def scenario(batcher):
        model.release.clear()  # The model is busy with the first window while the rest arrive.
        first = batcher.submit(window(1), WINDOW)
        await asyncio.sleep(0.05)
        bulk = [batcher.submit(window(10 + i), WINDOW, bulk=True) for i in range(3)]
        live = [batcher.submit(window(20 + i), WINDOW) for i in range(2)]
        model.release.set()
        await asyncio.gather(first, *bulk, *live)

    run(scenario, model, buckets=(1, 2), max_wait_s=0.0, workers=1)
    assert model.calls == [[1], [20, 21], [10, 11], [12]]


def test_windows_of_departed_callers_are_skipped_and_a_failed_call_fails_only_its_windows():
    model = RecordingModel()

    async def scenario(batcher):
        model.release.clear()
        first = batcher.submit(window(1), WINDOW)
        await asyncio.sleep(0.05)
        gone = batcher.submit(window(2), WINDOW)
        gone.cancel()  # Its stream went away.
        failing = batcher.submit(window(3), WINDOW)
        model.fail_on = 3
        model.release.set()
        await first
        with pytest.raises(RuntimeError, match="model failed"):
            await failing
        return await batcher.submit(window(4), WINDOW)  # The batcher carries on.

    result = run(scenario, model, buckets=(1, 2), max_wait_s=0.0, workers=1)
    assert model.calls == [[1], [3], [4]]
    np.testing.assert_array_equal(result, [4, WINDOW])
