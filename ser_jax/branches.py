"""Branched training: from part way through the schedule, K copies of the train state go on side by side,
each with its own augmentation and dropout noise, and the model is their weights' average (a weight soup).

Why: K independently seeded models read as one beat one model by 3-4 UA points on unseen speakers, but
cost K models at inference. Copies that share the start of their training can stay in one basin of the
loss, where the average of their weights is itself a good model (Frankle et al., 2020; Wortsman et al.,
2022): one model's cost at inference, if the copies differ enough to gain. Measured on RAVDESS (docs/results/
accuracy.md, session 38): copies parted half way stay in one basin but gain nothing as one model; parted a
tenth of the way they differ more and their average can fall below either. Averaging the copies every few
epochs as well (`train.branch_merge_epochs`) keeps them close, as DART does for domain generalisation
(Jain et al., 2023); averaging after every step would be one model trained on K augmented views of each batch.

A branched state is the train state with a leading axis of K on every leaf (its `step` then has shape
(K,)); the copies take the same batches, so the data pipeline and its checkpointed position are shared.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections


def validate(cfg: ml_collections.ConfigDict) -> None:
    if cfg.branches < 1 or not 0 <= cfg.branch_start < 1 or cfg.branch_merge_epochs < 0:
        raise ValueError(f"train.branches must be >= 1 (got {cfg.branches}), train.branch_start a fraction of the "
                         f"schedule in [0, 1) (got {cfg.branch_start}) and train.branch_merge_epochs >= 0 "
                         f"(got {cfg.branch_merge_epochs})")


def start_step(cfg: ml_collections.ConfigDict, total_steps: int) -> int:
    """The step at which the state branches: `train.branch_start` of the schedule, `total_steps` (never)
    with one branch."""
    validate(cfg)
    return int(round(cfg.branch_start * total_steps)) if cfg.branches > 1 else total_steps


def is_branched(state) -> bool:
    return state.step.ndim == 1


def _copies(tree, k: int):
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (k, *x.shape)), tree)


def branch(state, k: int):
    """K copies of an unbranched state; copy i draws its noise from the key folded with i."""
    copies = _copies(state, k)
    keys = jax.vmap(lambda i: jax.random.key_data(jax.random.fold_in(jax.random.wrap_key_data(state.rng), i)))(
        jnp.arange(k))
    return copies.replace(rng=keys)


def average(tree):
    """The mean over the branch axis of every floating-point leaf; integer leaves (step counters) are equal
    across copies, so the first copy's."""
    return jax.tree.map(lambda x: x.mean(0) if jnp.issubdtype(x.dtype, jnp.floating) else x[0], tree)


def merge(state):
    """Every copy replaced by the copies' average (weights, their moving average, BatchNorm statistics and
    the optimiser's moments); each keeps its own noise key."""
    return _copies(average(state), state.step.shape[0]).replace(rng=state.rng)
