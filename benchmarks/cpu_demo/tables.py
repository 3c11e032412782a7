"""RESULTS.md's table of benchmarks/cpu_demo (the quick-start demo, measured), from results.jsonl and scores/.

Class accuracy: 95% Wilson interval of the count. fd_shapes: 95% bootstrap over the samples
(RESAMPLES, seed 0), bias-shifted and clipped at 0, from the per-sample judge features in scores/ and
the judge's reference statistics in scores/reference.npz (dit/eval/intervals.py). The recipes drew
the same seeds and labels, so flow-ln − dit on class accuracy is a paired bootstrap of the per-sample
hits (each recipe's first sampler).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dit.eval.intervals import fmt_ci, paired_difference, shifted_interval, wilson
from dit.eval.records import describe, read_rows
from dit.eval.tables import markdown_table

RESAMPLES = 1000
ORDER = ("flow-ln", "dit")


def _scores(folder: Path, row: dict) -> dict:
    with np.load(folder / row["scores"]) as f:
        return {k: f[k].astype(np.float64) for k in f.files}


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


def summarise(folder: Path) -> dict:
    """Per (recipe, sampler): the training row, class accuracy (Wilson) and fd_shapes (bootstrap);
    the paired flow-ln − dit difference in class accuracy."""
    from dit.eval.metrics import FrechetToReference

    folder = Path(folder)
    rows = read_rows(folder / "results.jsonl")
    train = {r["recipe"]: r for r in rows if r["kind"] == "train"}
    quality = sorted((r for r in rows if r["kind"] == "quality"),
                     key=lambda r: (ORDER.index(r["recipe"]) if r["recipe"] in ORDER else len(ORDER), r["recipe"]))
    if not quality:
        return {"rows": rows, "cells": [], "train": train, "paired": None}
    with np.load(folder / "scores" / "reference.npz") as ref:
        fd_to_ref = FrechetToReference(ref["mu"], ref["sigma"])
    cells, hits = [], {}
    for r in quality:
        data = _scores(folder, r)
        n = r["num_samples"]
        rng = np.random.default_rng(0)
        fd = [fd_to_ref(data["features"][rng.integers(0, n, n)]) for _ in range(RESAMPLES)]
        cells.append({**r, "class_acc_ci": wilson(round(r["class_acc"] * n), n),
                      "fd_shapes_ci": shifted_interval(fd, r["fd_shapes"], clip=True)})
        hits.setdefault(r["recipe"], (r["sampler"], data["hits"]))  # each recipe's first (main) sampler
    paired = None
    if "flow-ln" in hits and "dit" in hits:
        (fs, fh), (ds, dh) = hits["flow-ln"], hits["dit"]
        diff, ci = paired_difference(fh, dh, RESAMPLES, seed=0)
        paired = {"samplers": (fs, ds), "diff": diff, "ci": ci}
    return {"rows": rows, "cells": cells, "train": train, "paired": paired}


def render(summary: dict) -> dict[str, str]:
    cells, train = summary["cells"], summary["train"]
    if not cells and not train:
        return {}
    body = []
    for c in cells or [{"recipe": r} for r in train]:
        t = train.get(c["recipe"], {})
        loss = f"{t['loss_first100']:.3f} → {t['loss_last100']:.3f}" if t else "-"
        body.append([c["recipe"], _minutes(t["wall_s"]) if t else "-", f"{t['images_per_s']:.0f}" if t else "-", loss,
                     f"{c['sampler']}-{c['steps']}" if "sampler" in c else "-",
                     fmt_ci(c["class_acc"], c["class_acc_ci"]) if "class_acc" in c else "-",
                     fmt_ci(c["fd_shapes"], c["fd_shapes_ci"], 1) if "fd_shapes" in c else "-"])
    p = summary["paired"]
    if p:
        body.append(["flow-ln − dit (paired)", "", "", "", f"{p['samplers'][0]}-50 vs {p['samplers'][1]}-50",
                     fmt_ci(p["diff"], p["ci"], sign=True), ""])
    first = next(iter(train.values()), {})
    n = cells[0]["num_samples"] if cells else None
    head = (f"Measured at {describe(summary['rows'])}; {first.get('steps', '?'):,} training steps of "
            f"{first.get('batch', '?')} images" + (f"; {n:,} samples (seeds 0..{n - 1}, balanced labels), "
                                                  f"cfg {cells[0]['cfg_scale']:g}" if n else "") + ".\n\n")
    table = markdown_table(["recipe", "train wall-clock", "images/s", "loss first → last 100 steps", "sampler",
                            "class acc [95% CI]", "fd_shapes [95% CI]"], body, "lrrllll")
    return {"demo": head + table}


def tables(folder: Path) -> dict[str, str]:
    """RESULTS.md's table of this benchmark ({} until results.jsonl has rows)."""
    return render(summarise(folder))
