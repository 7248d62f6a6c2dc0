"""Orbax checkpoints of the train state and the Grain iterator, kept by validation UA plus the latest."""

from __future__ import annotations

import os

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

STATE, DATA = "state", "data_iter"
BEST_METRIC = "val_ua"


def manager(workdir: str, *, keep_best: int = 3, read_only: bool = False) -> ocp.CheckpointManager:
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
    return ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, "checkpoints")), options=options,
        item_handlers={STATE: ocp.StandardCheckpointHandler(), DATA: grain.checkpoint.CheckpointHandler()})


def save(mngr: ocp.CheckpointManager, step: int, state, data_iter, metrics: dict | None = None) -> None:
    args = {STATE: ocp.args.StandardSave(state)}
    if data_iter is not None:
        args[DATA] = grain.checkpoint.CheckpointSave(data_iter)
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


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state, data_iter=None):
    """Restores onto the shardings of `abstract_state`, whatever device count wrote the checkpoint."""
    args = {STATE: ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
        args[DATA] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = mngr.restore(step, args=ocp.args.Composite(**args))
    return restored[STATE]


def abstract_like(state, sharding: jax.sharding.Sharding):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
