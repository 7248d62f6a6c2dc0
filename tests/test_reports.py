"""Report files parse back to the metrics they were written from; summary, curves and comparison table."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ser_jax.metrics import classification_metrics, grouped_metrics
from ser_jax.reports import format_summary, plot_training_curves, write_comparison_table, write_eval_report

NAMES = ["neutral", "happy", "sad", "angry"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report() -> dict:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, len(NAMES), 120)
    y_pred = np.where(rng.random(120) < 0.7, y_true, rng.integers(0, len(NAMES), 120))
    speakers = rng.choice(["s1", "s2", "s3"], 120).tolist()
    genders = ["female" if s == "s2" else "male" for s in speakers]
    return {
        "metrics": classification_metrics(y_true, y_pred, NAMES),
        "by_speaker": grouped_metrics(y_true, y_pred, speakers, NAMES),
        "by_gender": grouped_metrics(y_true, y_pred, genders, NAMES),
        "checkpoint": "/tmp/ckpt/100", "step": 100, "split": "test", "excluded": 3,
    }


@pytest.fixture(scope="module")
def written(report, tmp_path_factory) -> dict[str, str]:
    return write_eval_report(str(tmp_path_factory.mktemp("eval") / "nested" / "out"), report)


def _read_csv(path: str) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _read_dicts(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _assert_png(path: str) -> None:
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    assert os.path.getsize(path) > 5000


def test_all_files_written(written):
    assert set(written) == {"json", "confusion_csv", "confusion_normalized_csv", "per_class_csv",
                            "confusion_png", "by_group_csv"}
    assert all(os.path.isfile(p) for p in written.values())
    _assert_png(written["confusion_png"])


def test_json_round_trip(report, written):
    with open(written["json"]) as f:
        assert json.load(f) == report


@pytest.mark.parametrize("kind, key", [("confusion_csv", "confusion"),
                                       ("confusion_normalized_csv", "confusion_normalized")])
def test_confusion_csv(report, written, kind, key):
    rows = _read_csv(written[kind])
    assert rows[0][1:] == NAMES
    assert [r[0] for r in rows[1:]] == NAMES
    np.testing.assert_array_equal(np.array([r[1:] for r in rows[1:]], float), report["metrics"][key])


def test_per_class_csv(report, written):
    rows = _read_dicts(written["per_class_csv"])
    assert [r["class"] for r in rows] == NAMES
    for r in rows:
        expected = report["metrics"]["per_class"][r["class"]]
        assert int(r["support"]) == expected["support"]
        for k in ("precision", "recall", "f1"):
            assert float(r[k]) == expected[k]


def test_by_group_csv(report, written):
    rows = _read_dicts(written["by_group_csv"])
    assert [(r["group_type"], r["group"]) for r in rows] == (
        [("speaker", g) for g in report["by_speaker"]] + [("gender", g) for g in report["by_gender"]])
    for r in rows:
        expected = report["by_" + r["group_type"]][r["group"]]
        assert int(r["num_examples"]) == expected["num_examples"]
        for k in ("accuracy", "ua", "f1_macro"):
            assert float(r[k]) == expected[k]


def test_no_group_csv_without_groups_and_numpy_info(report, tmp_path):
    paths = write_eval_report(str(tmp_path), {"metrics": report["metrics"], "excluded": np.int64(2),
                                              "lengths_s": np.array([1.5, 2.0])})
    with open(paths["json"]) as f:
        info = json.load(f)
    assert (info["excluded"], info["lengths_s"]) == (2, [1.5, 2.0])
    assert "by_group_csv" not in paths
    assert not (tmp_path / "by_group.csv").exists()


def test_summary(report):
    text = format_summary(report)
    m = report["metrics"]
    assert f"accuracy {m['accuracy']:.1%}" in text
    assert f"UA {m['ua']:.1%}" in text
    lines = text.splitlines()
    for name in NAMES:
        row = next(line for line in lines if line.startswith(name + " "))
        assert row.split()[1:] == [f"{m['per_class'][name][k]:.1%}" for k in ("precision", "recall", "f1")] + [
            str(m["per_class"][name]["support"])]
    for group, g in {**report["by_speaker"], **report["by_gender"]}.items():
        row = next(line for line in lines if line.startswith(group + " "))
        assert row.split()[1:3] == [str(g["num_examples"]), f"{g['accuracy']:.1%}"]


def _write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_training_curves(tmp_path):
    rows = [{"step": s, "train/loss": 2.0 / s, "train/accuracy": 1 - 1.0 / s, "train/lr": 1e-3}
            for s in range(1, 41)]
    rows += [{"step": s, "val/loss": 1.0 / s, "val/accuracy": 0.5, "val/ua": 0.4, "epoch": s // 10}
             for s in (10, 20, 30, 40)]
    out = plot_training_curves(_write_jsonl(tmp_path / "metrics.jsonl", rows), str(tmp_path / "curves.png"))
    assert out == str(tmp_path / "curves.png")
    _assert_png(out)


def test_training_curves_train_only(tmp_path):
    rows = [{"step": s, "train/loss": 1.0} for s in range(1, 5)]
    _assert_png(plot_training_curves(_write_jsonl(tmp_path / "m.jsonl", rows), str(tmp_path / "c.png")))


@pytest.mark.parametrize("rows", [[], [{"step": 1, "train/lr": 0.1}], [{"val/loss": 1.0}]])
def test_training_curves_no_usable_rows(tmp_path, rows):
    path = _write_jsonl(tmp_path / "empty.jsonl", rows)
    with pytest.raises(ValueError, match="empty.jsonl"):
        plot_training_curves(path, str(tmp_path / "c.png"))
    assert not (tmp_path / "c.png").exists()


def test_comparison_table(tmp_path):
    rows = [
        {"config": "cnn", "fold": 0, "seed": 0, "accuracy": 0.50, "ua": 0.40},
        {"config": "cnn", "fold": 1, "seed": 0, "accuracy": 0.60, "ua": 0.45},
        {"config": "base", "fold": 0, "seed": 1, "accuracy": 0.70, "ua": 0.65, "f1_macro": 0.6},
        {"config": "cnn", "fold": 0, "seed": 1, "accuracy": 0.65, "ua": 0.50},
        {"config": "cnn", "fold": 0, "seed": 0, "accuracy": 0.90, "ua": 0.90, "transductive": True, "seconds": 90},
    ]
    md = write_comparison_table(rows, str(tmp_path / "t.md"), str(tmp_path / "t.csv"))
    assert (tmp_path / "t.md").read_text() == md
    lines = md.strip().splitlines()
    assert lines[0] == "| config | folds | seeds | accuracy (mean ± std) | UA (mean ± std) | minutes per run |"
    assert len(lines) == 5
    acc, ua = np.array([50.0, 60.0, 65.0]), np.array([40.0, 45.0, 50.0])
    assert lines[2] == (f"| cnn | 2 | 2 | {acc.mean():.1f} ± {acc.std(ddof=1):.1f} "
                        f"| {ua.mean():.1f} ± {ua.std(ddof=1):.1f} | n/a |")
    assert lines[2] == "| cnn | 2 | 2 | 58.3 ± 7.6 | 45.0 ± 5.0 | n/a |"
    assert lines[3] == "| base | 1 | 1 | 70.0 ± n/a | 65.0 ± n/a | n/a |"
    # A transductive run is a row of its own, never averaged into the inductive figures.
    assert lines[4] == "| cnn (transductive) | 1 | 1 | 90.0 ± n/a | 90.0 ± n/a | 1.5 |"

    back = _read_dicts(tmp_path / "t.csv")
    assert len(back) == 5
    assert [r["config"] for r in back] == ["cnn", "cnn", "base", "cnn", "cnn"]
    assert float(back[3]["accuracy"]) == 0.65
    assert back[2]["f1_macro"] == "0.6" and back[0]["f1_macro"] == ""


KEEPS_THE_BACKEND = """
import sys
import matplotlib
from ser_jax.metrics import classification_metrics
from ser_jax.reports import write_eval_report

paths = write_eval_report(sys.argv[1], {"metrics": classification_metrics([0, 1, 1], [0, 1, 0], ["a", "b"])})
print(matplotlib.get_backend(), paths["confusion_png"])
"""


def test_reports_leave_matplotlibs_backend_alone(tmp_path):
    """A notebook's (here: the svg) backend survives importing reports and writing a PNG."""
    proc = subprocess.run([sys.executable, "-c", KEEPS_THE_BACKEND, str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "MPLBACKEND": "svg"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    backend, png = proc.stdout.split()
    assert backend == "svg"
    _assert_png(png)
