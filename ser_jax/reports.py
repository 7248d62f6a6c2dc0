"""Evaluation outputs: JSON/CSV/PNG reports, a console summary, training curves and a cross-run table.

Files are plain (CSV, JSON, PNG, Markdown) so results can be read, diffed and pasted without this code.
Figures are drawn on their own Agg canvas (`_figure`), never through pyplot's global backend, so
importing this module changes nothing for the caller (a notebook keeps its inline plots).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence

import numpy as np
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ser_jax.tables import format_table

GROUP_KEYS = {"by_speaker": "speaker", "by_gender": "gender", "by_corpus": "corpus"}


def _write_csv(path: str, header: Sequence[str], rows: Sequence[Sequence]) -> str:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_matrix_csv(path: str, matrix: Sequence[Sequence], class_names: Sequence[str]) -> str:
    return _write_csv(path, ["true\\predicted", *class_names],
                      [[name, *row] for name, row in zip(class_names, matrix)])


def _figure(figsize: tuple[float, float]) -> Figure:
    """A figure on its own Agg canvas: no pyplot state, no global backend switch."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def plot_confusion(path: str, metrics: dict) -> str:
    names = metrics["class_names"]
    counts = np.asarray(metrics["confusion"])
    size = max(4.0, 0.8 * len(names) + 2)
    fig = _figure((size + 1, size))
    ax = fig.subplots()
    sns.heatmap(np.asarray(metrics["confusion_normalized"]), annot=counts, fmt="d", cmap="Blues",
                vmin=0.0, vmax=1.0, square=True, xticklabels=names, yticklabels=names, ax=ax,
                cbar_kws={"label": "fraction of true class"})
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"accuracy {metrics['accuracy']:.1%}, UA {metrics['ua']:.1%} (n={metrics['num_examples']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def _to_builtin(obj):
    """numpy scalars and arrays in the free-form report keys, as JSON-ready Python values."""
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _group_rows(report: dict) -> list[list]:
    return [[group_type, group, m["num_examples"], m["accuracy"], m["ua"], m["f1_macro"]]
            for key, group_type in GROUP_KEYS.items()
            for group, m in report.get(key, {}).items()]


def write_eval_report(output_dir: str, report: dict) -> dict[str, str]:
    """Writes the full report as JSON plus CSV/PNG views of it; returns {kind: path}.

    `report["metrics"]` is a `classification_metrics` dict; optional "by_speaker"/"by_gender"/"by_corpus"
    hold `grouped_metrics` dicts; any other keys (checkpoint, split, ...) go into report.json as they are.
    """
    os.makedirs(output_dir, exist_ok=True)
    m = report["metrics"]
    names = m["class_names"]
    paths = {"json": os.path.join(output_dir, "report.json")}
    with open(paths["json"], "w") as f:
        json.dump(report, f, indent=1, default=_to_builtin)
    paths["confusion_csv"] = write_matrix_csv(os.path.join(output_dir, "confusion_matrix.csv"), m["confusion"], names)
    paths["confusion_normalized_csv"] = write_matrix_csv(
        os.path.join(output_dir, "confusion_matrix_normalized.csv"), m["confusion_normalized"], names)
    paths["per_class_csv"] = _write_csv(
        os.path.join(output_dir, "per_class.csv"), ["class", "precision", "recall", "f1", "support"],
        [[n, *(m["per_class"][n][k] for k in ("precision", "recall", "f1", "support"))] for n in names])
    paths["confusion_png"] = plot_confusion(os.path.join(output_dir, "confusion_matrix.png"), m)
    group_rows = _group_rows(report)
    if group_rows:
        paths["by_group_csv"] = _write_csv(
            os.path.join(output_dir, "by_group.csv"),
            ["group_type", "group", "num_examples", "accuracy", "ua", "f1_macro"], group_rows)
    return paths


def format_summary(report: dict) -> str:
    """Human-readable text of a report: headline figures, per-class rows and the group breakdowns."""
    m = report["metrics"]
    lines = [
        f"examples {m['num_examples']}  accuracy {m['accuracy']:.1%}  UA {m['ua']:.1%}"
        + ("  (TRANSDUCTIVE: per-speaker normalisation)" if report.get("transductive") else ""),
        f"macro precision {m['precision_macro']:.1%}  recall {m['recall_macro']:.1%}  F1 {m['f1_macro']:.1%}"
        f"  weighted F1 {m['f1_weighted']:.1%}",
        "",
        *format_table(["class", "precision", "recall", "F1", "support"],
                [[n, f"{c['precision']:.1%}", f"{c['recall']:.1%}", f"{c['f1']:.1%}", str(c["support"])]
                 for n, c in m["per_class"].items()]),
    ]
    for key, group_type in GROUP_KEYS.items():
        if report.get(key):
            lines += ["", *format_table([group_type, "examples", "accuracy", "UA", "macro F1"],
                                  [[str(g), str(r["num_examples"]), f"{r['accuracy']:.1%}", f"{r['ua']:.1%}",
                                    f"{r['f1_macro']:.1%}"] for g, r in report[key].items()])]
    return "\n".join(lines)


def _read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [row for row in (json.loads(s) for s in f if s.strip()) if "step" in row]


def _series(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = sorted((r["step"], r[key]) for r in rows if key in r)  # A resumed run appends earlier steps again.
    return np.asarray(pts, np.float64).reshape(-1, 2).T


_LOSS_KEYS = ("train/loss", "val/loss")
_ACC_KEYS = ("train/accuracy", "val/accuracy", "val/ua")


def _epoch_axis(ax, rows: list[dict]) -> None:
    """Top x-axis in epochs; epochs are a fixed number of steps, fitted from the rows that log both."""
    steps, epochs = _series(rows, "epoch")
    if not (epochs > 0).any():
        return
    steps_per_epoch = float(steps @ epochs / (epochs @ epochs))
    ax.secondary_xaxis("top", functions=(lambda s: s / steps_per_epoch,
                                         lambda e: e * steps_per_epoch)).set_xlabel("epoch")


def plot_training_curves(metrics_jsonl: str, out_png: str) -> str:
    """Loss and accuracy/UA against step from a trainer's metrics.jsonl, to judge fit and overfitting."""
    rows = _read_jsonl(metrics_jsonl)
    if not any(k in r for r in rows for k in _LOSS_KEYS + _ACC_KEYS):
        raise ValueError(f"{metrics_jsonl} holds no rows with a step and a train/val loss or accuracy")
    fig = _figure((12, 4.5))
    axes = fig.subplots(1, 2)
    for ax, keys, ylabel in ((axes[0], _LOSS_KEYS, "loss"), (axes[1], _ACC_KEYS, "accuracy / UA")):
        for key in keys:
            x, y = _series(rows, key)
            if x.size:
                ax.plot(x, y, marker="o" if key.startswith("val/") else None, markersize=3, label=key)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
        _epoch_axis(ax, rows)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    return out_png


def _mean_std(values: Sequence[float]) -> str:
    v = 100 * np.asarray(values, np.float64)
    std = f"{v.std(ddof=1):.1f}" if len(v) > 1 else "n/a"
    return f"{v.mean():.1f} ± {std}"


def write_comparison_table(rows: list[dict], out_md: str, out_csv: str) -> str:
    """Per-run CSV plus a Markdown table of mean ± sample std per config, to compare setups across folds/seeds."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(out_csv, "w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        w.writerows(rows)
    by_config: dict[str, list[dict]] = {}
    for r in rows:  # Transductive runs (per-speaker normalisation) are never averaged with inductive ones.
        by_config.setdefault(r["config"] + (" (transductive)" if r.get("transductive") else ""), []).append(r)
    lines = ["| config | folds | seeds | accuracy (mean ± std) | UA (mean ± std) | minutes per run |",
             "|---|---|---|---|---|---|"]
    for config, runs in by_config.items():
        seconds = [r["seconds"] for r in runs if r.get("seconds")]
        minutes = f"{np.mean(seconds) / 60:.1f}" if seconds else "n/a"
        seeds = {s for r in runs for s in str(r["seed"]).split("+")}  # An ensemble row's seed: "0+1+2".
        lines.append(f"| {config} | {len({r['fold'] for r in runs})} | {len(seeds)} "
                     f"| {_mean_std([r['accuracy'] for r in runs])} | {_mean_std([r['ua'] for r in runs])} "
                     f"| {minutes} |")
    md = "\n".join(lines) + "\n"
    with open(out_md, "w") as f:
        f.write(md)
    return md
