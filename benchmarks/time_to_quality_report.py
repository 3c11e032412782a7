"""Tables, intervals and plots of benchmarks/time_to_quality.py from its results.jsonl.

Intervals are a two-stage bootstrap: each resample draws the training seeds with replacement,
then for each drawn seed one of its stored within-seed resamples (its samples drawn with
replacement, metrics recomputed: the "draws" of results.jsonl), and takes the mean over seeds of
class accuracy and of the Fréchet distance in the judge's features; the 2.5..97.5 percentiles are
shifted by the bootstrap bias (as benchmarks/sampler_quality.py does), distances clipped at 0.
Comparisons (a recipe against R0's 5,000-step accuracy) bootstrap the difference with independent
resamples of the two cells.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

MAIN = {"gaussian": "ddim", "flow": "euler"}  # the sampler each recipe's headline curve uses (50 evaluations)


class Cell:
    """One (recipe, sampler, step, budget): its runs' point estimates and within-seed draws."""

    def __init__(self, rows: list[dict]):
        self.rows = sorted(rows, key=lambda r: r["seed"])
        self.draws = [{k: np.asarray(r["draws"][k]) for k in ("class_acc", "fd_shapes")} for r in self.rows]

    @property
    def seeds(self) -> int:
        return len(self.rows)

    def point(self) -> dict:
        acc = [r["class_acc"] for r in self.rows]
        fd = [r["fd_shapes"] for r in self.rows]
        return {"class_acc": float(np.mean(acc)), "class_acc_seed_sd": float(np.std(acc, ddof=1)) if len(acc) > 1 else 0.0,
                "fd_shapes": float(np.mean(fd)), "per_seed_acc": acc, "per_seed_fd": fd}

    def resample(self, rng, resamples: int) -> dict:
        """(resamples,) draws of the mean over seeds of each metric."""
        seeds = rng.integers(0, self.seeds, (resamples, self.seeds))
        out = {}
        for k in ("class_acc", "fd_shapes"):
            table = np.stack([d[k] for d in self.draws])  # (seeds, within)
            pick = rng.integers(0, table.shape[1], (resamples, self.seeds))
            out[k] = table[seeds, pick].mean(1)
        return out


def _interval(draws: np.ndarray, point: float, level: float, distance: bool) -> tuple[float, float]:
    tail = (1 - level) / 2
    lo, hi = np.quantile(draws, [tail, 1 - tail]) - (draws.mean() - point)
    return (max(float(lo), 0.0) if distance else float(lo)), float(hi)


def report(rows: list[dict], out: Path, resamples: int, level: float, labels: dict, max_steps: int) -> dict:
    out = Path(out)
    timing = {r["recipe"]: r for r in rows if r["kind"] == "timing"}
    groups = defaultdict(list)
    for r in rows:
        if r["kind"] == "quality":
            groups[(r["recipe"], r["sampler"], r["step"], r.get("budget"))].append(r)
    rng = np.random.default_rng(0)
    table = []
    cells = {}
    for (recipe, sampler, step, budget), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][3] or 0, kv[0][2])):
        cell = cells[(recipe, sampler, step, budget)] = Cell(rs)
        point = cell.point()
        draws = cell.resample(rng, resamples)
        row = {"recipe": recipe, "sampler": sampler, "step": step, "budget": budget, "seeds": cell.seeds,
               "num_samples": rs[0]["num_samples"], **point}
        row["class_acc_lo"], row["class_acc_hi"] = _interval(draws["class_acc"], point["class_acc"], level, False)
        row["fd_shapes_lo"], row["fd_shapes_hi"] = _interval(draws["fd_shapes"], point["fd_shapes"], level, True)
        if recipe in timing:
            row["wall_min"] = step * timing[recipe]["step_s"] / 60
        table.append(row)
    summary = {"timing": timing, "table": table, "level": level, "resamples": resamples,
               "budget": budget_summary(table, cells, timing, rng, resamples, level, max_steps)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "time_to_quality.md").write_text(markdown(summary, labels, max_steps))
    plot(table, timing, labels, out / "time_to_quality.png", max_steps)
    print((out / "time_to_quality.md").read_text())
    return summary


def budget_summary(table, cells, timing, rng, resamples, level, max_steps) -> dict:
    """R0's final class accuracy as the target; when each recipe first reaches it, at what share of
    R0's wall-clock; short-budget runs against it; and whether any recipe ends worse than R0 by more
    than one seed standard deviation."""
    ref_key = ("R0", "ddim", max_steps, None)
    if ref_key not in cells or "R0" not in timing:
        return {}
    ref = cells[ref_key]
    target = ref.point()["class_acc"]
    r0_wall = max_steps * timing["R0"]["step_s"]
    result = {"target_class_acc": target, "r0_wall_s": r0_wall, "recipes": {}}
    for row in table:
        recipe, sampler, step, budget = row["recipe"], row["sampler"], row["step"], row["budget"]
        if sampler != MAIN["gaussian" if recipe == "R0" else "flow"] or recipe not in timing:
            continue
        diffs = cells[(recipe, sampler, step, budget)].resample(rng, resamples)["class_acc"] - \
            ref.resample(rng, resamples)["class_acc"]
        lo, hi = _interval(diffs, row["class_acc"] - target, level, False)
        entry = {"step": step, "budget": budget, "class_acc": row["class_acc"], "diff_vs_target": row["class_acc"] - target,
                 "diff_lo": lo, "diff_hi": hi, "wall_share": step * timing[recipe]["step_s"] / r0_wall}
        result["recipes"].setdefault(recipe, []).append(entry)
    for recipe, entries in result["recipes"].items():
        grid = [e for e in entries if e["budget"] is None]
        reached = [e for e in sorted(grid, key=lambda e: e["step"]) if e["diff_vs_target"] >= 0]
        result.setdefault("first_reached", {})[recipe] = reached[0] if reached else None
        final = next((e for e in grid if e["step"] == max_steps), None)
        if final is not None:
            sd = ref.point()["class_acc_seed_sd"]
            result.setdefault("ends_worse_than_r0_by_more_than_a_seed_sd", {})[recipe] = final["diff_vs_target"] < -sd
    return result


def _fmt(row, key, digits):
    return f"{row[key]:.{digits}f} [{row[key + '_lo']:.{digits}f}, {row[key + '_hi']:.{digits}f}]"


def markdown(summary: dict, labels: dict, max_steps: int) -> str:
    lines = ["| recipe | sampler | steps | budget | train min | class acc [95% CI] | seed sd | fd_shapes [95% CI] |",
             "|---|---|---:|---|---:|---|---:|---|"]
    for row in summary["table"]:
        budget = f"1/{row['budget']} of R0" if row["budget"] else "full"
        wall = f"{row['wall_min']:.1f}" if "wall_min" in row else ""
        lines.append(f"| {labels.get(row['recipe'], row['recipe'])} | {row['sampler']} | {row['step']} | {budget} | {wall} | "
                     f"{_fmt(row, 'class_acc', 3)} | {row['class_acc_seed_sd']:.3f} | {_fmt(row, 'fd_shapes', 1)} |")
    timing = summary["timing"]
    lines += ["", "| recipe | s / step (alone) | images / s |", "|---|---:|---:|"]
    for recipe, t in sorted(timing.items()):
        lines.append(f"| {labels.get(recipe, recipe)} | {t['step_s'] * 1000:.1f} ms | {t['images_per_s']:.0f} |")
    b = summary.get("budget") or {}
    if b:
        lines += ["", f"Target: R0's {max_steps}-step class accuracy {b['target_class_acc']:.3f} "
                      f"(R0's {max_steps}-step wall-clock {b['r0_wall_s'] / 60:.1f} min).", "",
                  "| recipe | steps | budget | share of R0's wall-clock | class acc - target [95% CI] |", "|---|---:|---|---:|---|"]
        for recipe, entries in sorted(b["recipes"].items()):
            for e in entries:
                budget = f"1/{e['budget']}" if e["budget"] else "full"
                lines.append(f"| {labels.get(recipe, recipe)} | {e['step']} | {budget} | {e['wall_share']:.2f} | "
                             f"{e['diff_vs_target']:+.3f} [{e['diff_lo']:+.3f}, {e['diff_hi']:+.3f}] |")
        lines.append("")
        for recipe, e in sorted((b.get("first_reached") or {}).items()):
            what = (f"first reaches the target at {e['step']} steps, {e['wall_share']:.2f} of R0's wall-clock"
                    if e else "does not reach the target on the grid")
            lines.append(f"- {labels.get(recipe, recipe)}: {what}.")
        worse = [r for r, w in (b.get("ends_worse_than_r0_by_more_than_a_seed_sd") or {}).items() if w]
        lines.append(f"- Ends worse than R0 by more than one R0 seed sd: {', '.join(worse) if worse else 'none'}.")
    return "\n".join(lines) + "\n"


def plot(table, timing, labels, path: Path, max_steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    for recipe in sorted({r["recipe"] for r in table}):
        for sampler, style in (("ddim", "-"), ("euler", "-"), ("heun", ":")):
            rows = sorted([r for r in table if r["recipe"] == recipe and r["sampler"] == sampler and not r["budget"]],
                          key=lambda r: r["step"])
            if not rows:
                continue
            steps = np.array([r["step"] for r in rows])
            label = labels.get(recipe, recipe) + ("" if sampler != "heun" else " (Heun-25)")
            for ax, key, x in ((axes[0], "class_acc", steps), (axes[1], "class_acc", None), (axes[2], "fd_shapes", steps)):
                if x is None:
                    if recipe not in timing:
                        continue
                    x = steps * timing[recipe]["step_s"] / 60
                y = np.array([r[key] for r in rows])
                err = np.array([[r[key] - r[key + "_lo"] for r in rows], [r[key + "_hi"] - r[key] for r in rows]])
                ax.errorbar(x, y, yerr=np.clip(err, 0, None), fmt="o" + style, capsize=3, label=label,
                            alpha=0.6 if sampler == "heun" else 1.0)
    axes[0].set(xlabel="training steps", ylabel="class accuracy (shapes judge)", title="accuracy vs steps")
    axes[1].set(xlabel="training wall-clock (min, per-step cost timed alone)", ylabel="class accuracy",
                title="accuracy vs wall-clock")
    axes[2].set(xlabel="training steps", ylabel="Fréchet distance (judge features)", title="fd_shapes vs steps",
                yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Time to quality, CPU-demo network, cosine schedule over {max_steps} steps, 3 seeds, 95% bootstrap CIs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
