"""A trained model restored from a training workdir: weights, label set and feature settings together.

Evaluation and deployment both start here, so they read exactly what training saved (config.json,
model_info.json and the checkpoint's `model` item) and can never disagree about features or labels.
Only parameters and BatchNorm statistics are restored, into a structure built by `nnx.eval_shape`
of the model itself: no optimiser, no training code.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from flax import nnx

from ser_jax import checkpoints, config_files
from ser_jax.mesh import make_mesh, replicated
from ser_jax.model_info import ModelInfo
from ser_jax.models import create_model


def abstract_model(model_config: Mapping, info: ModelInfo) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """The model's graph and the shapes of its parameters and BatchNorm statistics, with no weights
    allocated: what a checkpoint or a packaged file is restored into."""
    features = info.features
    abstract = nnx.eval_shape(lambda: create_model(model_config, num_classes=len(info.class_names),
                                                   n_mels=features.n_mels, prosody=features.prosody_columns,
                                                   rngs=nnx.Rngs(0)))
    return nnx.split(abstract, nnx.Param, nnx.BatchStat)


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
        graphdef, params, batch_stats = abstract_model(model_config, info)
        sharding = sharding or replicated(make_mesh(jax.local_devices()))
        mngr = checkpoints.manager(workdir, read_only=True)
        step = checkpoints.resolve_step(mngr, checkpoint)
        restored = checkpoints.restore_model(
            mngr, step, checkpoints.abstract_like({"params": params, "batch_stats": batch_stats}, sharding))
        return cls(info, graphdef, restored["params"], restored["batch_stats"], step,
                   os.path.join(str(mngr.directory), str(step)))


def ensemble(members: Sequence[TrainedModel], model_configs: Sequence[Mapping],
             weights: Sequence[float] = ()) -> tuple[TrainedModel, dict]:
    """One model whose probabilities are the mean of the members' (`ser_jax.models.ensemble`; weighted
    by `weights`, one per member, when given), and its model config.

    The members must be trained on the same data and read the same way: one label set, feature
    settings, normalisation statistics, test-time speeds and prior correction serve them all, so any
    difference is refused, naming the member's checkpoint and the setting. Its step is the latest of
    the members' and its checkpoint theirs, comma-separated.
    """
    if len(members) != len(model_configs) or len(members) < 2:
        raise ValueError(f"an ensemble needs at least two members, each with its model config; got "
                         f"{len(members)} models and {len(model_configs)} configs")
    first = members[0]
    for member in members[1:]:
        if difference := _info_difference(first.info, member.info):
            raise ValueError(f"{member.checkpoint} cannot join an ensemble with {first.checkpoint}: it differs in "
                             f"its {difference}; members must be trained on the same data and read the same way")
    config = {"name": "ensemble", "members": [dict(c) for c in model_configs]}
    if weights:
        config["weights"] = [float(w) for w in weights]
    graphdef, params, batch_stats = abstract_model(config, first.info)
    for state, field in ((params, "params"), (batch_stats, "batch_stats")):
        nnx.replace_by_pure_dict(state, {"members": {i: nnx.to_pure_dict(getattr(m, field))
                                                     for i, m in enumerate(members)}})
    model = TrainedModel(first.info, graphdef, params, batch_stats, step=max(m.step for m in members),
                         checkpoint=",".join(m.checkpoint for m in members))
    return model, config


def input_difference(a: ModelInfo, b: ModelInfo) -> list[str]:
    """What differs in how two models read their inputs and name their outputs, in words (empty if
    nothing): one model's input and answer mean the same to the other only if none does."""
    checks = [("class names", list(a.class_names) == list(b.class_names)),
              ("feature settings", a.features == b.features),
              ("normalisation statistics", a.mean.shape == b.mean.shape and np.allclose(a.mean, b.mean, rtol=1e-4)
               and np.allclose(a.std, b.std, rtol=1e-4))]
    return [name for name, same in checks if not same]


def _info_difference(a: ModelInfo, b: ModelInfo) -> str:
    """What differs between two members' ModelInfo, in words ("" if nothing that matters does)."""
    def corpora(info):
        # Not the paths: each run may prepare its own copy of the same data.
        return [(c["corpus"], c.get("splits")) for c in info.corpora]

    checks = [("training corpora and splits", corpora(a) == corpora(b)),
              ("transductive speaker normalisation", a.speaker_normalized == b.speaker_normalized),
              ("test-time speeds", a.test_time_speeds == b.test_time_speeds),
              ("training class prior", len(a.class_prior) == len(b.class_prior)
               and np.allclose(a.class_prior, b.class_prior, rtol=1e-4)),
              ("prior correction", a.prior_correction == b.prior_correction)]
    return ", ".join(input_difference(a, b) + [name for name, same in checks if not same])
