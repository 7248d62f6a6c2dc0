"""Where run configs come from: a Python config file, or the `config.json` a training run saved
(read, like the workdir's other JSON files, through `read_workdir_json`)."""

from __future__ import annotations

import importlib.util
import json
import os

import ml_collections

CONFIG_JSON = "config.json"


def load_py(path: str) -> ml_collections.ConfigDict:
    """`get_config()` of a config file such as configs/cnn_bilstm.py."""
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def save_to_workdir(config: ml_collections.ConfigDict, workdir: str) -> str:
    path = os.path.join(workdir, CONFIG_JSON)
    with open(path, "w") as f:
        f.write(config.to_json_best_effort(indent=1))
    return path


def read_workdir_json(workdir: str, name: str) -> dict:
    """A JSON file that training wrote into `workdir`; a clear error where there is none."""
    path = os.path.join(workdir, name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: {workdir!r} is not a ser_jax training workdir")
    with open(path) as f:
        return json.load(f)


def load_from_workdir(workdir: str) -> ml_collections.ConfigDict:
    """The config a training run in `workdir` was started with."""
    return ml_collections.ConfigDict(read_workdir_json(workdir, CONFIG_JSON))
