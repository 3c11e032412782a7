"""RESULTS.md's table of benchmarks/data_loaders (every --data layout read through train.py's stream), from results.jsonl.

Images/s: the global batch over the median seconds per batch, with a 95% bootstrap interval of that
median over the batches; the training rows give seconds per step (median over the logged steps).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dit.eval.intervals import percentile_interval
from dit.eval.records import describe, read_rows
from dit.eval.tables import markdown_table

RESAMPLES = 2000


def median_interval(seconds, seed: int = 0) -> list[float]:
    x = np.asarray(seconds, dtype=np.float64)
    rng = np.random.default_rng(seed)
    return percentile_interval(np.median(x[rng.integers(0, len(x), (RESAMPLES, len(x)))], axis=1))


def tables(folder: Path) -> dict[str, str]:
    rows = read_rows(Path(folder) / "results.jsonl")
    loaders = [r for r in rows if r["kind"] == "loader"]
    train = [r for r in rows if r["kind"] == "train"]
    body = []
    for r in loaders:
        lo, hi = median_interval(r["seconds"])
        body.append([r["source"], r["images"], f"{r['image_size']} px", r["num_workers"],
                     f"{r['batch'] / np.median(r['seconds']):.0f} [{r['batch'] / hi:.0f}, {r['batch'] / lo:.0f}]"])
    text = f"{describe(rows)}.\n\n" + markdown_table(
        ["--data", "images", "size", "loader workers", "images/s [95% CI]"], body, "lrrrr")
    if train:
        tbody = []
        for r in train:
            lo, hi = median_interval(r["seconds"])
            tbody.append([r["buckets"], r["batch"], f"{np.median(r['seconds']):.3f} [{lo:.3f}, {hi:.3f}]", len(r["seconds"])])
        text += "\n" + markdown_table(["--buckets", "batch", "seconds / step [95% CI]", "steps timed"], tbody, "lrrr")
    return {"loaders": text}
