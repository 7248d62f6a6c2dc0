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
    # How often each class was drawn in training, as the loss saw it (uniform under class-balanced
    # weights); empty in models trained before it was recorded.
    class_prior: tuple[float, ...] = ()
    # Strength of the prior correction (`inference.prior_correction`): the log-probabilities lose this
    # times the log of `class_prior` and are renormalised, so at 1 the model decides as if every class
    # were equally common, which is what unweighted accuracy (UA) rewards. 0: the model's own odds.
    prior_correction: float = 0.0

    def __post_init__(self):
        check_speeds(self.test_time_speeds)
        if self.class_prior and (len(self.class_prior) != len(self.class_names) or min(self.class_prior) < 0):
            raise ValueError(f"class_prior must hold one frequency per class {list(self.class_names)}, "
                             f"got {list(self.class_prior)}")
        if self.prior_correction < 0 or (self.prior_correction and not self.class_prior):
            raise ValueError(f"prior_correction must be >= 0 and needs the training class prior, got "
                             f"{self.prior_correction} with class_prior {list(self.class_prior)}")
        if self.prior_correction and (unseen := [n for n, p in zip(self.class_names, self.class_prior) if p == 0]):
            raise ValueError(f"prior_correction cannot weigh classes never seen in training: {unseen} "
                             "(set inference.prior_correction=0, or train on examples of them)")

    def save(self, workdir: str) -> str:
        path = os.path.join(workdir, FILE)
        data = dataclasses.asdict(self)
        data.update(mean=self.mean.tolist(), std=self.std.tolist(), class_names=list(self.class_names),
                    test_time_speeds=list(self.test_time_speeds), class_prior=list(self.class_prior))
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
                    test_time_speeds=tuple(float(s) for s in data.get("test_time_speeds", ())),
                    class_prior=tuple(float(p) for p in data.get("class_prior", ())),
                    prior_correction=float(data.get("prior_correction", 0.0)))
        try:
            return cls(**data)
        except ValueError as e:
            raise ValueError(f"{os.path.join(workdir, FILE)}: {e}") from e

    def with_speeds(self, speeds: Sequence[float]) -> "ModelInfo":
        """The same model read at other test-time rates (() or (1.0,): one pass), e.g. to trade the
        recorded averaging for latency; checked like the recorded ones."""
        return dataclasses.replace(self, test_time_speeds=tuple(float(s) for s in speeds))

    def with_prior_correction(self, strength: float) -> "ModelInfo":
        """The same model with another prior correction (0: its uncorrected probabilities)."""
        return dataclasses.replace(self, prior_correction=float(strength))

    def prior_offset(self) -> np.ndarray | None:
        """What the prior correction adds to the log-probabilities (None: no correction)."""
        if not self.prior_correction:
            return None
        return (-self.prior_correction * np.log(np.asarray(self.class_prior, np.float64))).astype(np.float32)


def check_speeds(speeds: tuple[float, ...]) -> tuple[float, ...]:
    """The rates unchanged, or ValueError: the one range check of recorded, configured and typed rates."""
    if any(not 0.5 <= s <= 2.0 for s in speeds):
        raise ValueError(f"test-time speeds must lie between 0.5 and 2 (playback rates), got {speeds}")
    return speeds
