"""Training: a pure `train_step` jitted over a data-parallel mesh, and the loop around it.

The model lives in NNX; the steps take it apart (`nnx.split`) into a plain pytree `TrainState`, so
that they are pure functions of (state, batch), Orbax saves the state as it is, and jit can place it
by sharding. Batches are global arrays sharded along the mesh's "data" axis over every device of
every process: BatchNorm statistics and masked means are therefore computed over the true global
batch (XLA adds the cross-device reductions), padding included nowhere. Validation runs the
evaluation step and loop of `ser_jax.evaluate`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time

import flax
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from ser_jax import (augment, auxiliary_task, branches, checkpoints, config_files, datasets, distillation,
                     host_memory, input_pipeline, mesh, metrics, model_info, side_by_side, speaker_adversary)
from ser_jax.evaluate import Evaluator
from ser_jax.features import FeatureConfig
from ser_jax.metric_writers import MetricWriter
from ser_jax.models import create_model
from ser_jax.trained_model import TrainedModel
from ser_jax.warping import MelBins


@flax.struct.dataclass
class HeadState:
    """A training-only head's weights and optimiser state: the speaker adversary's
    (`ser_jax.speaker_adversary`) or the auxiliary task's (`ser_jax.auxiliary_task`)."""
    params: dict
    opt_state: optax.OptState


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: nnx.State
    batch_stats: nnx.State
    ema_params: nnx.State  # What evaluation and deployment use; the params themselves when EMA is off.
    opt_state: optax.OptState
    rng: jax.Array  # Raw key data (uint32), which Orbax stores like any array.
    adversary: HeadState | None = None  # Only with train.speaker_adversary > 0.
    auxiliary: HeadState | None = None  # Only with a train.auxiliary_task.


HEADS = ("adversary", "auxiliary")  # The TrainState fields of the training-only heads.
# Where distill.teacher_configs' relative paths are found when the current directory lacks them.
_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lr_schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warm-up to `lr`, then cosine decay to `lr * final_lr_fraction` at the last step."""
    warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warmup, max(total_steps, warmup + 1),
                                              end_value=cfg.lr * cfg.final_lr_fraction)


def sam_start_step(cfg: ml_collections.ConfigDict, total_steps: int) -> int:
    """The first step of sharpness-aware minimisation: `optim.sam_start` of the way through the
    schedule, `total_steps` (none) when `optim.sam_rho` is 0. Late SAM finds much of full SAM's flatter
    minimum at a fraction of its cost (Zhou et al., 2024): each SAM step computes the gradients twice."""
    if cfg.sam_rho < 0 or not 0 <= cfg.sam_start < 1:
        raise ValueError(f"optim.sam_rho must be >= 0 (got {cfg.sam_rho}) and optim.sam_start a fraction of the "
                         f"schedule in [0, 1) (got {cfg.sam_start})")
    return int(round(cfg.sam_start * total_steps)) if cfg.sam_rho else total_steps


def sharpness_aware_params(params: nnx.State, grads: nnx.State, rho: float) -> nnx.State:
    """The weights moved by `rho` up the gradient: about the worst point of the ball of radius `rho`,
    where SAM takes its gradient (Foret et al., 2021)."""
    scale = rho / (optax.global_norm(grads) + 1e-12)
    return jax.tree.map(lambda p, g: p + scale * g, params, grads)


def create_optimizer(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip),
                       optax.adamw(lr_schedule(cfg, total_steps), weight_decay=cfg.weight_decay))


def create_train_state(config: ml_collections.ConfigDict, num_classes: int, features: FeatureConfig,
                       tx: optax.GradientTransformation, num_speakers: int = 0,
                       auxiliary_values: int = 0) -> tuple[nnx.GraphDef, TrainState]:
    """The model's initial state, the speaker adversary's for `num_speakers` training speakers when
    `train.speaker_adversary` is on, and the auxiliary head's for `auxiliary_values` values of
    `train.auxiliary_task` when there is one."""
    key = jax.random.key(config.seed)
    init_key, train_key = jax.random.split(key)
    model = create_model(config.model, num_classes=num_classes, n_mels=features.n_mels,
                         prosody=features.prosody_columns, rngs=nnx.Rngs(params=init_key))
    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    adversary = None
    if config.train.speaker_adversary:
        if num_speakers < 2:
            raise ValueError(f"train.speaker_adversary needs at least two training speakers to tell apart; the "
                             f"training data has {num_speakers}")
        adversary_params = speaker_adversary.init_params(jax.random.fold_in(key, 1), model.embedding_features,
                                                         num_speakers)
        adversary = HeadState(params=adversary_params, opt_state=tx.init(adversary_params))
    auxiliary = None
    if config.train.auxiliary_task:
        auxiliary_params = auxiliary_task.init_params(jax.random.fold_in(key, 2), model.embedding_features,
                                                      auxiliary_values)
        auxiliary = HeadState(params=auxiliary_params, opt_state=tx.init(auxiliary_params))
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                       ema_params=jax.tree.map(jnp.copy, params), opt_state=tx.init(params),
                       rng=jax.random.key_data(train_key), adversary=adversary, auxiliary=auxiliary)
    return graphdef, state


def loss_and_grads(state: TrainState, batch: dict, *, graphdef: nnx.GraphDef, config: ml_collections.ConfigDict,
                   num_classes: int, mel_bins: MelBins, total_steps: int, class_weights: np.ndarray | None = None,
                   teacher_graphdef: nnx.GraphDef | None = None, teacher_variables: dict | None = None
                   ) -> tuple[tuple[jax.Array, tuple[jax.Array, nnx.State, dict]], tuple[nnx.State, dict]]:
    """((loss, (logits, new batch_stats, metrics)), (grads, heads' grads)) on a global batch, with
    augmentation and dropout; the heads' grads by name ("adversary", "auxiliary"), None for an absent head.

    `mel_bins` (each bin's centre frequency and dB scale) lets augmentation move frequencies and levels.
    `class_weights` (`balanced_class_weights`) scales each example's loss by its class's weight. With
    a speaker adversary (`state.adversary`, batches then carry "speaker" ids), the loss adds its
    speaker cross-entropy on the gradient-reversed embedding, whose reversal ramps up over
    `total_steps`; with an auxiliary head (`state.auxiliary`, batches then carry "auxiliary" ids,
    -1 where unknown), its cross-entropy times `train.auxiliary_weight`. The metrics hold the
    emotion loss alone as "loss". Batches with "teacher"
    probabilities (distillation) train towards their blend with the labels (`config.distill.weight`);
    so does an online teacher (`teacher_graphdef` and its `teacher_variables`), read on the augmented batch.
    """
    _, aug_key, dropout_key = jax.random.split(jax.random.wrap_key_data(state.rng), 3)
    targets = jax.nn.one_hot(batch["label"], num_classes)
    if "teacher" in batch:  # Distillation: the teachers take their share of each target.
        targets = (1 - config.distill.weight) * targets + config.distill.weight * batch["teacher"]
    mel, lengths, targets = augment.apply(aug_key, batch["mel"], batch["lengths"], targets, config.augment, mel_bins)
    if teacher_graphdef is not None:  # Online distillation: the teacher reads the view the student sees.
        teacher = distillation.online_targets(teacher_graphdef, teacher_variables, mel, lengths,
                                              config.distill.temperature)
        targets = (1 - config.distill.weight) * targets + config.distill.weight * teacher
    # A mixed (mixup) example takes its classes' weights in its proportions.
    example_weights = 1.0 if class_weights is None else targets @ jnp.asarray(class_weights, targets.dtype)
    smoothing = config.train.label_smoothing
    targets = targets * (1 - smoothing) + smoothing / num_classes

    def loss_fn(params, heads):
        # copy=True: fresh Variables owned by this trace, so BatchNorm may update them inside jax.grad.
        model = nnx.merge(graphdef, params, state.batch_stats, copy=True)
        rngs = nnx.Rngs(dropout=dropout_key)
        embedding = model.embed(mel, lengths, train=True, rngs=rngs)
        logits = model.classify(embedding, train=True, rngs=rngs)
        loss = (example_weights * optax.softmax_cross_entropy(logits, targets)).mean()
        step_metrics = {"loss": loss}
        if heads["adversary"] is not None:
            scale = speaker_adversary.reversal_scale(state.step, total_steps, config.train.speaker_adversary)
            speaker_logits = speaker_adversary.speaker_logits(
                heads["adversary"], speaker_adversary.reverse_gradient(embedding, scale))
            # A mixup partner takes the smaller share, so a mixed example keeps its own speaker's label.
            speaker_loss = optax.softmax_cross_entropy_with_integer_labels(speaker_logits, batch["speaker"]).mean()
            step_metrics.update(speaker_loss=speaker_loss, reversal_scale=scale,
                                speaker_accuracy=jnp.mean(jnp.argmax(speaker_logits, -1) == batch["speaker"]))
            loss = loss + speaker_loss
        if heads["auxiliary"] is not None:
            # A mixup partner takes the smaller share, so a mixed example keeps its own value.
            auxiliary_loss, auxiliary_accuracy = auxiliary_task.loss_and_accuracy(heads["auxiliary"], embedding,
                                                                                  batch["auxiliary"])
            step_metrics.update(auxiliary_loss=auxiliary_loss, auxiliary_accuracy=auxiliary_accuracy)
            loss = loss + config.train.auxiliary_weight * auxiliary_loss
        return loss, (logits, nnx.state(model, nnx.BatchStat), step_metrics)

    heads = {name: None if getattr(state, name) is None else getattr(state, name).params for name in HEADS}
    return jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(state.params, heads)


def balanced_class_weights(frequencies: np.ndarray) -> np.ndarray:
    """Per-class loss weights 1 / (classes x frequency): every class weighs as much in the loss, as in UA
    (RAVDESS has half as many neutral clips as of any other emotion), and the mean weight of the
    examples drawn stays 1, so the learning rate means what it did."""
    return (1.0 / (len(frequencies) * frequencies)).astype(np.float32)


def training_prior(frequencies: np.ndarray, class_weights: np.ndarray | None) -> tuple[float, ...]:
    """The class frequencies as the loss sees them: the drawn ones, reweighted by `class_weights`."""
    seen = frequencies if class_weights is None else frequencies * class_weights
    return tuple(float(p) for p in seen / seen.sum())


def update_ema(ema_params: nnx.State, params: nnx.State, step: jax.Array, decay: float) -> nnx.State:
    """Exponential moving average of the weights, `params` itself when `decay` is 0.

    The decay ramps up as (1 + step) / (10 + step) until it reaches `decay`, so the average forgets
    the random initialisation within the first few hundred steps instead of dragging it along.
    """
    if not decay:
        return params
    d = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
    return jax.tree.map(lambda e, p: d * e + (1 - d) * p, ema_params, params)


def train_step(state: TrainState, batch: dict, teacher_variables: dict | None = None, *, graphdef: nnx.GraphDef,
               tx: optax.GradientTransformation, config: ml_collections.ConfigDict, num_classes: int,
               mel_bins: MelBins, total_steps: int, class_weights: np.ndarray | None = None,
               teacher_graphdef: nnx.GraphDef | None = None, sharpness_aware: bool = False
               ) -> tuple[TrainState, dict]:
    """One optimiser step on a global batch; pure, so it can be jitted with any sharding.

    `sharpness_aware` (SAM, from `sam_start_step` on): the model's weights step along the gradient
    taken at `sharpness_aware_params` (radius `optim.sam_rho`), on the same augmented batch and
    dropout masks; the BatchNorm statistics, the metrics and the training-only heads keep the first
    pass's. (optax.contrib.sam alternates its two gradients over consecutive batches and cannot start
    part way.) A static switch, not `lax.cond`: the plain steps compile without the second pass.
    """
    grad_fn = functools.partial(loss_and_grads, batch=batch, graphdef=graphdef, config=config,
                                num_classes=num_classes, mel_bins=mel_bins, total_steps=total_steps,
                                class_weights=class_weights, teacher_graphdef=teacher_graphdef,
                                teacher_variables=teacher_variables)
    (_, (logits, new_stats, step_metrics)), (grads, head_grads) = grad_fn(state)
    if sharpness_aware:
        grads = grad_fn(state.replace(params=sharpness_aware_params(state.params, grads, config.optim.sam_rho)))[1][0]
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    next_rng = jax.random.split(jax.random.wrap_key_data(state.rng), 3)[0]
    params = optax.apply_updates(state.params, updates)
    heads = {}
    for name in HEADS:
        head = getattr(state, name)
        if head is not None:
            head_updates, head_opt_state = tx.update(head_grads[name], head.opt_state, head.params)
            head = HeadState(params=optax.apply_updates(head.params, head_updates), opt_state=head_opt_state)
        heads[name] = head
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=new_stats,
                              ema_params=update_ema(state.ema_params, params, state.step, config.optim.ema_decay),
                              opt_state=opt_state, rng=jax.random.key_data(next_rng), **heads)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return new_state, {**step_metrics, "accuracy": accuracy, "grad_norm": optax.global_norm(grads)}


class Steps:
    """The jitted train step for one mesh: state (and an online teacher) replicated, batches split
    along "data". A branched state (`ser_jax.branches`) takes the same step on each copy, vmapped."""

    def __init__(self, device_mesh, graphdef, tx, config, num_classes, mel_bins: MelBins, *, total_steps: int,
                 class_weights: np.ndarray | None = None, prior_offset: np.ndarray | None = None,
                 teacher: TrainedModel | None = None):
        self.replicated = mesh.replicated(device_mesh)
        self.batch_sharding = mesh.batch_sharding(device_mesh)
        self.teacher_variables = {} if teacher is None else jax.device_put(teacher.variables, self.replicated)
        # The plain step and the sharpness-aware one, on one state or on branches; each compiled when first taken.
        self._train = {}
        for sharpness_aware in (False, True):
            step = functools.partial(train_step, graphdef=graphdef, tx=tx, config=config, num_classes=num_classes,
                                     mel_bins=mel_bins, total_steps=total_steps, class_weights=class_weights,
                                     teacher_graphdef=None if teacher is None else teacher.graphdef,
                                     sharpness_aware=sharpness_aware)
            for branched in (False, True):
                self._train[sharpness_aware, branched] = jax.jit(
                    _on_branches(step) if branched else step,
                    in_shardings=(self.replicated, self.batch_sharding, self.replicated),
                    out_shardings=self.replicated, donate_argnums=0)
        self.branch = jax.jit(branches.branch, static_argnums=1, out_shardings=self.replicated)
        self.merge = jax.jit(branches.merge, out_shardings=self.replicated, donate_argnums=0)
        # Validation reads the model as evaluation and deployment will (test-time speeds included).
        self.evaluator = Evaluator(device_mesh, graphdef, speeds=tuple(config.inference.test_time_speeds),
                                   bins=mel_bins, prior_offset=prior_offset)

    def train(self, state: TrainState, batch: dict, sharpness_aware: bool = False) -> tuple[TrainState, dict]:
        return self._train[sharpness_aware, branches.is_branched(state)](state, batch, self.teacher_variables)

    def global_batch(self, local_batch: dict) -> dict:
        return mesh.global_batch(self.batch_sharding, local_batch)

    def place_state(self, state: TrainState) -> TrainState:
        return jax.device_put(state, self.replicated)


def _on_branches(step):
    """`step` on each copy of a branched state, the same batch for all; the metrics averaged over the copies."""
    def branched_step(state, batch, teacher_variables):
        state, m = jax.vmap(step, in_axes=(0, None, None))(state, batch, teacher_variables)
        return state, jax.tree.map(lambda x: x.mean(0), m)
    return branched_step


def model_variables(state: TrainState) -> dict:
    """The checkpoint's inference item, with the averaged weights (averaged over the copies too when the
    state is branched): what evaluation and deployment restore."""
    variables = {"params": state.ema_params, "batch_stats": state.batch_stats}
    return branches.average(variables) if branches.is_branched(state) else variables


def checkpointed(state: TrainState) -> dict:
    """The train state as checkpoints hold it: its fields, the training-only heads' only when there are
    some, so that runs without them keep the layout their checkpoints always had (and older workdirs resume)."""
    fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    return {name: value for name, value in fields.items() if name not in HEADS or value is not None}


def _save(mngr, step: int, state: TrainState, train_iter, val_metrics: dict | None = None) -> None:
    checkpoints.save(mngr, step, state=checkpointed(state), model=model_variables(state),
                     extra={checkpoints.DATA: grain.checkpoint.CheckpointSave(train_iter)}, metrics=val_metrics)


def _validate(steps, state, data, config, class_names) -> dict:
    """Validation loss, accuracy and UA, also per corpus; `val/ua` (what picks checkpoints) is the
    mean of the corpora's UAs, so a small corpus counts as much as a large one. Nothing without
    validation speakers (every corpus train-only: a final model trained for a fixed schedule)."""
    if data is None:
        return {}
    logits, loss = steps.evaluator.logits_and_loss(model_variables(state), data,
                                                   batch_size=config.train.eval_batch_size,
                                                   bucket_frames=config.data.eval_bucket_frames)
    m = metrics.classification_metrics(data.labels, logits.argmax(-1), class_names)
    out = {"val/loss": loss, "val/accuracy": m["accuracy"]}
    by_corpus = metrics.grouped_metrics(data.labels, logits.argmax(-1), data.metadata["corpus"], class_names)
    if len(by_corpus) > 1:
        out.update({f"val/{corpus}/{k}": g[k] for corpus, g in by_corpus.items() for k in ("accuracy", "ua")})
    out["val/ua"] = float(np.mean([g["ua"] for g in by_corpus.values()]))
    return out


def _train_loop(steps, state, train_iter, val_data, mngr, writer, config, class_names, schedule, *,
                steps_per_epoch: int, total_steps: int, sam_from: int, branch_from: int) -> dict:
    step = int(state.step[0] if branches.is_branched(state) else state.step)
    global_batch = config.train.batch_size
    last = {}
    progress = writer.progress(total=total_steps, initial=step)
    t0, n0 = time.perf_counter(), step
    merge_steps = config.train.branch_merge_epochs * steps_per_epoch
    while step < total_steps:
        if step == branch_from and not branches.is_branched(state):
            state = steps.branch(state, config.train.branches)
        state, m = steps.train(state, steps.global_batch(next(train_iter)), sharpness_aware=step >= sam_from)
        step += 1
        if merge_steps and step > branch_from and (step - branch_from) % merge_steps == 0:
            state = steps.merge(state)
        progress.update(1)
        if step % config.train.log_every_steps == 0 or step == total_steps:
            m = {f"train/{k}": float(v) for k, v in jax.device_get(m).items()}
            elapsed = time.perf_counter() - t0
            m["train/samples_per_s"] = (step - n0) * global_batch / elapsed
            m["train/lr"] = float(schedule(step))
            writer.write(step, m)
            progress.set_postfix(loss=f"{m['train/loss']:.3f}")
            t0, n0 = time.perf_counter(), step
        if step % steps_per_epoch == 0 or step == total_steps:
            epoch = -(-step // steps_per_epoch)
            # Every epoch is checkpointed (to resume); one without validation figures is kept only while
            # it is the latest, so the best-k checkpoints are chosen among the validated epochs.
            validated = epoch % config.train.eval_every_epochs == 0 or step == total_steps
            last = _validate(steps, state, val_data, config, class_names) if validated else {}
            writer.write(step, {**last, "epoch": epoch})
            _save(mngr, step, state, train_iter, {checkpoints.BEST_METRIC: last["val/ua"]} if last else None)
        elif config.train.checkpoint_every_steps and step % config.train.checkpoint_every_steps == 0:
            _save(mngr, step, state, train_iter)
    progress.close()
    if not last:  # Resumed a finished run: report the final checkpoint's validation figures.
        last = _validate(steps, state, val_data, config, class_names)
    return {**last, "step": step}


def teacher_config_paths(spec: str) -> list[str]:
    """The config files of `distill.teacher_configs`: comma-separated paths, each found from the current
    directory or else from the project root (so "configs/cnn_only.py" works from anywhere)."""
    paths = []
    for entry in (e.strip() for e in spec.split(",") if e.strip()):
        found = entry if os.path.isfile(entry) else os.path.join(_PROJECT_ROOT, entry)
        if not os.path.isfile(found):
            raise FileNotFoundError(f"distill.teacher_configs: no config file {entry!r} (looked in {os.getcwd()} "
                                    f"and {_PROJECT_ROOT})")
        paths.append(found)
    return paths


def teacher_runs(config: ml_collections.ConfigDict, workdir: str) -> list[tuple[ml_collections.ConfigDict, str]]:
    """(config, workdir) of each teacher that `distill.teacher_configs` asks this run to train first.

    Teacher i is its config file with this run's data and features sections (the same corpora, splits,
    fold and refit, so it reads the student's inputs and never its test speakers) and seed `seed + i`, in
    `<distill.teacher_workdir>/<config name>_seed<seed>` (default `<workdir>/teachers`; "{test_fold}" is
    filled in, so the rounds of a cross-validation can share one teacher directory per fold).
    """
    d = config.distill
    if not d.teacher_configs:
        return []
    if d.teacher_models or d.teachers:
        raise ValueError("distill.teacher_configs trains this run's teachers; distill.teacher_models and "
                         "distill.teachers name teachers trained elsewhere: set one")
    root = (d.teacher_workdir or os.path.join(workdir, "teachers")).replace("{test_fold}", str(config.data.test_fold))
    runs = []
    for i, path in enumerate(teacher_config_paths(d.teacher_configs)):
        teacher = config_files.load_py(path)
        if teacher.distill.teacher_configs or teacher.distill.teacher_models or teacher.distill.teachers:
            raise ValueError(f"distill.teacher_configs: {path} distils from teachers of its own; a teacher here "
                             "learns from the labels alone")
        with teacher.unlocked():
            teacher.data = ml_collections.ConfigDict(config.data.to_dict())
            # Where this run's data live, so the teachers read (or prepare) the very same datasets.
            teacher.data.data_dir = config.data.data_dir or os.path.join(workdir, "data")
            teacher.features = ml_collections.ConfigDict(config.features.to_dict())
            teacher.seed = config.seed + i
            if d.teacher_checkpoint == "latest":  # The student reads its last checkpoint: validated once, at the end.
                teacher.train.eval_every_epochs = teacher.train.num_epochs
        name = os.path.splitext(os.path.basename(path))[0]
        runs.append((teacher, os.path.join(root, f"{name}_seed{teacher.seed}")))
    return runs


def _train_teacher(config: dict, workdir: str) -> None:
    """A teacher's run in a process of its own: the host-memory setting main() makes, then the run."""
    host_memory.retain_freed_memory()
    train_and_evaluate(ml_collections.ConfigDict(config), workdir)


def train_teachers(teachers: list[tuple[ml_collections.ConfigDict, str]], processes: int) -> None:
    """Trains (or resumes, or reads back) each (config, workdir) of `teacher_runs`.

    On a single-process CPU run with `processes` > 1, up to that many train side by side in processes
    of their own (`ser_jax.side_by_side`), each logging to `<its workdir>/train.log`: a run leaves
    part of a CPU idle, and the teachers need nothing of each other. Elsewhere (an accelerator, which
    one run already fills, or a multi-host job) one after the other, here."""
    n = len(teachers)
    if processes > 1 and n > 1 and jax.process_count() == 1 and jax.default_backend() == "cpu":
        # The teachers read the same datasets: any that the run prepares, it prepares here, once, first.
        datasets.training_data(*teachers[0])
        logs = [os.path.join(teacher_dir, "train.log") for _, teacher_dir in teachers]
        print(f"Training {n} teachers side by side, {min(processes, n)} at a time, each in a process of its own "
              f"logging to its train.log: {', '.join(teacher_dir for _, teacher_dir in teachers)}")

        def done(i: int) -> None:
            print(f"Teacher {i + 1} of {n} done: {' '.join(side_by_side.log_tail(logs[i], 1))}")

        side_by_side.run(_train_teacher, [(teacher.to_dict(), teacher_dir) for teacher, teacher_dir in teachers],
                         logs, processes=processes, on_done=done)
        return
    for i, (teacher, teacher_dir) in enumerate(teachers, 1):
        print(f"Teacher {i} of {n}: {teacher_dir}")
        train_and_evaluate(teacher, teacher_dir)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains (resuming from the workdir's latest checkpoint if any); returns the last validation metrics.

    With `distill.teacher_configs`, the teachers train first (each resuming too; a finished one is
    only read back; on a CPU side by side, `train_teachers`), then this run learns from them online, as
    with `distill.teacher_models`."""
    if config.train.eval_every_epochs < 1:
        raise ValueError(f"train.eval_every_epochs counts epochs between validations (1: every epoch), got "
                         f"{config.train.eval_every_epochs!r}")
    if teachers := teacher_runs(config, workdir):
        train_teachers(teachers, config.distill.teacher_processes)
        config = ml_collections.ConfigDict(config.to_dict())
        config.distill.teacher_models = ",".join(teacher_dir for _, teacher_dir in teachers)
        config.distill.teacher_configs = ""
    os.makedirs(workdir, exist_ok=True)
    corpora = datasets.training_data(config, workdir)
    class_names = datasets.class_names(corpora)
    mean, std = datasets.normalization(corpora)
    features = corpora[0].dataset.features
    speaker_norm = config.data.transductive_speaker_norm
    weights = datasets.sampling_weights(config, corpora)
    frequencies = datasets.class_frequencies(corpora, class_names, weights)
    class_weights = balanced_class_weights(frequencies) if config.train.class_balance else None
    info = model_info.ModelInfo(class_names=class_names, features=features, mean=mean, std=std,
                                corpora=[{"corpus": c.corpus, "path": c.dataset.path, "splits": c.splits}
                                         for c in corpora], speaker_normalized=speaker_norm,
                                test_time_speeds=tuple(config.inference.test_time_speeds),
                                class_prior=training_prior(frequencies, class_weights),
                                prior_correction=config.inference.prior_correction)
    if jax.process_index() == 0:
        info.save(workdir)
        config_files.save_to_workdir(config, workdir)

    train_sources = datasets.train_sources(corpora, cache_mb=config.data.cache_train_mb)
    global_batch = config.train.batch_size
    if global_batch % jax.device_count():
        raise ValueError(f"train.batch_size={global_batch} is not divisible by the {jax.device_count()} devices")
    steps_per_epoch = max(sum(map(len, train_sources)) // global_batch, 1)
    total_steps = config.train.num_epochs * steps_per_epoch
    tx = create_optimizer(config.optim, total_steps)
    sam_from = sam_start_step(config.optim, total_steps)
    if config.optim.sam_rho:
        print(f"Sharpness-aware minimisation (radius {config.optim.sam_rho}) from step {sam_from} of {total_steps}")
    branch_from = branches.start_step(config.train, total_steps)
    if config.train.branches > 1:
        merged = (f", averaged every {config.train.branch_merge_epochs} epochs" if config.train.branch_merge_epochs
                  else "")
        print(f"{config.train.branches} branches from step {branch_from} of {total_steps}{merged}; the model is "
              f"their average")
    schedule = lr_schedule(config.optim, total_steps)
    # The adversary tells apart every training speaker of every corpus ("corpus/speaker").
    speakers = datasets.training_speakers(corpora) if config.train.speaker_adversary else []
    auxiliary = (auxiliary_task.field_ids(train_sources, config.train.auxiliary_task)
                 if config.train.auxiliary_task else None)
    graphdef, state = create_train_state(config, len(class_names), features, tx, num_speakers=len(speakers),
                                         auxiliary_values=len(auxiliary or ()))
    if config.distill.teachers and config.distill.teacher_models:
        raise ValueError("distill.teachers (predictions files) and distill.teacher_models (trained models read "
                         "online) are two ways to distil: set one")
    if config.distill.teacher_weights and not config.distill.teacher_models:
        raise ValueError(f"distill.teacher_weights={config.distill.teacher_weights!r} weights online teachers: it "
                         "needs distill.teacher_models or distill.teacher_configs")
    if config.distill.warm_start_keep != 1 and not config.distill.warm_start:
        raise ValueError(f"distill.warm_start_keep={config.distill.warm_start_keep} shapes the warm start: it needs "
                         "distill.warm_start=True")
    online_teacher = None
    if config.distill.teacher_models:
        online_teacher = distillation.load_online_teacher(config.distill.teacher_models, config.data.test_fold,
                                                          config.distill.teacher_checkpoint, info,
                                                          config.distill.teacher_weights)
        shares = f", teacher weights {config.distill.teacher_weights}" if config.distill.teacher_weights else ""
        print(f"Distilling online from {online_teacher.checkpoint} (weight {config.distill.weight}, temperature "
              f"{config.distill.temperature}{shares})")
    if config.distill.warm_start:
        if not config.distill.teacher_models:
            raise ValueError("distill.warm_start starts the student from its first online teacher: it needs "
                             "distill.teacher_models or distill.teacher_configs")
        start = distillation.warm_start(config.distill.teacher_models, config.data.test_fold,
                                        config.distill.teacher_checkpoint, config.model.to_dict())
        # The teacher's averaged weights start the weights and their average; the optimiser starts afresh.
        params = distillation.shrink_and_perturb(start.params, state.params, config.distill.warm_start_keep)
        state = state.replace(params=params, ema_params=jax.tree.map(jnp.copy, params),
                              batch_stats=start.batch_stats)
        kept = f"{config.distill.warm_start_keep:g} of " if config.distill.warm_start_keep < 1 else ""
        print(f"Starting from {kept}the weights of {start.checkpoint}")
    steps = Steps(mesh.make_mesh(), graphdef, tx, config, len(class_names), MelBins.of(features, std),
                  total_steps=total_steps, class_weights=class_weights, prior_offset=info.prior_offset(),
                  teacher=online_teacher)
    state = steps.place_state(state)

    teacher_targets = None
    if config.distill.teachers:
        teachers = distillation.teacher_files(config.distill.teachers, config.data.test_fold,
                                              config.distill.cross_fitted)
        teacher_targets = distillation.teacher_targets(teachers, class_names, config.distill.temperature,
                                                       input_pipeline.clip_paths(train_sources))
        print(f"Distilling from {len(teachers)} teachers (weight {config.distill.weight}, temperature "
              f"{config.distill.temperature}): {', '.join('+'.join(t) for t in teachers)}")

    validation = [c.dataset.source(c.splits["validation"]) for c in corpora if c.validated]
    # Each speaker normalised by its own statistics (transductive for the validation speakers).
    speaker_stats = input_pipeline.speaker_statistics(train_sources + validation) if speaker_norm else None
    train_iter = iter(input_pipeline.train_dataset(
        train_sources, mean=mean, std=std, class_names=class_names, max_frames=config.data.max_frames,
        global_batch=global_batch, seed=config.seed, weights=weights,
        worker_threads=config.data.worker_threads, speaker_stats=speaker_stats,
        speaker_ids={s: i for i, s in enumerate(speakers)} if speakers else None, teacher_targets=teacher_targets,
        auxiliary=(config.train.auxiliary_task, auxiliary) if auxiliary else None))
    val_data = (input_pipeline.load_eval_set(validation, mean=mean, std=std, class_names=class_names,
                                             speaker_stats=speaker_stats) if validation else None)
    mngr = checkpoints.manager(workdir, keep_best=config.train.keep_best,
                               extra_handlers={checkpoints.DATA: grain.checkpoint.CheckpointHandler()})
    if mngr.latest_step() is not None:
        step = mngr.latest_step()
        like = (jax.eval_shape(functools.partial(branches.branch, k=config.train.branches), state)
                if step > branch_from else state)
        state = TrainState(**checkpoints.restore_state(
            mngr, step, checkpoints.abstract_like(checkpointed(like), steps.replicated),
            extra={checkpoints.DATA: grain.checkpoint.CheckpointRestore(train_iter)}))
        print(f"Resumed from {mngr.directory}/{step}")

    writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
    try:
        last = _train_loop(steps, state, train_iter, val_data, mngr, writer, config, class_names, schedule,
                           steps_per_epoch=steps_per_epoch, total_steps=total_steps, sam_from=sam_from,
                           branch_from=branch_from)
    finally:  # Also on interruption: never leave an async save half-written.
        mngr.wait_until_finished()
        mngr.close()
        writer.close()
    chance = 1 / len(class_names)
    if val_data is None:
        print(f"Trained {last['step']} steps with no validation speakers (train-only corpora or a refit), so "
              f"the latest checkpoint is the model; checkpoints in {mngr.directory}")
    else:
        print(f"Validation after {last['step']} steps: accuracy {last['val/accuracy']:.1%}, UA {last['val/ua']:.1%} "
              f"(chance {chance:.1%}, {len(class_names)} classes); checkpoints in {mngr.directory}")
    return last

