"""RESULTS.md's table of the CPU scaling sweep (benchmarks/scaling_sweep/scaling_sweep.py --preset cpu),
from its results.csv: the final evaluation of every run, ordered by forward GFLOPs, and the rank
correlations the text quotes."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from dit.eval.tables import markdown_table


def _rows(folder: Path) -> list[dict]:
    with open(Path(folder) / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k, v in r.items():
            if k not in ("run", "size"):
                r[k] = float(v) if v not in ("", None) else None
    return rows


def _spearman(x, y) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def tables(folder: Path) -> dict[str, str]:
    rows = _rows(folder)
    last = max(r["step"] for r in rows)
    final = sorted((r for r in rows if r["step"] == last), key=lambda r: r["gflops"])
    best_fd = min(r["fd_shapes"] for r in final)
    best_acc = max(r["class_acc"] for r in final)

    def bold(v, best, text):
        return f"**{text}**" if math.isclose(v, best) else text

    table = markdown_table(
        ["model", "params", "forward GFLOPs", "training GFLOPs", "fd_shapes", "class_acc"],
        [[f"{r['size']}/{int(r['patch'])}", f"{int(r['params']):,}", f"{r['gflops']:.4f}", f"{r['train_gflops_total']:,.0f}",
          bold(r["fd_shapes"], best_fd, f"{r['fd_shapes']:.1f}"), bold(r["class_acc"], best_acc, f"{r['class_acc']:.3f}")]
         for r in final], "lrrrrr")
    g = [r["gflops"] for r in final]
    corr = (f"Spearman correlation at step {int(last)} ({len(final)} runs): fd_shapes with forward GFLOPs "
            f"{_spearman(g, [r['fd_shapes'] for r in final]):+.2f}; class accuracy with forward GFLOPs "
            f"{_spearman(g, [r['class_acc'] for r in final]):+.2f}.\n")
    return {"final": table, "correlation": corr}
