"""Package boundaries, read from the source: what may import what (see README, Layout)."""

from __future__ import annotations

import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
# Modules that import nothing else of ours: both data_prep and every part of ser_jax build on them.
LEAVES = {"ser_jax/features.py", "ser_jax/audio.py", "ser_jax/dataset_format.py", "ser_jax/tables.py",
          "ser_jax/host_memory.py", "ser_jax/xla_cpu.py", "ser_jax/side_by_side.py"}
PREPARES_ON_DEMAND = "ser_jax/datasets.py"  # The one place a training run calls data_prep.
# ser_jax's layers, lowest first; a module imports from its own layer or lower ones (README, Layout).
LAYERS = {
    "leaves": ["features", "audio", "dataset_format", "tables", "host_memory", "xla_cpu", "side_by_side"],
    "inference": ["classify", "predictor", "pretrained", "trained_model", "checkpoints", "model_info", "mesh",
                  "batching", "config_files", "models", "streaming", "export", "serving", "predict", "serve", "warping"],
    "evaluation": ["evaluate", "input_pipeline", "metrics", "reports", "metric_writers", "ensemble", "paired"],
    "training": ["main", "train", "branches", "datasets", "augment", "speaker_adversary", "auxiliary_task",
                 "distillation", "compare", "__init__"],
}
RANK = {f"ser_jax.{m}": rank for rank, modules in enumerate(LAYERS.values()) for m in modules}


def layer_of(module: str) -> int:
    """The rank of `ser_jax.x` or `ser_jax.x.y` (a package counts as one module)."""
    return RANK[".".join(module.split(".")[:2])]


def imports(path: pathlib.Path) -> set[str]:
    """Every module an `import` or `from ... import` in the file names (absolute imports only)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def ours(names: set[str]) -> set[str]:
    return {n for n in names if n.split(".")[0] in ("ser_jax", "data_prep", "configs")}


def files(package: str) -> list[pathlib.Path]:
    return sorted((REPO / package).rglob("*.py"))


def test_ser_jax_calls_data_prep_in_one_place_only():
    users = {str(f.relative_to(REPO)) for f in files("ser_jax")
             if any(n.split(".")[0] == "data_prep" for n in imports(f))}
    assert users == {PREPARES_ON_DEMAND}


def test_data_prep_builds_on_ser_jax_leaf_modules_only():
    leaf_modules = {f[:-3].replace("/", ".") for f in LEAVES}
    for f in files("data_prep"):
        used = {".".join(n.split(".")[:2]) for n in imports(f) if n.startswith("ser_jax.")}
        assert used <= leaf_modules, (f, used - leaf_modules)


def test_leaf_modules_import_nothing_of_ours():
    for leaf in LEAVES:
        assert not ours(imports(REPO / leaf)), leaf


def test_ser_jax_imports_point_down_the_layers():
    for f in files("ser_jax"):
        module = ".".join(f.relative_to(REPO).with_suffix("").parts)
        rank = layer_of(module)  # A new module must be given a layer above.
        upward = {n for n in imports(f) if n.startswith("ser_jax.") and n.split(".")[1] in
                  {m.split(".")[1] for m in RANK} and layer_of(n) > rank}
        assert not upward, (module, upward)
