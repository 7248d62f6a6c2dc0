"""A trained model restored from a training workdir: weights, label set and feature settings together.

Evaluation and deployment both start here, so they read exactly what training saved (config.json,
model_info.json, an Orbax checkpoint) and can never disagree about features or labels.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import ml_collections
from flax import nnx

from ser_jax import checkpoints, train
from ser_jax.model_info import ModelInfo

CONFIG_FILE = "config.json"


def load_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: {workdir!r} is not a ser_jax training workdir")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    info: ModelInfo
    graphdef: nnx.GraphDef
    state: train.TrainState
    step: int
    checkpoint: str  # The checkpoint's directory, for reports.

    @classmethod
    def load(cls, workdir: str, checkpoint: str | int = "best",
             sharding: jax.sharding.Sharding | None = None) -> "TrainedModel":
        """Restores `checkpoint` ("best", "latest" or a step) replicated onto `sharding`'s devices.

        The default is every local device, whatever device count wrote the checkpoint.
        """
        info = ModelInfo.load(workdir)
        config = load_config(workdir)
        tx = train.create_optimizer(config.optim, total_steps=1)  # Only the state's structure matters.
        graphdef, abstract = nnx.eval_shape(
            lambda: train.create_train_state(config, len(info.class_names), info.features.n_mels, tx))
        sharding = sharding or jax.sharding.NamedSharding(train.make_mesh(jax.local_devices()),
                                                          jax.sharding.PartitionSpec())
        mngr = checkpoints.manager(workdir, read_only=True)
        step = checkpoints.resolve_step(mngr, checkpoint)
        state = checkpoints.restore(mngr, step, checkpoints.abstract_like(abstract, sharding))
        return cls(info, graphdef, state, step, os.path.join(str(mngr.directory), str(step)))

    def model(self) -> nnx.Module:
        """The NNX module in inference mode (dropout off, running BatchNorm statistics)."""
        return nnx.merge(self.graphdef, self.state.params, self.state.batch_stats, copy=True)
