"""Training logs: TensorBoard event files, a JSONL file and a console progress bar (process 0 only)."""

from __future__ import annotations

import json
import os

import tqdm

METRICS_FILE = "metrics.jsonl"


class MetricWriter:
    def __init__(self, workdir: str, *, enabled: bool = True):
        self.enabled = enabled
        self._jsonl = open(os.path.join(workdir, METRICS_FILE), "a") if enabled else None
        self._tb = None
        if enabled:
            from tensorboardX import SummaryWriter  # Writes event files without TensorFlow.

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, scalars: dict) -> None:
        if not self.enabled:
            return
        self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self._jsonl.flush()
        for k, v in scalars.items():
            self._tb.add_scalar(k, v, step)

    def progress(self, total: int, initial: int) -> tqdm.tqdm:
        return tqdm.tqdm(total=total, initial=initial, disable=not self.enabled, unit="step", dynamic_ncols=True)

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._tb.close()
