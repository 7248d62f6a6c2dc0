"""What a trained model needs besides its weights, saved in the workdir next to the checkpoints.

Evaluation and deployment read the label set, the feature settings and the normalisation statistics
from here, so features are always computed as in training and never re-typed by hand.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np

from ser_jax.config_files import read_workdir_json
from ser_jax.features import FeatureConfig

FILE = "model_info.json"


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    class_names: tuple[str, ...]
    features: FeatureConfig
    mean: np.ndarray
    std: np.ndarray
    # What it was trained on: {"corpus", "path" (the prepared dataset), "splits" (per role)} per corpus.
    corpora: list[dict] = dataclasses.field(default_factory=list)
    # Trained on inputs normalised by each speaker's own statistics (data.transductive_speaker_norm):
    # `mean` and `std` do not apply, and a speaker's clips are needed to classify any of them.
    speaker_normalized: bool = False
    # Rates at which every clip is also played and the predictions averaged (`inference.test_time_speeds`
    # of its training config; empty: the clip as it is). Evaluation and deployment both apply them.
    test_time_speeds: tuple[float, ...] = ()

    def __post_init__(self):
        check_speeds(self.test_time_speeds)

    def save(self, workdir: str) -> str:
        path = os.path.join(workdir, FILE)
        data = dataclasses.asdict(self)
        data.update(mean=self.mean.tolist(), std=self.std.tolist(), class_names=list(self.class_names),
                    test_time_speeds=list(self.test_time_speeds))
        with open(path + ".tmp", "w") as f:
            json.dump(data, f, indent=1)
        os.replace(path + ".tmp", path)
        return path

    @classmethod
    def load(cls, workdir: str) -> "ModelInfo":
        data = read_workdir_json(workdir, FILE)
        if "dataset" in data:  # Written before multi-corpus training: one dataset.
            data["corpora"] = [{"corpus": os.path.basename(os.path.dirname(os.path.dirname(data["dataset"]))),
                                "path": data["dataset"], "splits": data.get("splits", {})}]
        known = {f.name for f in dataclasses.fields(cls)}  # Older files also hold the model config.
        data = {k: v for k, v in data.items() if k in known}
        data.update(class_names=tuple(data["class_names"]), features=FeatureConfig.from_mapping(data["features"]),
                    mean=np.asarray(data["mean"], np.float32), std=np.asarray(data["std"], np.float32),
                    test_time_speeds=tuple(float(s) for s in data.get("test_time_speeds", ())))
        try:
            return cls(**data)
        except ValueError as e:
            raise ValueError(f"{os.path.join(workdir, FILE)}: {e}") from e

    def with_speeds(self, speeds: Sequence[float]) -> "ModelInfo":
        """The same model read at other test-time rates (() or (1.0,): one pass), e.g. to trade the
        recorded averaging for latency; checked like the recorded ones."""
        return dataclasses.replace(self, test_time_speeds=tuple(float(s) for s in speeds))


def check_speeds(speeds: tuple[float, ...]) -> tuple[float, ...]:
    """The rates unchanged, or ValueError: the one range check of recorded, configured and typed rates."""
    if any(not 0.5 <= s <= 2.0 for s in speeds):
        raise ValueError(f"test-time speeds must lie between 0.5 and 2 (playback rates), got {speeds}")
    return speeds
