"""Tables and the plot of benchmarks/few_step/few_step.py from its results.jsonl.

Intervals: time to quality's two-stage bootstrap (training seeds resampled, then each seed's stored
within-seed resamples: benchmarks/time_to_quality/tables.py's Cell), bias-shifted. A comparison with
flow-ln's Euler-50 bootstraps the difference (class accuracy) or the ratio (Fréchet distance) with
independent resamples of both cells. Verdicts (issue 34): "met" when the whole interval clears the
target, except "not resolvably worse", which holds while the difference's interval reaches 0.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from dit.eval.intervals import LEVEL, fmt_ci, shifted_interval
from dit.eval.records import read_rows
from dit.eval.tables import benchmark_module, markdown_table, new_figure, save_figure

RESAMPLES = 2000
REFERENCE = ("flow-ln", 1, "euler", 50)  # (recipe, budget, sampler, steps): the target's Euler-50
DISTILLED = {"reflow"}  # trained after a 1x teacher run: their wall-clock is the teacher's plus their budget
LABELS = {"flow-ln": "flow-ln (rectified flow, logit-normal t)", "meanflow": "MeanFlow (w = 3 folded in)",
          "shortcut": "shortcut model", "reflow": "reflow of flow-ln (Euler-8, cfg 3 pairs)"}


def cells(rows: list[dict]) -> dict:
    """(recipe, budget, sampler, steps) -> time to quality's Cell over its seeds (the first row of a unit)."""
    ttq = benchmark_module("time_to_quality", "tables")
    groups, seen = defaultdict(list), set()
    for r in rows:
        if r["kind"] != "quality":
            continue
        key = (r["recipe"], r["budget"], r["sampler"], r["sampler_steps"])
        if key + (r["seed"],) not in seen:
            seen.add(key + (r["seed"],))
            groups[key].append(r)
    return {k: ttq.Cell(v) for k, v in groups.items()}


def summarise(rows: list[dict]) -> list[dict]:
    ttq = benchmark_module("time_to_quality", "tables")
    out, all_cells = [], cells(rows)
    ref = all_cells.get(REFERENCE)
    for key in sorted(all_cells, key=lambda k: (list(LABELS).index(k[0]) if k[0] in LABELS else 9, k[1], k[3])):
        cell, first = all_cells[key], all_cells[key].rows[0]
        point = cell.point()
        draws = cell.resample(ttq._rng("few-step", *key), RESAMPLES)
        row = {"key": key, "seeds": cell.seeds, "steps_trained": first["steps_trained"], "nfe": first["nfe"],
               "passes": first["passes"], "cfg": first["cfg"], **point}
        row["class_acc_ci"] = shifted_interval(draws["class_acc"], point["class_acc"], LEVEL)
        row["fd_shapes_ci"] = shifted_interval(draws["fd_shapes"], point["fd_shapes"], LEVEL, clip=True)
        if ref is not None and key != REFERENCE:
            rng = ttq._rng("few-step-vs-ref", *key)
            mine, theirs = cell.resample(rng, RESAMPLES), ref.resample(rng, RESAMPLES)
            rp = ref.point()
            row["acc_diff"] = point["class_acc"] - rp["class_acc"]
            row["acc_diff_ci"] = shifted_interval(mine["class_acc"] - theirs["class_acc"], row["acc_diff"], LEVEL)
            row["fd_ratio"] = point["fd_shapes"] / rp["fd_shapes"]
            row["fd_ratio_ci"] = shifted_interval(mine["fd_shapes"] / theirs["fd_shapes"], row["fd_ratio"], LEVEL)
        out.append(row)
    return out


def _budget(recipe: str, budget: int) -> str:
    return f"{budget}x after its 1x teacher ({budget + 1}x in all)" if recipe in DISTILLED else f"{budget}x"


def _name(key) -> str:
    recipe, budget, sampler, steps = key
    return f"{recipe}, {_budget(recipe, budget)}, {sampler}-{steps}"


def tables(folder: Path) -> dict[str, str]:
    rows = read_rows(Path(folder) / "results.jsonl")
    summary = summarise(rows)
    quality = []
    for r in summary:
        recipe, budget, sampler, steps = r["key"]
        quality.append([LABELS.get(recipe, recipe), _budget(recipe, budget), r["steps_trained"], f"{sampler}-{steps}", f"{r['cfg']:g}",
                        r["nfe"], r["passes"], r["seeds"], fmt_ci(r["class_acc"], r["class_acc_ci"]),
                        fmt_ci(r["fd_shapes"], r["fd_shapes_ci"], 1),
                        fmt_ci(r["acc_diff"], r["acc_diff_ci"], 3, sign=True) if "acc_diff" in r else "reference",
                        fmt_ci(r["fd_ratio"], r["fd_ratio_ci"], 2) if "fd_ratio" in r else "1"])
    out = {"quality": markdown_table(
        ["recipe", "budget (flow-ln's wall-clock)", "steps", "sampler", "cfg", "NFE", "passes", "seeds",
         "class acc [95% CI]", "FD [95% CI]", "acc - Euler-50's", "FD / Euler-50's"], quality)}
    timing = [r for r in rows if r["kind"] == "timing"]
    base = next((t["step_s"] for t in timing if t["recipe"] == REFERENCE[0]), None)
    out["timing"] = markdown_table(["recipe", "ms / training step (alone)", "x flow-ln's"],
                                   [[LABELS.get(t["recipe"], t["recipe"]), f"{1000 * t['step_s']:.1f}",
                                     f"{t['step_s'] / base:.2f}" if base else ""] for t in timing])
    sampling = [r for r in rows if r["kind"] == "sampling"]
    out["sampling"] = markdown_table(["recipe", "sampler", "cfg", "NFE", "ms / image (alone, 2 cores)"],
                                     [[LABELS.get(r["recipe"], r["recipe"]), f"{r['sampler']}-{r['sampler_steps']}",
                                       f"{r['cfg']:g}", r["nfe"], f"{r['ms_per_image']:.2f}"] for r in sampling])
    out["acceptance"] = acceptance(summary)
    return out


def acceptance(summary: list[dict]) -> str:
    """Issue 34's targets at budget 1 (equal wall-clock): 1 NFE not resolvably worse in class accuracy and
    FD at most 1.25x Euler-50's; 2 NFE at least as good (accuracy not resolvably worse, FD ratio <= 1)."""
    rows = []
    for r in summary:
        recipe, budget, sampler, steps = r["key"]
        if recipe == REFERENCE[0] or budget != 1 or steps not in (1, 2) or "acc_diff" not in r:
            continue
        bound = 1.25 if steps == 1 else 1.0
        acc_ok = r["acc_diff_ci"][1] >= 0
        fd_verdict = "met" if r["fd_ratio_ci"][1] <= bound else "missed" if r["fd_ratio_ci"][0] > bound else "not resolved"
        rows.append([_name(r["key"]), r["seeds"], fmt_ci(r["acc_diff"], r["acc_diff_ci"], 3, sign=True),
                     "met" if acc_ok else "missed", fmt_ci(r["fd_ratio"], r["fd_ratio_ci"], 2), f"<= {bound:g}",
                     fd_verdict])
    return markdown_table(["model (1x: flow-ln's 5,000-step wall-clock, the reference's own)", "seeds", "class acc - Euler-50's",
                           "not resolvably worse", "FD / Euler-50's", "target", "verdict"], rows)


def plot(folder: Path) -> None:
    """Class accuracy and FD against NFE, one line per (recipe, budget), flow-ln's Euler-50 as a band."""
    summary = summarise(read_rows(Path(folder) / "results.jsonl"))
    fig, axes = new_figure(1, 2, figsize=(12, 4.5))
    lines = defaultdict(list)
    for r in summary:
        recipe, budget, sampler, steps = r["key"]
        if (recipe, sampler, steps) != ("flow-ln", "euler", 50):
            lines[(recipe, budget)].append(r)
    for (recipe, budget), rs in sorted(lines.items()):
        rs = sorted(rs, key=lambda r: r["nfe"])
        for ax, k in zip(axes, ("class_acc", "fd_shapes")):
            y = np.array([r[k] for r in rs])
            err = np.array([[r[k] - r[k + "_ci"][0] for r in rs], [r[k + "_ci"][1] - r[k] for r in rs]])
            ax.errorbar([r["nfe"] for r in rs], y, yerr=np.clip(err, 0, None), fmt="o-", capsize=3,
                        label=f"{recipe} ({_budget(recipe, budget)} wall-clock)")
    ref = next((r for r in summary if r["key"] == REFERENCE), None)
    for ax, k in zip(axes, ("class_acc", "fd_shapes")):
        if ref is not None:
            ax.axhspan(*ref[k + "_ci"], color="grey", alpha=0.25, label="flow-ln Euler-50 (95% CI)")
        ax.set(xscale="log", xlabel="network evaluations (NFE)", xticks=[1, 2, 4], xticklabels=["1", "2", "4"])
        ax.grid(alpha=0.3)
    axes[0].set(ylabel="class accuracy (shapes judge)")
    axes[1].set(ylabel="Fréchet distance (judge features)", yscale="log")
    axes[0].legend(fontsize=7)
    fig.suptitle("Few-step generation on the CPU demo (95% two-stage bootstrap CIs)")
    fig.tight_layout()
    save_figure(fig, Path(folder) / "few_step.png")
