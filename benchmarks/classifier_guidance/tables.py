"""RESULTS.md's table and figure of benchmarks/classifier_guidance, from results.jsonl.

Accuracy and shape share: 95% Wilson intervals from the counts in results.jsonl. Gains (over scale 0
and over the previous scale): 95% paired percentile bootstrap over samples, recomputed from the
per-sample judge output in scores/*.npz. A target is "met" only when its whole interval clears it
(dit/eval/intervals.py `verdict`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dit.eval.intervals import paired_difference, verdict, wilson
from dit.eval.records import read_rows
from dit.eval.tables import markdown_table, new_figure, save_figure

SHAPES = 10  # the judge's classes 0..9 are shapes, 10 is "other"
# The targets: accuracy of the unconditional model, and the demo model's gain over scale 0.
TARGETS = {("uncond", 0.0): ("class_acc", "<=", 0.02), ("uncond", 10.0): ("class_acc", ">=", 0.08),
           ("uncond", 30.0): ("class_acc", ">=", 0.12), ("demo", 3.0): ("gain", ">=", 0.08)}


def summarise(folder: Path, rows: list[dict], resamples: int = 2000) -> list[dict]:
    folder = Path(folder)
    hits = {(r["model"], r["sampler"], r["scale"]): np.load(folder / r["scores"])["hits"] for r in rows}
    out = []
    for r in sorted(rows, key=lambda r: (r["model"], r["sampler"], r["scale"])):
        key, n = (r["model"], r["sampler"], r["scale"]), r["samples"]
        row = {"model": r["model"], "sampler": r["sampler"], "scale": r["scale"], "samples": n,
               "class_acc": r["class_acc"], "class_acc_ci": wilson(round(r["class_acc"] * n), n),
               "shape_share": r["shape_share"], "shape_share_ci": wilson(round(r["shape_share"] * n), n)}
        if r["scale"] != 0:
            smaller = max(x["scale"] for x in rows if (x["model"], x["sampler"]) == key[:2] and x["scale"] < r["scale"])
            for name, ref in (("gain", 0.0), ("step_gain", smaller)):
                other = (r["model"], r["sampler"], ref)
                row[name], row[name + "_ci"] = paired_difference(hits[key], hits[other], resamples, seed=0)
        if key[0::2] in TARGETS:
            metric, op, bound = TARGETS[key[0::2]]
            row["target"] = f"{op} {bound:g}: {verdict(row[metric + '_ci'], op, bound)}"
        out.append(row)
    return out


def markdown(summary: list[dict]) -> str:
    def cell(r, k):
        sign = "+" if "gain" in k else ""
        if k not in r:
            return "-"
        return f"{r[k]:{sign}.3f} [{r[k + '_ci'][0]:{sign}.3f}, {r[k + '_ci'][1]:{sign}.3f}]"

    return markdown_table(
        ["model", "sampler (form)", "scale", "class acc", "judged a shape", "gain over scale 0",
         "gain over the previous scale", "target"],
        [[r["model"], f"{r['sampler']} ({'mean shift' if r['sampler'] == 'ddpm' else 'eps'})", f"{r['scale']:g}",
          cell(r, "class_acc"), cell(r, "shape_share"), cell(r, "gain"), cell(r, "step_gain"), r.get("target", "")]
         for r in sorted(summary, key=lambda r: (r["model"] != "demo", r["sampler"], r["scale"]))])


def tables(folder: Path) -> dict[str, str]:
    return {"scales": markdown(summarise(folder, read_rows(Path(folder) / "results.jsonl")))}


def plot(summary: list[dict], path: Path) -> None:
    fig, ax = new_figure(figsize=(6, 4))
    for key in sorted({(r["model"], r["sampler"]) for r in summary}):
        rs = sorted((r for r in summary if (r["model"], r["sampler"]) == key), key=lambda r: r["scale"])
        x = [max(r["scale"], 0.3) for r in rs]  # scale 0 drawn at 0.3 on the log axis
        y = [r["class_acc"] for r in rs]
        err = [[r["class_acc"] - r["class_acc_ci"][0] for r in rs], [r["class_acc_ci"][1] - r["class_acc"] for r in rs]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=f"{key[0]}, {key[1]}")
    ax.set_xscale("log")
    ax.set_xlabel("classifier scale (0 drawn at 0.3)")
    ax.set_ylabel("class accuracy (shapes judge)")
    ax.set_title("Classifier guidance on 16 px shapes, 95% CIs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
