"""A trained model restored from a training workdir: weights, label set and feature settings together.

Evaluation and deployment both start here, so they read exactly what training saved (config.json,
model_info.json and the checkpoint's `model` item) and can never disagree about features or labels.
Only parameters and BatchNorm statistics are restored, into a structure built by `nnx.eval_shape`
of the model itself: no optimiser, no training code.
"""

from __future__ import annotations

import dataclasses
import os

import jax
from flax import nnx

from ser_jax import checkpoints, config_files
from ser_jax.mesh import make_mesh, replicated
from ser_jax.model_info import ModelInfo
from ser_jax.models import create_model


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    info: ModelInfo
    graphdef: nnx.GraphDef
    params: nnx.State
    batch_stats: nnx.State
    step: int
    checkpoint: str  # The checkpoint's directory, for reports.

    @property
    def variables(self) -> dict:
        """{"params", "batch_stats"}: what the model item holds and what eval steps take."""
        return {"params": self.params, "batch_stats": self.batch_stats}

    @classmethod
    def load(cls, workdir: str, checkpoint: str | int = "best",
             sharding: jax.sharding.Sharding | None = None) -> "TrainedModel":
        """Restores `checkpoint` ("best", "latest" or a step) replicated onto `sharding`'s devices.

        The default is every local device, whatever device count wrote the checkpoint.
        """
        info = ModelInfo.load(workdir)
        model_config = config_files.load_from_workdir(workdir).model
        features = info.features
        abstract = nnx.eval_shape(lambda: create_model(model_config, num_classes=len(info.class_names),
                                                       n_mels=features.n_mels, prosody=features.prosody_columns,
                                                       rngs=nnx.Rngs(0)))
        graphdef, params, batch_stats = nnx.split(abstract, nnx.Param, nnx.BatchStat)
        sharding = sharding or replicated(make_mesh(jax.local_devices()))
        mngr = checkpoints.manager(workdir, read_only=True)
        step = checkpoints.resolve_step(mngr, checkpoint)
        restored = checkpoints.restore_model(
            mngr, step, checkpoints.abstract_like({"params": params, "batch_stats": batch_stats}, sharding))
        return cls(info, graphdef, restored["params"], restored["batch_stats"], step,
                   os.path.join(str(mngr.directory), str(step)))
