"""`--mode=eval`: a checkpoint's metrics on any prepared dataset split, written as files and plots.

The model, its label set, features and normalisation come from the training workdir; the data from
`config.eval` (default: the training dataset's test split). Examples whose emotion the model was not
trained on are left out and counted, so a model can be evaluated on another corpus's shared labels.
"""

from __future__ import annotations

import csv
import os

import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from jax.sharding import NamedSharding, PartitionSpec as P

from ser_jax.features import mel_center_frequencies
from ser_jax import input_pipeline, metrics, reports, train
from ser_jax.metric_writers import METRICS_FILE
from ser_jax.trained_model import TrainedModel

GROUPS = ("speaker", "gender", "corpus")


def eval_target(config: ml_collections.ConfigDict, model: TrainedModel) -> tuple[input_pipeline.Dataset, list[str]]:
    """The dataset and splits `config.eval` names, defaulting to what the model was trained and tested on."""
    e = config.eval
    if not (e.data_dir or e.corpus):
        dataset = input_pipeline.Dataset(model.info.dataset, tfds.builder_from_directory(model.info.dataset))
        return dataset, [e.split] if e.split else list(model.info.splits["test"])
    if not (e.data_dir and e.corpus):
        raise ValueError("Set both config.eval.data_dir and config.eval.corpus (or neither, for the training "
                         f"dataset); got data_dir={e.data_dir!r}, corpus={e.corpus!r}")
    split = e.split or "test"
    return input_pipeline.open_dataset(e.data_dir, e.corpus, split=split), [split]


def _write_predictions(path: str, data: input_pipeline.EvalSet, probabilities: np.ndarray,
                       class_names: tuple[str, ...]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "speaker", "gender", "corpus", "true", "predicted", *class_names])
        for i in range(len(data)):
            w.writerow([data.metadata["path"][i], data.metadata["speaker"][i], data.metadata["gender"][i],
                        data.metadata["corpus"][i], class_names[data.labels[i]],
                        class_names[int(probabilities[i].argmax())], *(f"{p:.6f}" for p in probabilities[i])])


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Evaluates the configured checkpoint on every device of every process; returns the report."""
    mesh = train.make_mesh()
    model = TrainedModel.load(workdir, config.eval.checkpoint, sharding=NamedSharding(mesh, P()))
    class_names = model.info.class_names
    dataset, split_names = eval_target(config, model)
    data = input_pipeline.load_eval_set(dataset.source(split_names), mean=model.info.mean, std=model.info.std,
                                        class_names=class_names)
    where = f"{dataset.path} split {'+'.join(split_names)}"
    if not len(data):
        raise ValueError(f"Nothing to evaluate in {where}: none of its emotions {sorted(data.left_out)} is in "
                         f"the model's label set {list(class_names)}")
    steps = train.Steps(mesh, model.graphdef, train.create_optimizer(config.optim, 1), config, len(class_names),
                        mel_center_frequencies(model.info.features))
    logits, loss = train.predict(steps, model.state, data, batch_size=config.train.eval_batch_size,
                                 bucket_frames=config.data.eval_bucket_frames)
    predicted = logits.argmax(-1)
    report = {
        "workdir": os.path.abspath(workdir), "checkpoint": model.checkpoint, "step": model.step,
        "dataset": dataset.path, "splits": split_names, "loss": loss,
        "left_out": data.left_out,  # Examples whose emotion is outside the model's label set.
        "metrics": metrics.classification_metrics(data.labels, predicted, class_names),
        **{f"by_{g}": metrics.grouped_metrics(data.labels, predicted, data.metadata[g], class_names) for g in GROUPS},
    }
    if jax.process_index() == 0:
        corpus = os.path.basename(os.path.dirname(os.path.dirname(dataset.path)))  # <data_dir>/<corpus>/<config>/<version>
        out = config.eval.output_dir or os.path.join(
            workdir, "eval", f"{corpus}_{'+'.join(split_names)}_step{model.step}")
        files = reports.write_eval_report(out, report)
        probabilities = np.asarray(jax.nn.softmax(logits, axis=-1))
        _write_predictions(os.path.join(out, "predictions.csv"), data, probabilities, class_names)
        curves = os.path.join(workdir, METRICS_FILE)
        if os.path.exists(curves):
            reports.plot_training_curves(curves, os.path.join(out, "training_curves.png"))
        print(reports.format_summary(report))
        if data.left_out:
            print(f"Left out (emotions outside the model's label set): {data.left_out}")
        print(f"Report: {files['json']}")
    return report
