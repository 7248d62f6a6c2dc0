"""Models shipped inside the package: `Predictor.from_pretrained(NAME)` and `--model NAME` work on a
fresh install, with no training run and no download.

A packaged model is a folder `ser_jax/pretrained/<NAME>/` holding `model_info.json` (labels,
features, normalisation, what it was trained on), `model.json` (the model config) and
`weights.npz` (parameters and BatchNorm statistics, one array per variable path), plus a
`MODEL_CARD.md` for people. NumPy's npz keeps the folder small, readable without Orbax and stable
across JAX versions.

    python -m ser_jax.pretrained                                    # lists the packaged models
    python -m ser_jax.pretrained --workdir DIR --name NAME [--checkpoint best] [--card card.md]
    python -m ser_jax.pretrained --workdir DIR1,DIR2,DIR3 --name NAME  # their ensemble, as one model
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Mapping, Sequence

import jax
import ml_collections
import numpy as np
from flax import nnx

from ser_jax.model_info import ModelInfo
from ser_jax.trained_model import TrainedModel, abstract_model, ensemble

PACKAGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained")
WEIGHTS, MODEL_CONFIG, CARD = "weights.npz", "model.json", "MODEL_CARD.md"


def available() -> list[str]:
    """Names of the packaged models."""
    if not os.path.isdir(PACKAGE_DIR):
        return []
    return sorted(n for n in os.listdir(PACKAGE_DIR) if os.path.exists(os.path.join(PACKAGE_DIR, n, WEIGHTS)))


def _leaves(prefix: str, state: nnx.State) -> tuple[list[tuple[str, object]], object]:
    """(("params/blocks/0/conv/kernel", leaf), ...) in tree order, and the tree's structure."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(state))
    keys = ["/".join([prefix, *(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)]) for path, _ in leaves]
    return list(zip(keys, (leaf for _, leaf in leaves))), treedef


def save(model: TrainedModel, model_config: ml_collections.ConfigDict | Mapping, out_dir: str,
         card: str | None = None) -> str:
    """Writes `model` as a packaged model folder (replacing one that is there)."""
    if model.info.speaker_normalized:
        raise ValueError("a model trained with transductive per-speaker normalisation cannot be packaged: "
                         "it needs each speaker's other clips, which prediction does not have")
    staging = out_dir.rstrip("/") + ".incomplete"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    model.info.save(staging)
    with open(os.path.join(staging, MODEL_CONFIG), "w") as f:
        config = model_config.to_dict() if isinstance(model_config, ml_collections.ConfigDict) else model_config
        json.dump({"config": config, "step": model.step}, f, indent=1)
    np.savez_compressed(os.path.join(staging, WEIGHTS), **{
        k: np.asarray(v) for prefix, state in (("params", model.params), ("batch_stats", model.batch_stats))
        for k, v in _leaves(prefix, state)[0]})
    if card:
        with open(os.path.join(staging, CARD), "w") as f:
            f.write(card)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(staging, out_dir)
    return out_dir


def load(name_or_dir: str) -> TrainedModel:
    """A packaged model by name (or the path of such a folder)."""
    folder = name_or_dir if os.path.isdir(name_or_dir) else os.path.join(PACKAGE_DIR, name_or_dir)
    if not os.path.exists(os.path.join(folder, WEIGHTS)):
        raise FileNotFoundError(f"No packaged model {name_or_dir!r}; available: {available() or 'none'} "
                                f"(or give the path of a folder written by `python -m ser_jax.pretrained`)")
    info = ModelInfo.load(folder)
    with open(os.path.join(folder, MODEL_CONFIG)) as f:
        meta = json.load(f)
    graphdef, params, batch_stats = abstract_model(meta["config"], info)
    with np.load(os.path.join(folder, WEIGHTS)) as weights:
        stored = dict(weights)
    for prefix, state in (("params", params), ("batch_stats", batch_stats)):
        leaves, treedef = _leaves(prefix, state)
        bad = [k for k, leaf in leaves if k not in stored or stored[k].shape != leaf.shape]
        if bad:
            raise ValueError(f"{folder}/{WEIGHTS} does not fit its model config: missing or misshapen {bad[:5]}")
        nnx.replace_by_pure_dict(state, jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(stored[k])
                                                                              for k, _ in leaves]))
    return TrainedModel(info, graphdef, params, batch_stats, step=meta["step"], checkpoint=folder)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ser_jax.pretrained", description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", help="training workdir to package, or several (comma-separated) to package "
                                     "their ensemble (without it: list the packaged models)")
    p.add_argument("--checkpoint", default="best", help="'best', 'latest' or a step number")
    p.add_argument("--name", help="the packaged model's name")
    p.add_argument("--out_dir", default=PACKAGE_DIR, help="where packaged models live")
    p.add_argument("--card", help="a Markdown model card to ship with it")
    args = p.parse_args(argv)
    if not args.workdir:
        print("\n".join(available()) or f"no packaged models in {PACKAGE_DIR}")
        return 0
    if not args.name:
        p.error("--name is required with --workdir")
    from absl import logging

    from ser_jax import config_files

    logging.set_verbosity(logging.ERROR)
    workdirs = [w for w in args.workdir.split(",") if w]
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    models = [TrainedModel.load(w, args.checkpoint, sharding=device) for w in workdirs]
    configs = [config_files.load_from_workdir(w).model.to_dict() for w in workdirs]
    model, config = (models[0], configs[0]) if len(models) == 1 else ensemble(models, configs)
    card = None
    if args.card:
        with open(args.card) as f:
            card = f.read()
    out = save(model, config, os.path.join(args.out_dir, args.name), card)
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)) / 2**20
    what = ", ".join(f"step {m.step} of {w}" for m, w in zip(models, workdirs))
    print(f"Packaged {what}{' as one ensemble' if len(models) > 1 else ''}: {out} ({size:.2f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
