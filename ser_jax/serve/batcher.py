"""Micro-batching: windows from every stream and request share one jitted model call.

One asyncio task owns the window model. Callers `submit` a window and await the future it returns;
the task takes the first queued window, then whatever else arrives within `max_wait` (up to the
largest bucket), pads the batch to the smallest compiled bucket that holds it and runs the model in
a worker thread, so the event loop keeps reading sockets while the model computes. Windows that
arrive while the model is busy wait in the queue and go into the next call together: under load
batches fill by themselves, and the wait bound matters only when it is quiet (it adds up to
`max_wait` of latency to a lone window in exchange for fewer, fuller calls).

Live windows (streams) go before bulk ones (an upload's segments, up to hundreds at once), in
arrival order within each: a long upload fills spare capacity and never delays the streams.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# On 2 CPU cores the default model classifies about as many windows per second at batch 2-8 as at 1
# (more calls, not cheaper arithmetic, is what batching saves there) and fewer at 16 (README, Serving).
BUCKETS = (1, 2, 4, 8)
WORKERS = 1  # Model calls at once; 2 showed no consistent gain on 2 shared cores (README, Serving).
MAX_WAIT_S = 0.002


@dataclasses.dataclass
class BatcherStats:
    calls: int = 0
    windows: int = 0  # Real windows classified (padding rows not counted).
    model_s: float = 0.0  # Wall time inside model calls, summed over worker threads.
    batch_sizes: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def as_dict(self) -> dict:
        return {"calls": self.calls, "windows": self.windows, "model_s": round(self.model_s, 4),
                "mean_batch": round(self.windows / self.calls, 3) if self.calls else 0.0,
                "batch_sizes": dict(sorted(self.batch_sizes.items()))}


class MicroBatcher:
    """Gathers `(window, num_samples)` requests into bucket-sized calls of `classify`.

    `classify((bucket, window_samples) float32, (bucket,) int32) -> (bucket, classes)` is called from
    worker threads, at most `workers` calls at once (2 lets two calls share the CPU cores when one
    call cannot use them all).
    """

    def __init__(self, classify: Callable[[np.ndarray, np.ndarray], np.ndarray], window_samples: int, *,
                 buckets: Sequence[int] = BUCKETS, max_wait_s: float = MAX_WAIT_S, workers: int = WORKERS):
        if not buckets or min(buckets) < 1 or workers < 1 or max_wait_s < 0:
            raise ValueError("buckets must be positive batch sizes, workers >= 1 and max_wait >= 0")
        self.classify, self.window_samples = classify, window_samples
        self.buckets = tuple(sorted(set(buckets)))
        self.max_wait_s, self.workers = max_wait_s, workers
        self.stats = BatcherStats()
        self._queue: asyncio.PriorityQueue = asyncio.PriorityQueue()  # (bulk, arrival, window, n, future)
        self._arrivals = itertools.count()
        self._slots = asyncio.Semaphore(workers)
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="model")
        self._in_flight = 0
        self._task: asyncio.Task | None = None

    @property
    def pending(self) -> int:
        """Windows queued or inside a running call."""
        return self._queue.qsize() + self._in_flight

    def warm_up(self) -> None:
        """Compiles every bucket (blocking), so no request ever waits for a compile."""
        for b in self.buckets:
            self._run(np.zeros((b, self.window_samples), np.float32), np.full(b, self.window_samples, np.int32))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    def submit(self, waveform: np.ndarray, num_samples: int, *, bulk: bool = False) -> asyncio.Future:
        """Queues one (window_samples,) float32 window; the future gets its (classes,) probabilities.

        `bulk` windows are taken only when no live one is waiting.
        """
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((bulk, next(self._arrivals), waveform, num_samples, future))
        return future

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        largest = self.buckets[-1]
        while True:
            await self._slots.acquire()  # First a free worker: what queues meanwhile joins this call.
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < largest:
                if self._queue.empty():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        async with asyncio.timeout(remaining):
                            batch.append(await self._queue.get())
                    except TimeoutError:
                        break
                else:
                    batch.append(self._queue.get_nowait())
            batch = [item[2:] for item in batch if not item[4].done()]  # Drops windows of streams that went away.
            if not batch:
                self._slots.release()
                continue
            self._in_flight += len(batch)
            loop.create_task(self._call(batch))

    async def _call(self, batch: list) -> None:
        loop = asyncio.get_running_loop()
        try:
            probs, seconds = await loop.run_in_executor(self._executor, self._assemble_and_run, batch)
        except Exception as e:  # A failed call fails its windows' requests, not the batcher.
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(e)
        else:
            self.stats.model_s += seconds
            self.stats.calls += 1
            self.stats.windows += len(batch)
            self.stats.batch_sizes[len(batch)] += 1
            for row, (_, _, future) in enumerate(batch):
                if not future.done():
                    future.set_result(probs[row])
        finally:
            self._in_flight -= len(batch)
            self._slots.release()

    def _assemble_and_run(self, batch: list) -> tuple[np.ndarray, float]:
        """In a worker thread: pads the windows to their bucket, runs the model; (probabilities, seconds)."""
        rows = next(b for b in self.buckets if b >= len(batch))
        waveform = np.zeros((rows, self.window_samples), np.float32)
        num_samples = np.full(rows, self.window_samples, np.int32)
        for row, (window, n, _) in enumerate(batch):
            waveform[row], num_samples[row] = window, n
        t0 = time.perf_counter()
        probs = self._run(waveform, num_samples)
        return probs, time.perf_counter() - t0

    def _run(self, waveform: np.ndarray, num_samples: np.ndarray) -> np.ndarray:
        return np.asarray(self.classify(waveform, num_samples))
