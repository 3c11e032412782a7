"""RESULTS.md's tables of benchmarks/video_cpu (`--report` prints them too), from results.jsonl (the
benchmark's models) and experiments.jsonl (the mask-mix runs of `--experiment`). 95% bootstrap
intervals over clips, as each row recorded them.
"""

from __future__ import annotations

from pathlib import Path

from dit.eval.records import read_rows
from dit.eval.tables import markdown_table

FRAMES = 8
MIXES = [("bs4-vdt", "`vdt` (VDT's released mix)"), ("bs4-vdt-uncond", "`vdt-uncond` (0.5)"),
         ("bs4-vdt-uncond75", "`vdt-uncond:0.75` (the preset)"), ("bs4-none", "`none` (generation only)"),
         ("bs16-vdt", "`vdt`, batch 16 for 1,500 steps (the old preset)")]
FACTORISATIONS = [("main", "main (interleaved)"), ("no-temporal", "no-temporal"), ("late-fusion", "late-fusion"),
                  ("factorized-attention", "factorized-attention (VDT's block)"),
                  ("split-heads", "split-heads (8 blocks, half the heads in time)")]
CONDITIONING = [("replace", "replace: in place, with the given-token embedding (the default)"),
                ("concat", "concat: the given frames' clean tokens appended (VDT's choice)"),
                ("adaln", "adaln: the given tokens mean-pooled into adaLN's c"),
                ("cross-attention", "cross-attention: every token attends to the given tokens"),
                ("no-temporal-vdt", "no-temporal-vdt: replace without temporal parts"),
                ("repeat-given", "repeat-given (no network), on main's first 400")]
TASKS = [("prediction", "prediction (0-3)"), ("backward", "backward prediction (4-7; scored time-reversed)"),
         ("interpolation", "interpolation (0, 4, 7; error over frames 1-3, 5, 6)"),
         ("unconditional", "nothing given (the class only; scored as prediction)")]
# Issue 15's targets, as the issue states them.
GEN_TARGET = ["target (issue 15)", "", "", "", "400", ">= 0.40", "", ">= 0.70", ""]


def _cell(r: dict, k: str, digits: int = 3) -> str:
    if r is None or k not in r or r[k] is None:
        return ""
    ci = r.get(f"{k}_ci")
    return f"{r[k]:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def _cost(r: dict) -> str:
    return f"{r['gmacs']:.3f}" if r.get("gmacs") is not None else "-"


def nothing_given_share(mix: str, frames: int = FRAMES) -> float:
    """The share of training clips with no frame given under `mix`, from dit/data/video_masks.py's
    definitions: the unconditional share, then VDT's mix (spatial with SPATIAL_SHARE, else one of the
    temporal tasks uniformly: "unconditional" gives nothing, "random-frames" nothing with 0.8^F)."""
    from dit.data.video_masks import SPATIAL_SHARE, TEMPORAL_TASKS, unconditional_share

    if mix == "none":
        return 1.0
    s = unconditional_share(mix)
    if mix.partition(":")[0] == "prediction":  # the rest are prediction clips: something always given
        return s
    vdt = (1 - SPATIAL_SHARE) * (1 + 0.8 ** frames) / len(TEMPORAL_TASKS)
    return s + (1 - s) * vdt


def _find(rows, model, task):
    return next((r for r in rows if r["model"] == model and r["task"] == task), None)


def tables(folder: Path) -> dict[str, str]:
    folder = Path(folder)
    rows, exp = read_rows(folder / "results.jsonl"), read_rows(folder / "experiments.jsonl")
    out = {}
    mix_rows = []
    for run, label in MIXES:
        g, p = _find(exp, run, "generation"), _find(exp, run, "prediction")
        mask = g["video_masks"]
        mix_rows.append([label, f"{nothing_given_share(mask):.0%}", _cell(g, "class_acc"), _cell(g, "coherent_motion"),
                         f"{g['fd_video']:.0f}", _cell(p, "direction_agree_given") if p else "",
                         _cell(p, "centroid_error", 2) if p else ""])
    mix_rows.append(["target (issue 15)", "", ">= 0.40", ">= 0.70", "", ">= 0.70", "<= 1.5"])
    out["masks"] = markdown_table(["training masks", "clips with nothing given", "class acc", "coherent motion", "clip FD",
                                   "prediction: direction agrees", "centroid error (px)"], mix_rows)
    gen = []
    for model, label in FACTORISATIONS:
        r = _find(rows, model, "generation")
        gen.append([label, r["video_masks"], f"{r['params']:,}", _cost(r), r["clips"], _cell(r, "class_acc"),
                    _cell(r, "frames_agree"), _cell(r, "coherent_motion"), _cell(r, "fd_video", 0)])
    out["generation"] = markdown_table(["model", "masks", "parameters", "GFLOPs / clip", "clips", "class acc",
                                        "frames agree", "coherent motion", "clip FD"], gen + [GEN_TARGET])
    pred = []
    for model, label in FACTORISATIONS:
        r = _find(rows, model, "prediction")
        pred.append([label, r["video_masks"], f"{r['params']:,}", _cost(r), r["clips"],
                     _cell(r, "direction_agree_given"), _cell(r, "centroid_error", 2)])
    pred.append(["target (issue 15)", "", "", "", "400", ">= 0.70 (no-temporal <= 0.35)", "<= 1.5 (unconditional ~4)"])
    out["prediction"] = markdown_table(["model", "masks", "parameters", "GFLOPs / clip", "clips",
                                        "direction agrees with given", "centroid error (px)"], pred)
    task_rows = []
    for task, label in TASKS:
        for i, model in enumerate(("main", "repeat-given")):
            r = _find(rows, model, task)
            if r is not None:
                task_rows.append([label if i == 0 else "", model, r["clips"], _cell(r, "direction_agree_given"),
                                  _cell(r, "centroid_error", 2)])
    out["tasks"] = markdown_table(["task (given frames)", "model", "clips", "direction agrees with given",
                                   "centroid error (px)"], task_rows)
    cond = []
    for model, label in CONDITIONING:
        r = _find(rows, model, "prediction")
        cond.append([label, f"{r['params']:,}", _cost(r) if r.get("params") else "0", r["clips"],
                     _cell(r, "direction_agree_given"), _cell(r, "centroid_error", 2)])
    cond.append(["target (issue 15)", "", "", "400", ">= 0.70", "<= 1.5"])
    out["curve"], out["errors"] = curve_markdown(folder, exp), errors_markdown(folder, exp)
    out["acceptance"] = acceptance_markdown(folder, exp, read_rows(folder / "timing.jsonl"))
    out["completion"] = completion_markdown(folder, exp, read_rows(folder / "sweeps.jsonl"))
    out["conditioning"] = markdown_table(["method", "parameters", "GFLOPs / clip", "clips", "direction agrees with given",
                                          "centroid error (px)"], cond)
    return out


def markdown(rows: list[dict], models: list[str], tasks: list[str]) -> str:
    """Every row of results.jsonl, generation then completion (the script's --report)."""
    order = {name: i for i, name in enumerate(models)}
    rows = sorted(rows, key=lambda r: (order.get(r["model"], len(order)), tasks.index(r["task"])))
    gen = markdown_table(["model", "masks", "parameters", "GFLOPs / clip", "clips", "class acc", "frames agree",
                          "coherent motion", "clip FD"],
                         [[r["model"], r.get("video_masks", "?"), f"{r['params']:,}", _cost(r), r["clips"],
                           _cell(r, "class_acc"), _cell(r, "frames_agree"), _cell(r, "coherent_motion"),
                           _cell(r, "fd_video", 1)] for r in rows if r["task"] == "generation"])
    rest = markdown_table(["model", "masks", "parameters", "GFLOPs / clip", "task", "clips", "direction agrees with given",
                           "centroid error (px)"],
                          [[r["model"], r.get("video_masks", "?"), f"{r['params']:,}", _cost(r), r["task"], r["clips"],
                            _cell(r, "direction_agree_given"), _cell(r, "centroid_error", 2)]
                           for r in rows if r["task"] != "generation"])
    return gen + "\n" + rest


def experiments_markdown(rows: list[dict]) -> str:
    """experiments.jsonl's rows (the mask-mix and batch runs of --experiment)."""
    if not rows:
        return ""
    return markdown_table(
        ["run", "masks", "speed", "batch x steps", "task", "clips", "class acc", "coherent motion", "clip FD",
         "direction agrees with given", "centroid error (px)"],
        [[r["model"], r.get("video_masks", "?"), f"{r.get('shapes_speed', 1.0):g}",
          f"{r.get('global_batch_size', '-')} x {r['steps_trained']}", r["task"],
          r["clips"], _cell(r, "class_acc"), _cell(r, "coherent_motion"), _cell(r, "fd_video", 1),
          _cell(r, "direction_agree_given"), _cell(r, "centroid_error", 2)] for r in rows])


# --- issue 33: one preset for generation and prediction -----------------------------------------------
# The runs behind the trade-off curve (train.py video-cpu with the flags shown), each scored by
# `video_cpu.py --experiment RUN --clips N --tasks generation prediction`, in the order tried.
CURVE = [("s2-u50", "`--video-masks vdt-uncond`"), ("s2-p50", "`--video-masks prediction:0.5`"),
         ("s2-p50-init", "`--video-masks prediction:0.5 --init-from` the image demo (the preset)"),
         ("s2-p75-init", "`--video-masks prediction:0.75 --init-from` the image demo")]
PRESET_RUN = "s2-p50-init"  # the curve's run trained with the chosen preset's flags (its acceptance rows)
BOUNCE_SEED = 1  # the held-out clips' dataset seed (video_cpu.make_metric)


def _scores(folder: Path, row: dict | None) -> dict | None:
    import numpy as np

    if row is None or "scores" not in row or not (folder / row["scores"]).is_file():
        return None
    with np.load(folder / row["scores"]) as z:
        return {k: z[k] for k in z.files}


def bounced(n: int, speed: float):
    """Which of the first n held-out clips bounce off a wall (rendered again: deterministic per seed)."""
    from dit.data.shapes_video import cached_uint8_clips

    return cached_uint8_clips(n, 16, FRAMES, BOUNCE_SEED, None, speed)[2]["bounced"]


def paired_error(a, b, subset=None):
    """mean(a - b) of per-clip centroid errors over clips where both are finite (and in `subset`), and
    its paired 95% bootstrap interval."""
    import numpy as np

    from dit.eval.intervals import paired_difference

    keep = np.isfinite(a) & np.isfinite(b) & (True if subset is None else subset)
    return paired_difference(a[keep], b[keep]) + (int(keep.sum()),)


def _exp(exp, model, task, clips, speed):
    return next((r for r in exp if (r["model"], r["task"], r["clips"], r.get("shapes_speed", 1.0))
                 == (model, task, clips, speed)), None)


def curve_markdown(folder: Path, exp: list[dict]) -> str:
    rows = []
    for run, label in CURVE:
        for clips, speed in sorted({(r["clips"], r["shapes_speed"]) for r in exp if r["model"] == run}):
            g, p = (_exp(exp, run, task, clips, speed) for task in ("generation", "prediction"))
            r = g or p
            rows.append([label, f"{speed:g}", f"{nothing_given_share(r['video_masks']):.0%}",
                         f"{r['global_batch_size']} x {r['steps_trained']}", clips, _cell(g, "class_acc"),
                         _cell(g, "coherent_motion"), f"{g['fd_video']:.0f}" if g else "",
                         _cell(p, "direction_agree_given"), _cell(p, "centroid_error", 2)])
    for clips, speed in sorted({(r["clips"], r["shapes_speed"]) for r in exp if r["model"] in dict(CURVE)}):
        real = _exp(exp, "real-clips", "generation", clips, speed)
        if real:
            rows.append(["real clips (the ceiling)", f"{speed:g}", "", "", clips, _cell(real, "class_acc"),
                         _cell(real, "coherent_motion"), f"{real['fd_video']:.0f}", "", ""])
        for name in ("repeat-given", "constant-velocity"):
            b = _exp(exp, name, "prediction", clips, speed)
            if b:
                rows.append([f"{name} (no network)", f"{speed:g}", "", "", clips, "", "", "",
                             _cell(b, "direction_agree_given"), _cell(b, "centroid_error", 2)])
    rows.append(["target (issue 33)", "", "", "", "200", ">= 0.40", ">= 0.50", "", ">= 0.60", "< copy-last"])
    return markdown_table(["run (train.py video-cpu --shapes-speed 2 ...)", "speed", "clips with nothing given",
                           "batch x steps", "clips", "class acc", "coherent motion", "clip FD",
                           "prediction: direction agrees", "centroid error (px)"], rows)


def errors_markdown(folder: Path, exp: list[dict]) -> str:
    """Per-clip centroid errors of each curve run's prediction against both network-free completions
    on the same clips, paired, over all clips and split by whether the clip bounces."""
    from dit.eval.intervals import fmt_ci

    rows = []
    for run, label in CURVE:
        for p in [r for r in exp if r["model"] == run and r["task"] == "prediction"]:
            mine = _scores(folder, p)
            if mine is None:
                continue
            hit = bounced(p["clips"], p["shapes_speed"])
            for name in ("repeat-given", "constant-velocity"):
                other = _scores(folder, _exp(exp, name, "prediction", p["clips"], p["shapes_speed"]))
                if other is None:
                    continue
                cells = []
                for subset in (None, ~hit, hit):
                    d, ci, n = paired_error(mine["centroid_error"], other["centroid_error"], subset)
                    cells.append(f"{fmt_ci(d, ci, 2, sign=True)} ({n})")
                rows.append([label, p["clips"], f"minus {name}", *cells])
    return markdown_table(["run", "clips", "centroid error (px)", "all clips (n)", "clips that do not bounce",
                           "clips that bounce"], rows)


def acceptance_markdown(folder: Path, exp: list[dict], timing: list[dict]) -> str:
    """Issue 33's targets for the preset (PRESET_RUN's rows on its most clips; the timing row of that run):
    "met" when the whole 95% interval clears the target (dit/eval/intervals.py)."""
    from dit.eval.intervals import fmt_ci, verdict

    gens = [r for r in exp if r["model"] == PRESET_RUN and r["task"] == "generation"]
    if not gens:
        return ""
    g = max(gens, key=lambda r: r["clips"])
    p = _exp(exp, PRESET_RUN, "prediction", g["clips"], g["shapes_speed"])
    rows = [[f"generation: {label} {op} {bound:g}", g["clips"], fmt_ci(g[k], g[k + "_ci"]), verdict(g[k + "_ci"], op, bound)]
            for k, label, op, bound in (("class_acc", "per-frame class accuracy", ">=", 0.40),
                                        ("coherent_motion", "coherent motion", ">=", 0.50))]
    rows.append(["prediction: direction agreement >= 0.6", p["clips"], fmt_ci(p["direction_agree_given"],
                 p["direction_agree_given_ci"]), verdict(p["direction_agree_given_ci"], ">=", 0.60)])
    mine, hit = _scores(folder, p), bounced(p["clips"], p["shapes_speed"])
    for name, subset, what in (("repeat-given", None, "copy-last, all clips"),
                               ("constant-velocity", None, "constant velocity, all clips (stretch)"),
                               ("constant-velocity", hit, "constant velocity, clips that bounce (stretch)")):
        other = _scores(folder, _exp(exp, name, "prediction", p["clips"], p["shapes_speed"]))
        d, ci, n = paired_error(mine["centroid_error"], other["centroid_error"], subset)
        rows.append([f"prediction: centroid error minus {what} < 0", n, fmt_ci(d, ci, 2, sign=True),
                     "met" if ci[1] < 0 else "missed" if ci[0] > 0 else "not resolved"])
    t = next((r for r in timing[::-1] if r["run"] == PRESET_RUN and r["clips"] == 200), None)
    if t is not None:
        rows.append(["completing 200 clips with the defaults <= 300 s (2 cores)", 200,
                     f"{t['completion_s']:.0f} s (training: {t['train_steps_per_s']:.2f} steps/s, {t['train_minutes']:g} "
                     f"min for {t['max_steps']:,} steps)",
                     "met" if t["completion_s"] <= 300 else "missed"])
    return markdown_table(["target (issue 33)", "clips", "measured [95% CI]", "verdict"], rows)


def completion_markdown(folder: Path, exp: list[dict], sweeps: list[dict]) -> str:
    """The preset's prediction under other sampler settings (sweeps.jsonl: `video_cpu.py --experiment RUN
    --cfg C --steps N` into a scratch folder), beside the scored default (Euler-50, cfg 3), with the
    centroid error paired clip by clip against that default."""
    from dit.eval.intervals import fmt_ci

    base = _exp(exp, PRESET_RUN, "prediction", 200, 2.0)
    if base is None or not sweeps:
        return ""
    mine = _scores(folder, base)
    rows = []
    for r in [base, *sweeps]:
        passes = r["sampler_steps"] * (1 if r["cfg"] == 1 else 2)
        diff = ""
        if r is not base:
            d, ci, n = paired_error(_scores(folder, r)["centroid_error"], mine["centroid_error"])
            diff = f"{fmt_ci(d, ci, 2, sign=True)} ({n})"
        rows.append([f"{r['sampler']}-{r['sampler_steps']}, cfg {r['cfg']:g}", passes, r["clips"],
                     fmt_ci(r["direction_agree_given"], r["direction_agree_given_ci"]),
                     fmt_ci(r["centroid_error"], r["centroid_error_ci"], 2), diff])
    return markdown_table(["sampler, guidance", "network passes / clip", "clips", "direction agrees with given",
                           "centroid error (px)", "minus the first row's (paired)"], rows)
