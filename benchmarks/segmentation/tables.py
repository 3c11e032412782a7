"""RESULTS.md's tables of benchmarks/segmentation (EmerDiff on the CPU-demo DiT), from results.jsonl.

Intervals: 95% percentile bootstrap over the test images (2,000 resamples), the gain over the coarse
masks paired over images, all recomputed from the committed per-image scores (scores/test.npz).
Targets are met only when the whole interval clears them (dit/eval/intervals.py `verdict`): the
gain over the coarse masks against +0.05 (K = 2) and -0.02 (K = 3), and K = 2's mIoU against 0.83.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dit.eval.intervals import bootstrap_mean, fmt_ci, paired_difference, verdict
from dit.eval.records import describe, read_rows
from dit.eval.tables import markdown_table

TARGET_GAIN, TARGET_MIOU, K3_SLACK = 0.05, 0.83, 0.02
RESAMPLES = 2000
SCORES = ("miou", "boundary_f", "boundary_f0")


def tables(folder: Path) -> dict[str, str]:
    folder = Path(folder)
    rows = read_rows(folder / "results.jsonl")
    meta = next(r for r in rows if r["kind"] == "meta")
    test = [r for r in rows if r["kind"] == "test"]
    with np.load(folder / test[0]["scores"]) as f:
        per_image = {key: f[key] for key in f.files}

    def cell(r, key):
        values = per_image[f"k{r['k']}-{r['method']}-{key}"]
        return fmt_ci(r[key], bootstrap_mean(values, RESAMPLES))

    table = markdown_table(
        ["K", "method", "binary mIoU [95% CI]", "boundary F, 1 px [95% CI]", "boundary F, exact [95% CI]"],
        [[r["k"], r["method"], *(cell(r, key) for key in SCORES)] for r in test], "rllll")
    emer = {r["k"]: r for r in test if r["method"] == "emerdiff"}
    gains = {k: paired_difference(per_image[f"k{k}-emerdiff-miou"], per_image[f"k{k}-coarse-nearest-miou"], RESAMPLES)
             for k in emer}
    miou_ci = bootstrap_mean(per_image["k2-emerdiff-miou"], RESAMPLES)
    lines = [f"{meta['test']} test images; model {meta['checkpoint']} (step {meta['train_step']}); "
             f"{describe(rows)}.", "", table.rstrip("\n"), ""]
    for k, r in sorted(emer.items()):
        lines.append(f"- K = {k}: emerdiff takes {r['seconds_per_image']:.3f} s per image (coarse masks, inversion, plain "
                     f"pass, {2 * k} modulated passes; batches of {meta['batch_size']}).")
    for k, (gain, ci) in sorted(gains.items()):
        lines.append(f"- K = {k}: emerdiff - coarse-nearest, paired over images: {fmt_ci(gain, ci, sign=True)}.")
    lines += [f"- Target K = 2, emerdiff >= (a) + {TARGET_GAIN}: gain {fmt_ci(*gains[2], sign=True)}: "
              f"{verdict(gains[2][1], '>=', TARGET_GAIN)}.",
              f"- Target K = 2, emerdiff >= {TARGET_MIOU}: {fmt_ci(emer[2]['miou'], miou_ci)}: "
              f"{verdict(miou_ci, '>=', TARGET_MIOU)}.",
              f"- Target K = 3, emerdiff >= (a) - {K3_SLACK}: gain {fmt_ci(*gains[3], sign=True)}: "
              f"{verdict(gains[3][1], '>=', -K3_SLACK)}."]
    return {"test": "\n".join(lines) + "\n"}
