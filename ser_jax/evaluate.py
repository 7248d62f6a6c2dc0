"""Evaluation: the eval step and loop (training validates with them too) and `--mode=eval` reports.

The model, its label set, features and normalisation come from the training workdir (restored as
deployment restores them: parameters and batch statistics only); the data from `config.eval`
(default: the training dataset's test split). Examples whose emotion the model was not trained on
are left out and counted, so a model can be evaluated on another corpus's shared labels.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import os

import jax
import ml_collections
import numpy as np
import optax
import tensorflow_datasets as tfds
from flax import nnx

from ser_jax import input_pipeline, metrics, pretrained, reports
from ser_jax.classify import log_probabilities
from ser_jax.ensemble import FIXED_COLUMNS
from ser_jax.mesh import batch_sharding, global_batch, make_mesh, replicated
from ser_jax.metric_writers import METRICS_FILE
from ser_jax.trained_model import TrainedModel
from ser_jax.warping import MelBins

GROUPS = ("speaker", "gender", "corpus")


def eval_step(variables: dict, batch: dict, *, graphdef: nnx.GraphDef, speeds: tuple[float, ...] = (),
              bins: MelBins | None = None, prior_offset: np.ndarray | None = None, crops: int = 0,
              crop_frames: int = 0) -> dict:
    """Logits (log-probabilities, averaged over `speeds` if any and prior-corrected, as deployment
    reads them; over `crops` of clips longer than `crop_frames` if asked) and per-example loss (0 for
    filler rows) with the running BatchNorm statistics."""
    model = nnx.merge(graphdef, variables["params"], variables["batch_stats"])
    logits = log_probabilities(model, batch["mel"], batch["lengths"], speeds=speeds, bins=bins,
                               prior_offset=prior_offset, crops=crops, crop_frames=crop_frames)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    return {"logits": logits, "loss": loss * batch["weight"]}


class Evaluator:
    """The eval step jitted for one mesh (variables replicated, batches split along "data") and its loop."""

    def __init__(self, mesh: jax.sharding.Mesh, graphdef: nnx.GraphDef, *, speeds: tuple[float, ...] = (),
                 bins: MelBins | None = None, prior_offset: np.ndarray | None = None, crops: int = 0,
                 crop_frames: int = 0):
        self.batch_sharding = batch_sharding(mesh)
        self.step = jax.jit(functools.partial(eval_step, graphdef=graphdef, speeds=speeds, bins=bins,
                                              prior_offset=prior_offset, crops=crops, crop_frames=crop_frames),
                            in_shardings=(replicated(mesh), self.batch_sharding), out_shardings=replicated(mesh))

    def logits_and_loss(self, variables: dict, data: input_pipeline.EvalSet, *, batch_size: int,
                        bucket_frames: int) -> tuple[np.ndarray, float]:
        """Logits of every example of `data` in order (each counted once), and the mean loss."""
        batch_size += -batch_size % jax.device_count()  # Every device gets the same number of rows.
        logits = np.zeros((len(data), 0), np.float32)
        loss_sum = 0.0
        for local, ids in input_pipeline.eval_batches(data, global_batch=batch_size, bucket_frames=bucket_frames):
            out = jax.device_get(self.step(variables, global_batch(self.batch_sharding, local)))
            if logits.shape[1] == 0:
                logits = np.zeros((len(data), out["logits"].shape[1]), np.float32)
            keep = ids >= 0
            logits[ids[keep]] = out["logits"][keep]
            loss_sum += float(out["loss"].sum())
        return logits, loss_sum / max(len(data), 1)


def eval_target(config: ml_collections.ConfigDict,
                model: TrainedModel) -> list[tuple[input_pipeline.Dataset, list[str]]]:
    """The datasets and splits `config.eval` names; by default the test splits of every corpus the
    model was trained on (train-only corpora have none)."""
    e = config.eval
    if not (e.data_dir or e.corpus):
        return [(input_pipeline.Dataset(c["path"], tfds.builder_from_directory(c["path"])),
                 [e.split] if e.split else list(c["splits"]["test"]))
                for c in model.info.corpora if e.split or c["splits"].get("test")]
    if not (e.data_dir and e.corpus):
        raise ValueError("Set both config.eval.data_dir and config.eval.corpus (or neither, for the training "
                         f"dataset); got data_dir={e.data_dir!r}, corpus={e.corpus!r}")
    split = e.split or "test"
    return [(input_pipeline.open_dataset(e.data_dir, e.corpus, split=split), [split.rpartition("/")[2]])]


def _write_predictions(path: str, data: input_pipeline.EvalSet, probabilities: np.ndarray, predicted: np.ndarray,
                       class_names: tuple[str, ...]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*FIXED_COLUMNS, *class_names])
        for i in range(len(data)):
            w.writerow([data.metadata["path"][i], data.metadata["speaker"][i], data.metadata["gender"][i],
                        data.metadata["corpus"][i], class_names[data.labels[i]],
                        class_names[predicted[i]], *(f"{p:.6f}" for p in probabilities[i])])


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Evaluates the configured checkpoint on every device of every process; returns the report.

    Reads `config.eval`, `config.train.eval_batch_size` and `config.data.eval_bucket_frames`; the
    model comes from the workdir, or is the packaged model `config.eval.model` (an ensemble of the
    workdir's run and others, say), whose report then lands beside the workdir's own.
    """
    mesh = make_mesh()
    if config.eval.model:
        model = pretrained.load(config.eval.model)
        model = dataclasses.replace(model, **jax.device_put(model.variables, replicated(mesh)))
    else:
        model = TrainedModel.load(workdir, config.eval.checkpoint, sharding=replicated(mesh))
    class_names = model.info.class_names
    targets = eval_target(config, model)
    if not targets:
        raise ValueError(f"{workdir} was trained on train-only corpora alone; name a dataset in config.eval")
    for d, _ in targets:
        if d.features != model.info.features:
            raise ValueError(f"{d.path} was prepared with other features than {workdir} was trained on:\n"
                             f"  dataset {d.features}\n  model   {model.info.features}\n"
                             "prepare it again with the model's (python -m data_prep ... with those flags)")
    scored = [c.strip() for c in config.eval.classes.split(",")] if config.eval.classes else list(class_names)
    if unknown := sorted(set(scored) - set(class_names)):
        raise ValueError(f"config.eval.classes names {unknown}, which the model was not trained on: {list(class_names)}")
    sources = [d.source(s) for d, s in targets]
    # A speaker-normalised model sees each evaluated speaker through that speaker's own (unlabelled)
    # audio: transductive, as its training recorded.
    speaker_stats = input_pipeline.speaker_statistics(sources) if model.info.speaker_normalized else None
    data = input_pipeline.load_eval_set(sources, mean=model.info.mean, std=model.info.std, class_names=class_names,
                                        keep=scored, speaker_stats=speaker_stats)
    where = "; ".join(f"{d.path} split {'+'.join(s)}" for d, s in targets)
    if not len(data):
        raise ValueError(f"Nothing to evaluate in {where}: none of its emotions {sorted(data.left_out)} is in "
                         f"the model's label set {list(class_names)}")
    info = model.info if config.eval.test_time_speeds is None else model.info.with_speeds(config.eval.test_time_speeds)
    if config.eval.prior_correction is not None:
        info = info.with_prior_correction(config.eval.prior_correction)
    crops = config.eval.test_time_crops
    if crops < 0:
        raise ValueError(f"config.eval.test_time_crops must be >= 0 (0 or 1: read each clip whole), got {crops}")
    evaluator = Evaluator(mesh, model.graphdef, speeds=info.test_time_speeds,
                          bins=MelBins.of(info.features, info.std), prior_offset=info.prior_offset(),
                          crops=crops, crop_frames=config.data.max_frames)
    logits, loss = evaluator.logits_and_loss(
        model.variables, data, batch_size=config.train.eval_batch_size, bucket_frames=config.data.eval_bucket_frames)
    # The model chooses among the scored classes only; its probabilities (predictions.csv, which
    # ensembles and pooled scores read) are over those classes, the others 0.
    probabilities = np.asarray(jax.nn.softmax(np.where(np.isin(class_names, scored), logits, -np.inf), axis=-1))
    predicted = probabilities.argmax(-1)
    report = {
        "workdir": os.path.abspath(workdir), "model": config.eval.model or None, "checkpoint": model.checkpoint,
        "step": model.step,
        "datasets": [{"path": d.path, "splits": s} for d, s in targets], "loss": loss,
        "transductive": model.info.speaker_normalized,  # Each test speaker's own audio normalised it.
        "test_time_speeds": list(info.test_time_speeds),
        "prior_correction": info.prior_correction,
        # Clips longer than the training crops read as this many crops of their length (0: whole).
        "test_time_crops": crops if crops > 1 else 0, "crop_frames": config.data.max_frames,
        "left_out": data.left_out,  # Examples whose emotion is outside the model's label set.
        "metrics": metrics.classification_metrics(data.labels, predicted, class_names),
        **{f"by_{g}": metrics.grouped_metrics(data.labels, predicted, data.metadata[g], class_names) for g in GROUPS},
    }
    corpora = sorted(set(data.metadata["corpus"].tolist()))
    if len(corpora) > 1:  # Every metric (confusion matrices too) for each corpus on its own.
        report["per_corpus"] = {c: metrics.classification_metrics(data.labels[data.metadata["corpus"] == c],
                                                                  predicted[data.metadata["corpus"] == c], class_names)
                                for c in corpora}
    name = "+".join(f"{os.path.basename(os.path.dirname(os.path.dirname(d.path)))}_{'+'.join(s)}"
                    for d, s in targets)  # <data_dir>/<corpus>/<config>/<version>
    if config.eval.model:
        name += "_model-" + os.path.basename(os.path.normpath(config.eval.model))
    if info.test_time_speeds != model.info.test_time_speeds:  # Beside the recorded reading, not over it.
        name += "_speeds" + ("-".join(f"{s:g}" for s in info.test_time_speeds) or "1")
    if info.prior_correction != model.info.prior_correction:
        name += f"_prior{info.prior_correction:g}"
    if crops > 1:
        name += f"_crops{crops}"
    out = config.eval.output_dir or os.path.join(workdir, "eval", f"{name}_step{model.step}")
    report["output_dir"] = os.path.abspath(out)  # Its predictions.csv is what an ensemble averages.
    if jax.process_index() == 0:
        files = reports.write_eval_report(out, report)
        _write_predictions(os.path.join(out, "predictions.csv"), data, probabilities, predicted, class_names)
        curves = os.path.join(workdir, METRICS_FILE)
        if os.path.exists(curves) and not config.eval.model:
            reports.plot_training_curves(curves, os.path.join(out, "training_curves.png"))
        print(reports.format_summary(report))
        if data.left_out:
            print(f"Left out (emotions outside the model's label set): {data.left_out}")
        print(f"Report: {files['json']}")
    return report
