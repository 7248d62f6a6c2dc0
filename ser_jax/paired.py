"""A lever against a reference, fold by fold: the comparison that can tell a change from the noise.

Folds of 3 speakers differ by 20 points of UA and seeds of one recipe by 3, so two means ± their std
over folds overlap for every lever worth trying. Differences taken on the same fold (and seed: the
same initialisation and batches) remove the folds' spread, and their mean, its 95% interval, how many
went up and down and the paired t say whether what is left is more than one run's noise.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence

import numpy as np
from scipy import stats

LEVEL = 1e-9  # Closer than this (as a fraction of UA) is level: the same decisions, read the same way.


def summarise(differences: Sequence[float]) -> dict:
    """Differences (points of UA) -> n, mean, sample std, the mean's 95% interval, up / level / down,
    the paired t and its two-sided p (None where fewer than two or all equal)."""
    d = np.asarray(differences, np.float64)
    out = {"n": len(d), "mean": float(d.mean()) if len(d) else None,
           "std": float(d.std(ddof=1)) if len(d) > 1 else None,
           "up": int((d > 100 * LEVEL).sum()), "down": int((d < -100 * LEVEL).sum()),
           "ci95": None, "t": None, "p": None}
    out["level"] = out["n"] - out["up"] - out["down"]
    if out["std"]:
        se = out["std"] / np.sqrt(len(d))
        half = float(stats.t.ppf(0.975, len(d) - 1) * se)
        out.update(ci95=(out["mean"] - half, out["mean"] + half), t=out["mean"] / se,
                   p=float(2 * stats.t.sf(abs(out["mean"] / se), len(d) - 1)))
    return out


def _key(row: dict) -> tuple:
    return int(row["fold"]), int(row["seed"]), bool(row.get("transductive"))


def matched_runs(runs: Sequence[dict], reference: Sequence[dict]) -> list[tuple[dict, dict]]:
    """(run, reference run) for every fold and seed both have (transductive runs only with their own
    kind), in fold then seed order."""
    ref = {_key(r): r for r in reference}
    return sorted(((r, ref[_key(r)]) for r in runs if _key(r) in ref), key=lambda p: _key(p[0]))


def fold_means(rows: Sequence[dict]) -> dict[tuple[int, bool], float]:
    """(fold, transductive) -> the mean UA (points) over every seed run on it."""
    by_fold: dict[tuple[int, bool], list[float]] = {}
    for r in rows:
        by_fold.setdefault((int(r["fold"]), bool(r.get("transductive"))), []).append(100 * float(r["ua"]))
    return {k: float(np.mean(v)) for k, v in sorted(by_fold.items())}


def _figure(value, spec: str = "+.1f") -> str:
    return "n/a" if value is None else format(value, spec)


def _summary_row(what: str, s: dict) -> str:
    ci = "n/a" if s["ci95"] is None else f"{s['ci95'][0]:+.1f} to {s['ci95'][1]:+.1f}"
    return (f"| {what} | {s['n']} | {_figure(s['mean'])} | {ci} | {s['up']} / {s['level']} / {s['down']} "
            f"| {_figure(s['t'], '.2f')} | {_figure(s['p'], '.3f')} |")


def write_paired_table(runs: Sequence[dict], reference: Sequence[dict], out_md: str, out_csv: str, *,
                       name: str, reference_name: str) -> str:
    """Markdown (returned and written) and CSV of `runs` (one config's) against `reference`: every
    matched run's UA and difference, then a summary over the runs matched on fold and seed and, where
    some run on those folds has no partner, one over the folds (each side's mean over its seeds, so
    seeds need not match)."""
    pairs = matched_runs(runs, reference)
    lever_folds, ref_folds = fold_means(runs), fold_means(reference)
    shared = [k for k in lever_folds if k in ref_folds]
    if not shared:
        raise ValueError(f"{name} and {reference_name} share no test fold: nothing to compare")
    with open(out_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["fold", "seed", "transductive", "ua", "reference_ua", "difference"])
        for run, ref in pairs:
            w.writerow([run["fold"], run["seed"], bool(run.get("transductive")), run["ua"], ref["ua"],
                        float(run["ua"]) - float(ref["ua"])])
    lines = [f"{name} against {reference_name}, UA in points:", "",
             "| fold | seed | UA | reference | difference |", "|---|---|---|---|---|"]
    lines += [f"| {r['fold']}{' (transductive)' if r.get('transductive') else ''} | {r['seed']} "
              f"| {100 * float(r['ua']):.1f} | {100 * float(ref['ua']):.1f} "
              f"| {100 * (float(r['ua']) - float(ref['ua'])):+.1f} |" for r, ref in pairs]
    lines += ["", "| paired over | n | mean difference | 95% interval | up / level / down | paired t | p |",
              "|---|---|---|---|---|---|---|"]
    # Where every run on the shared folds has its partner, the folds' summary would repeat the runs'.
    unmatched = len({_key(r) for r in [*runs, *reference] if (_key(r)[0], _key(r)[2]) in shared}) > len(pairs)
    for transductive in sorted({k[1] for k in shared} | {_key(r)[2] for r, _ in pairs}):
        kind = " (transductive)" if transductive else ""
        lines.append(_summary_row(f"runs of the same fold and seed{kind}", summarise(
            [100 * (float(r["ua"]) - float(ref["ua"])) for r, ref in pairs if _key(r)[2] == transductive])))
        if unmatched:
            lines.append(_summary_row(f"folds, each side's mean over its seeds{kind}", summarise(
                [lever_folds[k] - ref_folds[k] for k in shared if k[1] == transductive])))
    md = "\n".join(lines) + "\n"
    with open(out_md, "w") as f:
        f.write(md)
    return md
