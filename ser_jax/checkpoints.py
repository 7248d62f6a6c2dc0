"""Orbax checkpoints: what training writes each epoch, and the model item inference restores alone.

A checkpoint holds three items: `state` (the whole train state, optimiser included, to resume),
`model` (parameters and BatchNorm statistics only: all that evaluation and deployment restore, so
they need neither the optimiser nor its structure) and `data_iter` (the Grain iterator; its handler
is passed in by training, so nothing here imports Grain). Checkpoints are kept by validation UA
(best k) plus the latest.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

STATE, MODEL, DATA = "state", "model", "data_iter"
BEST_METRIC = "val_ua"


def manager(workdir: str, *, keep_best: int = 3, read_only: bool = False,
            extra_handlers: Mapping[str, ocp.CheckpointHandler] | None = None) -> ocp.CheckpointManager:
    """Async saves; keeps the `keep_best` checkpoints with the best validation UA and the latest one."""
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policies.AnyPreservationPolicy([
            policies.LatestN(n=1),
            policies.BestN(get_metric_fn=lambda m: m[BEST_METRIC], reverse=False, n=keep_best,
                           keep_checkpoints_without_metrics=False),
        ]),
        # Also makes Orbax persist each checkpoint's metrics, which `best_step()` reads after a restart.
        best_fn=lambda m: m[BEST_METRIC], best_mode="max",
        enable_async_checkpointing=not read_only,
        read_only=read_only,
        create=not read_only,
    )
    handlers = {STATE: ocp.StandardCheckpointHandler(), MODEL: ocp.StandardCheckpointHandler(),
                **(extra_handlers or {})}
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")), options=options,
                                 item_handlers=handlers)


def save(mngr: ocp.CheckpointManager, step: int, *, state, model, extra: Mapping[str, ocp.args.CheckpointArgs] | None = None,
         metrics: dict | None = None) -> None:
    """Saves the train `state`, the inference `model` item ({params, batch_stats}) and any `extra` items."""
    args = {STATE: ocp.args.StandardSave(state), MODEL: ocp.args.StandardSave(model), **(extra or {})}
    mngr.save(step, args=ocp.args.Composite(**args), metrics=metrics, force=True)


def resolve_step(mngr: ocp.CheckpointManager, which: str | int) -> int:
    """"latest", "best" (highest validation UA) or a step number -> an existing step."""
    steps = mngr.all_steps()
    if not steps:
        raise FileNotFoundError(f"No checkpoints in {mngr.directory}")
    if which == "latest":
        return mngr.latest_step()
    if which == "best":
        best = mngr.best_step()
        return best if best is not None else mngr.latest_step()
    step = int(which)
    if step not in steps:
        raise ValueError(f"No checkpoint at step {step} in {mngr.directory}; there are {sorted(steps)}")
    return step


def restore_state(mngr: ocp.CheckpointManager, step: int, abstract_state,
                  extra: Mapping[str, ocp.args.CheckpointArgs] | None = None):
    """The train state (to resume), onto the shardings of `abstract_state`; `extra` items restore in place."""
    restored = mngr.restore(step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(abstract_state),
                                                            **(extra or {})}))
    return restored[STATE]


def restore_model(mngr: ocp.CheckpointManager, step: int, abstract_model):
    """The `model` item alone, onto the shardings of `abstract_model`, whatever device count wrote it."""
    path = os.path.join(str(mngr.directory), str(step))
    if not os.path.isdir(os.path.join(path, MODEL)):
        workdir = os.path.dirname(str(mngr.directory))
        raise FileNotFoundError(
            f"{path} has no {MODEL!r} item: it was written by an older ser_jax that saved only the full train "
            f"state. Train {workdir} again with this version, or raise --config.train.num_epochs and resume it: "
            f"checkpoints written from then on hold the model item that evaluation and prediction restore.")
    return mngr.restore(step, args=ocp.args.Composite(**{MODEL: ocp.args.StandardRestore(abstract_model)}))[MODEL]


def abstract_like(tree, sharding: jax.sharding.Sharding):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
