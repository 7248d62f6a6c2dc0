"""Speaker-independent k-fold comparison of model configs: one command, a Markdown table, a CSV and
each config's confusion matrix pooled over its test folds.

    python -m ser_jax.compare --configs=configs/cnn_only.py,configs/lstm_only.py,configs/cnn_bilstm_plain.py \\
        --corpus=ravdess --source_dir=../shared/data/ravdess --folds=6 --workdir=workdir/compare

(the seed's three models under one recipe; `--configs=configs/cnn_bilstm.py`, the recommended model,
trains each round's two teachers before its student).

Each round i of the cross-validation tests on speaker fold i, selects the checkpoint on fold i+1
(validation UA) and trains on the rest, so no speaker is ever in two roles in one round. Rounds and
seeds run one after another: on CPUs a vmapped ensemble costs as much compute as the runs it
replaces, so sequential runs lose nothing there and each run stays an ordinary, resumable workdir
(an interrupted comparison picks up where it stopped).
"""

from __future__ import annotations

import ast
import json
import os
import time
from collections.abc import Sequence

from absl import app, flags, logging

from ser_jax import config_files

flags.DEFINE_list("configs", ["configs/cnn_only.py", "configs/lstm_only.py", "configs/cnn_bilstm_plain.py"],
                  "Config files to compare.")
flags.DEFINE_string("workdir", None, "One sub-workdir per config, fold and seed goes here.", required=True)
flags.DEFINE_string("corpus", "synthetic", "Corpus name, as for data_prep.")
flags.DEFINE_string("source_dir", "", "The corpus as downloaded (prepared into --data_dir first).")
flags.DEFINE_string("data_dir", "", "Where the folds dataset is (or is prepared); default <workdir>/data.")
flags.DEFINE_integer("folds", 5, "Speaker folds (>= 3).")
flags.DEFINE_list("seeds", ["0"], "Training seeds; every fold is trained once per seed, and with several the "
                  "table adds a row for their ensemble (mean probabilities).")
flags.DEFINE_list("only_folds", [], "Run just these rounds (default: all); e.g. to split the work over machines.")
flags.DEFINE_multi_string("set", [], "Config overrides for every run, e.g. --set=train.num_epochs=20.")
flags.DEFINE_string("against", "", "A finished comparison's workdir (DIR, or DIR:CONFIG where it ran several "
                    "configs) to pair every config's runs with, fold by fold and seed by seed: the lever's "
                    "differences, their 95% interval and paired t, in paired_<config>.md beside the table.")
FLAGS = flags.FLAGS

RESULTS = "results.jsonl"


def _override(config, assignment: str) -> None:
    """Applies one `key.path=value` (a Python literal, or raw text for string keys)."""
    key, _, value = assignment.partition("=")
    *path, leaf = key.split(".")
    node = config
    for part in path:
        node = node[part]
    if leaf not in node:
        raise KeyError(f"--set {assignment!r}: no config key {key!r}")
    node[leaf] = value if node.get_type(leaf) is str else ast.literal_eval(value)


def config_name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def run_config(path: str, fold: int, seed: int):
    config = config_files.load_py(path)
    with config.unlocked():
        config.seed = seed
        config.data.update(corpus=FLAGS.corpus, source_dir=FLAGS.source_dir,
                           data_dir=FLAGS.data_dir or os.path.join(FLAGS.workdir, "data"),
                           folds=FLAGS.folds, test_fold=fold)
        for assignment in FLAGS.set:
            _override(config, assignment)
    return config


def _done(results_path: str) -> dict[tuple, dict]:
    if not os.path.exists(results_path):
        return {}
    with open(results_path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {(r["config"], r["fold"], r["seed"]): r for r in rows}


def reference_runs(against: str, folds: Sequence[int]) -> tuple[str, list[dict]]:
    """`--against` -> its name and its runs, checked before any training: they must exist, be of one
    config, and test at least one of `folds`."""
    workdir, _, config = against.rpartition(":") if ":" in against else (against, "", "")
    results = os.path.join(workdir, RESULTS)
    if not os.path.exists(results):
        raise app.UsageError(f"--against={against}: {results} does not exist (no comparison ran there)")
    runs = list(_done(results).values())
    configs = sorted({r["config"] for r in runs})
    if not config:
        if len(configs) > 1:
            raise app.UsageError(f"--against={against}: {results} holds configs {configs}; name one as DIR:CONFIG")
        config = configs[0] if configs else ""
    runs = [r for r in runs if r["config"] == config]
    if not runs:
        raise app.UsageError(f"--against={against}: {results} has no runs of config {config!r} (it has {configs})")
    if not {r["fold"] for r in runs} & set(folds):
        raise app.UsageError(f"--against={against}: its runs test folds {sorted({r['fold'] for r in runs})}, "
                             f"none of this comparison's {sorted(folds)}")
    return f"{workdir} ({config})", runs


def _run(path: str, name: str, fold: int, seed: int) -> dict:
    """Trains one round (resuming if its workdir has checkpoints) and tests its best checkpoint."""
    from ser_jax import evaluate, train

    config = run_config(path, fold, seed)
    workdir = os.path.join(FLAGS.workdir, name, f"fold{fold}_seed{seed}")
    start = time.perf_counter()
    train.train_and_evaluate(config, workdir)
    report = evaluate.evaluate(config, workdir)
    m = report["metrics"]
    return {"config": name, "fold": fold, "seed": seed, "accuracy": m["accuracy"], "ua": m["ua"],
            "f1_macro": m["f1_macro"], "test_examples": m["num_examples"], "best_step": report["step"],
            "transductive": report["transductive"], "seconds": round(time.perf_counter() - start, 1),
            "workdir": workdir, "predictions": os.path.join(report["output_dir"], "predictions.csv")}


def ensemble_rows(rows: list[dict]) -> list[dict]:
    """A row "NAME (ensemble)" per config and fold run with several seeds: the seeds' mean probabilities
    on the test fold, scored; its seconds are those of all its runs. With several configs, also a row
    "A+B (ensemble)" per fold: every run of every config on that fold, so models that err differently
    (a CNN-BiLSTM and a Conformer) vote together. A group with a run recorded before result rows named
    their predictions file gets no ensemble row, only a warning."""
    from ser_jax import ensemble

    groups: dict[tuple, list[dict]] = {}
    configs = list(dict.fromkeys(r["config"] for r in rows))
    for r in rows:
        groups.setdefault((r["config"], r["fold"], bool(r.get("transductive"))), []).append(r)
        if len(configs) > 1:
            groups.setdefault(("+".join(configs), r["fold"], bool(r.get("transductive"))), []).append(r)
    out = []
    for (name, fold, transductive), runs in groups.items():
        if len(runs) < 2:
            continue
        if unnamed := [r["workdir"] for r in runs if not r.get("predictions")]:
            logging.warning("No ensemble for %s fold %d: %s recorded no predictions file", name, fold, unnamed)
            continue
        m = ensemble.ensemble_metrics([r["predictions"] for r in runs])
        out.append({"config": f"{name} (ensemble)", "fold": fold, "seed": "+".join(str(r["seed"]) for r in runs),
                    "accuracy": m["accuracy"], "ua": m["ua"], "f1_macro": m["f1_macro"],
                    "test_examples": m["num_examples"], "transductive": transductive,
                    "seconds": round(sum(r.get("seconds") or 0.0 for r in runs), 1)})
    return out


def write_pooled_confusions(rows: list[dict], workdir: str) -> None:
    """confusion_<config>.png and .csv: every test fold of a config's runs in one confusion matrix (the
    folds' clips are disjoint, so each clip counts once per seed). Transductive runs get their own."""
    from ser_jax import ensemble, reports

    groups: dict[str, list[str]] = {}
    for r in rows:
        if r.get("predictions"):
            groups.setdefault(r["config"] + ("_transductive" if r.get("transductive") else ""), []).append(
                r["predictions"])
    for name, paths in groups.items():
        m = ensemble.pooled_metrics(paths)
        stem = os.path.join(workdir, f"confusion_{name}")
        reports.write_matrix_csv(stem + ".csv", m["confusion"], m["class_names"])
        reports.plot_confusion(stem + ".png", m)


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from ser_jax import host_memory, xla_cpu

    host_memory.retain_freed_memory()  # Before JAX starts its threads.
    xla_cpu.prefer_xla_convolutions()  # Before XLA's CPU client starts.
    from ser_jax import paired, reports

    folds = [int(f) for f in FLAGS.only_folds] if FLAGS.only_folds else list(range(FLAGS.folds))
    reference = reference_runs(FLAGS.against, folds) if FLAGS.against else None
    os.makedirs(FLAGS.workdir, exist_ok=True)
    results_path = os.path.join(FLAGS.workdir, RESULTS)
    done = _done(results_path)
    rows = []
    # Folds outermost: a comparison stopped early still has every config on the same folds.
    for seed in map(int, FLAGS.seeds):
        for fold in folds:
            for path in FLAGS.configs:
                name = config_name(path)
                key = (name, fold, seed)
                if key not in done:
                    done[key] = _run(path, name, fold, seed)
                    with open(results_path, "a") as f:
                        f.write(json.dumps(done[key]) + "\n")
                rows.append(done[key])
    rows.sort(key=lambda r: [config_name(p) for p in FLAGS.configs].index(r["config"]))
    write_pooled_confusions(rows, FLAGS.workdir)
    paired_tables = [paired.write_paired_table(
        [r for r in rows if r["config"] == name], reference[1],
        os.path.join(FLAGS.workdir, f"paired_{name}.md"), os.path.join(FLAGS.workdir, f"paired_{name}.csv"),
        name=name, reference_name=reference[0]) for name in dict.fromkeys(r["config"] for r in rows)
    ] if reference else []
    rows += ensemble_rows(rows)  # With several seeds: what averaging them buys, beside the single runs.
    table = reports.write_comparison_table(rows, os.path.join(FLAGS.workdir, "comparison.md"),
                                           os.path.join(FLAGS.workdir, "comparison.csv"))
    print(table)
    for paired_table in paired_tables:
        print(paired_table)
    print(f"Per-fold figures: {os.path.join(FLAGS.workdir, 'comparison.csv')}")


if __name__ == "__main__":
    app.run(main)
