"""RESULTS.md's table of benchmarks/throughput (train.py's own step, timed), from results.jsonl.

Images/s is the batch over the median of the timed calls (every call is in the row), with a 95%
bootstrap interval of that median over the calls. Achieved TFLOP/s counts 3 x the forward FLOPs per
training image (dit/analysis/flops.py); on a CPU the peak it is divided by is the rate of a 2048^3
matmul measured in the same run, so "floor" (peak / FLOPs per image) is the most images/s any
implementation of the same FLOPs could reach on that machine that day.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dit.eval.intervals import percentile_interval
from dit.eval.records import describe, read_rows
from dit.eval.tables import markdown_table

RESAMPLES = 2000


def images_per_s_interval(row: dict, seed: int = 0) -> list[float]:
    """The batch over the bootstrapped median call time: a 95% percentile interval."""
    seconds = np.asarray(row["seconds"], dtype=np.float64)
    rng = np.random.default_rng(seed)
    medians = np.median(seconds[rng.integers(0, len(seconds), (RESAMPLES, len(seconds)))], axis=1)
    return percentile_interval(row["batch"] / medians)


def markdown(rows: list[dict]) -> str:
    train = [r for r in rows if r["mode"] == "train"]
    if not train:
        return ""
    body = []
    for r in train:
        lo, hi = images_per_s_interval(r)
        body.append([r["model"], f"{r['image_size']} px", r["batch"], r["precision"], "blocks" if r["compile"] else "no",
                     f"{r['images_per_s']:.2f} [{lo:.2f}, {hi:.2f}]", len(r["seconds"]), f"{r['tflops']:.3f}",
                     "-" if r["peak_tflops"] is None else f"{r['peak_tflops']:.3f}",
                     "-" if r["mfu"] is None else f"{r['mfu']:.0%}",
                     "-" if r["peak_tflops"] is None else f"{r['peak_tflops'] * 1e3 / r['gflop_per_image']:.2f}"])
    return f"{describe(train)}.\n\n" + markdown_table(
        ["model", "input", "batch", "precision", "compile", "img/s [95% CI]", "calls", "achieved TFLOP/s",
         "peak TFLOP/s (measured matmul)", "of peak", "floor img/s"], body, "llrllrrrrrr")


def tables(folder: Path) -> dict[str, str]:
    return {"cpu": markdown([r for r in read_rows(Path(folder) / "results.jsonl") if "gpu" not in r["machine"]])}
