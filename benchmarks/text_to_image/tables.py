"""Tables and figures of benchmarks/text_to_image/text_to_image.py from its results.jsonl (and samples/).

Intervals: a two-stage bootstrap, bias-free for means: training seeds resampled, then within each seed its
prompts (a prompt's samples move together: they share the words), RESAMPLES times; the percentile interval of
the pooled mean. Verdicts (issue 35): the best conditioning (highest point on seen prompts' joint accuracy)
"met" a target when the whole interval clears it (dit/eval/intervals.verdict).
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np

from dit.eval.intervals import fmt_ci, percentile_interval, verdict
from dit.eval.records import describe, read_rows
from dit.eval.tables import markdown_table, new_figure, save_figure

RESAMPLES = 2000
# The benchmark's default setting (text_to_image.py): logit-normal t centred at LOGIT_MEAN, MINUTES of training.
# Rows written before the setting was recorded trained at FIRST_SETTING (logit-normal(0, 1) t, 20 minutes).
MINUTES, LOGIT_MEAN = 10.0, -1.5
FIRST_SETTING = (0.0, 20.0)
MARKS = ("shape", "colour", "position", "joint")
TARGETS = {"seen": 0.80, "held-out": 0.60}  # joint accuracy of the best conditioning
LABELS = {"adaln-zero": "pooled adaLN-Zero (baseline)", "cross-attention": "cross-attention (PixArt-α)",
          "joint": "joint attention (MMDiT)", "real": "real renders (the judge's ceiling)"}


def run_name(cond: str, seed: int, logit_mean: float = LOGIT_MEAN, minutes: float = MINUTES) -> str:
    """The training run (and samples file prefix) of a conditioning, seed and setting."""
    if (logit_mean, minutes) == FIRST_SETTING:
        return f"{cond}-seed{seed}"
    return f"{cond}-lm{logit_mean:g}-{minutes:g}min-seed{seed}"


def setting_of(row: dict) -> tuple[float, float]:
    """(logit mean, minutes) a quality row was trained with."""
    return row.get("logit_mean", FIRST_SETTING[0]), row.get("minutes", FIRST_SETTING[1])


def describe_setting(setting: tuple[float, float] | None) -> str:
    return "-" if setting is None else f"t ~ logit-normal({setting[0]:g}, 1), {setting[1]:g} min"


def two_stage(per_seed: list[np.ndarray], per_prompt: int, seed: int = 0) -> tuple[float, list[float]]:
    """(mean, 95% interval) of 0/1 marks, one array per training seed, `per_prompt` consecutive samples a prompt."""
    rng = np.random.default_rng(seed)
    groups = [m.reshape(-1, per_prompt).mean(1) for m in per_seed]  # per-prompt shares
    draws = np.empty(RESAMPLES)
    for i in range(RESAMPLES):
        seeds = rng.integers(0, len(groups), len(groups))
        draws[i] = np.mean([groups[s][rng.integers(0, len(groups[s]), len(groups[s]))].mean() for s in seeds])
    return float(np.mean([g.mean() for g in groups])), percentile_interval(draws)


def summarise(rows: list[dict]) -> list[dict]:
    """One entry per (setting, conditioning or "real", set): seeds, steps, and each mark's mean and interval."""
    units = defaultdict(list)
    for r in rows:
        if r["kind"] in ("quality", "real"):
            units[(setting_of(r) if r["kind"] == "quality" else None, r.get("conditioning", "real"), r["set"])].append(r)
    out = []
    for (setting, cond, name), rs in units.items():
        entry = {"setting": setting, "conditioning": cond, "set": name, "seeds": len(rs),
                 "steps": rs[0].get("steps_trained")}
        tag = "" if setting in (None, FIRST_SETTING) else f"{setting}/"  # the first setting's seeds as they were
        for k in MARKS:
            entry[k], entry[k + "_ci"] = two_stage([np.asarray(r[k], float) for r in rs], rs[0]["per_prompt"],
                                                   seed=zlib.crc32(f"{tag}{cond}/{name}/{k}".encode()))  # not hash():
            # str hashes differ between processes, and the tables must regenerate byte for byte
        entry["sampling_ms"] = np.mean([1000 * r["sampling_s"] / len(r["joint"]) for r in rs]) if "sampling_s" in rs[0] \
            else None
        out.append(entry)
    order = [*LABELS]
    return sorted(out, key=lambda e: (e["setting"] is not None, e["setting"] != (LOGIT_MEAN, MINUTES),
                                      order.index(e["conditioning"]), e["set"] != "seen"))


def tables(folder: Path, setting: tuple[float, float] = (LOGIT_MEAN, MINUTES)) -> dict[str, str]:
    """The tables; `setting` is the one whose costs, sampling times and verdicts are shown (every setting's
    accuracy rows are)."""
    path = Path(folder) / "results.jsonl"
    rows = read_rows(path) if path.is_file() else []
    summary = summarise(rows)
    timing = {r["conditioning"]: r for r in rows if r["kind"] == "timing"}
    acc = [[LABELS[e["conditioning"]], describe_setting(e["setting"]), e["set"], e["seeds"],
            *(fmt_ci(e[k], e[k + "_ci"], 2) for k in MARKS)] for e in summary]
    main = [e for e in summary if e["setting"] == tuple(setting)]
    cost = [[LABELS[c], f"{t['params'] / 1e6:.2f}M", f"{t['gflops']:.3f}", f"{1000 * t['step_s']:.1f}",
             round(setting[1] * 60 / t["step_s"]),
             next((f"{e['sampling_ms']:.1f}" for e in main if e["conditioning"] == c and e["sampling_ms"]), "-")]
            for c, t in timing.items()]
    provenance = f"Rows: {describe(rows)}.\n\n" if rows else ""
    return {
        "accuracy": provenance + markdown_table(["model", "training", "prompts", "seeds", "shape", "colour",
                                                 "position", "joint"], acc, "lllrrrrr"),
        "cost": markdown_table(["conditioning", "parameters", "GFLOPs / image", "ms / training step",
                                f"steps in {setting[1]:g} min", "ms / sample (guided Euler, beside another run)"], cost,
                               "lrrrrr"),
        "acceptance": acceptance(main),
    }


def acceptance(summary: list[dict]) -> str:
    trained = [e for e in summary if e["conditioning"] != "real"]
    seen = [e for e in trained if e["set"] == "seen"]
    if not seen:
        return markdown_table(["target", "verdict"], [["no trained model scored yet", "-"]])
    best = max(seen, key=lambda e: e["joint"])["conditioning"]
    rows = []
    for e in trained:
        if e["conditioning"] == best:
            target = TARGETS[e["set"]]
            rows.append([LABELS[best], e["set"], e["seeds"], fmt_ci(e["joint"], e["joint_ci"], 3), f">= {target:.2f}",
                         verdict(e["joint_ci"], ">=", target)])
    return markdown_table(["best conditioning (seen joint accuracy)", "prompts", "seeds", "joint accuracy", "target",
                           "verdict"], rows)


def figures(folder: Path, setting: tuple[float, float] = (LOGIT_MEAN, MINUTES), per_set: int = 6,
            samples: int = 4) -> None:
    """text_to_image.png: prompts (rows; seen then held-out) against samples of each conditioning's seed-0 model
    of `setting` (the default one's)."""
    folder = Path(folder)
    name = {c: run_name(c, 0, *setting) for c in LABELS}
    conds = [c for c in LABELS if (folder / "samples" / f"{name[c]}-seen.npz").is_file()]
    if not conds:
        return
    picks = []  # (set, prompt, first index): the first singles and pairs of each set
    for which in ("seen", "held-out"):
        data = np.load(folder / "samples" / f"{name[conds[0]]}-{which}.npz")
        prompts = list(dict.fromkeys(data["prompts"].tolist()))
        chosen = prompts[: per_set - 2] + prompts[-2:]
        picks += [(which, p, data["prompts"].tolist().index(p)) for p in chosen]
    fig, axes = new_figure(len(picks), len(conds), figsize=(2.3 * len(conds) + 3.5, 0.62 * len(picks) + 0.6),
                           squeeze=False)
    for j, cond in enumerate(conds):
        sets = {n: np.load(folder / "samples" / f"{name[cond]}-{n}.npz")["images"] for n in ("seen", "held-out")}
        for i, (which, prompt, first) in enumerate(picks):
            ax = axes[i, j]
            ax.imshow(np.concatenate(list(sets[which][first: first + samples]), axis=1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(LABELS[cond], fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{prompt} ({which})", rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(f"Prompts against samples (seed-0 models, {describe_setting(setting)}; Euler-50, "
                 "guidance 3)", fontsize=9)
    save_figure(fig, folder / "text_to_image.png")
