"""Sample quality against the number of sampler steps, and the fewest steps that match 250-step DDPM.

    python benchmarks/sampler_quality/sampler_quality.py --ckpt results/cpu-demo --num-samples 400 --cfg-scale 3

For a trained model: every sampler (ddpm, ddim, dpm++, unipc, ...) at every step count draws the
same samples (seeds 0..N-1, balanced labels) and is scored with the offline shapes metric
(`--metric shapes`, for the built-in dataset) or FID (`--metric inception --ref ...`). Writes
sampler_quality.csv / .json / .md and sampler_quality.png (quality and wall time vs steps) to --out,
and reports, for each fast sampler, the fewest steps that match the reference (250-step DDPM, the
paper's protocol) and the wall-clock speed-up that gives.

Every quality number comes with a 95% bootstrap interval: the N samples are resampled with
replacement (--bootstrap 200 times, --bootstrap-seed 0) and each metric recomputed on the resample
from per-sample features computed once (shapes: the classifier's features and whether it assigns
each sample its class; inception: pool_3 features and logits). The interval is the 2.5th..97.5th
percentile of the resampled values, shifted by the bootstrap's estimate of the bias (their mean
minus the point estimate): a resample repeats samples, which inflates a Fréchet distance (whose
estimate is biased upwards at finite N), so unshifted percentiles of a distance can lie wholly above
the number they qualify; for an accuracy the shift is ~0. Distances are clipped at 0. The same
resampled index sets are used for every row, so samplers (which share seeds and labels) are
compared on the same draws.

"Matches the reference" means, on every metric, that the sampler's interval overlaps the
reference's interval or lies on its better side: a distance (fd_shapes, FID) whose interval starts
at or below the top of the reference's, and a class accuracy / Inception Score whose interval
reaches the bottom of the reference's, i.e. not worse than the reference beyond what N samples can
resolve. Both metrics must hold, because a few-step sampler's blur can lower a Fréchet distance
on its own. With --bootstrap 0 (no intervals) the older rule applies: every metric within
--tolerance (5%) of the reference's point estimate. `--report` redoes the summary and plot from
the saved rows.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np


from dit.cli import ArgumentParser, positive, run_cli
from dit.errors import UserError  # noqa: E402
from dit.eval.scoring import (HIGHER_BETTER, LEVEL, LOWER_BETTER, InceptionScorer,  # noqa: E402
                              ShapesScorer, bootstrap)

DEFAULT_GRID = {"ddpm": [25, 50, 100, 250], "ddim": [5, 10, 15, 25, 50], "dpm++": [5, 10, 15, 25, 50],
                "unipc": [5, 10, 15, 25, 50]}


def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--num-samples", type=int, default=400)
    p.add_argument("--cfg-scale", type=float, default=3.0)
    p.add_argument("--samplers", nargs="+", default=list(DEFAULT_GRID))
    p.add_argument("--steps", type=int, nargs="+", help="one step grid for every sampler (default: per sampler)")
    p.add_argument("--reference", default="ddpm:250", help="SAMPLER:STEPS to match")
    p.add_argument("--tolerance", type=float, default=0.05, help="the match rule without intervals (--bootstrap 0)")
    p.add_argument("--bootstrap", type=int, default=200, help="resamples for the 95%% intervals (0: none)")
    p.add_argument("--bootstrap-seed", type=int, default=0)
    p.add_argument("--metric", choices=["shapes", "inception"], default="shapes")
    p.add_argument("--ref", help="FID reference (--metric inception)")
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--cache-dir", default="results/eval-cache")
    p.add_argument("--classifier-steps", type=positive(), help="shapes metric: classifier training steps")
    p.add_argument("--out", default="results/sampler-quality")
    p.add_argument("--report", action="store_true", help="only redo the summary and plot from --out")
    args = p.parse_args(argv)
    if args.report:
        saved = Path(args.out) / "sampler_quality.json"
        if not saved.exists():
            raise UserError(f"--report: {saved} does not exist; run the benchmark first")
        data = json.loads(saved.read_text())
        kept = ("reference", "torch_threads", "num_samples", "cfg_scale", "metric", "bootstrap")
        finish(data["rows"], {k: data["summary"][k] for k in kept if k in data["summary"]}, args)
        return

    import torch

    from dit.io.checkpoint import load_model
    from dit.processes import process_from_meta
    from dit.sampling import sampler_names
    from dit.sampling.generate import generate_images as generate
    from dit.autoencoders import load_autoencoder

    SAMPLER_NAMES = sampler_names("gaussian")
    bad = [s for s in args.samplers if s not in SAMPLER_NAMES]
    if bad:
        raise UserError(f"unknown samplers {bad}; choose from {', '.join(SAMPLER_NAMES)}")
    ref_sampler, _, ref_steps = args.reference.partition(":")
    if ref_sampler not in SAMPLER_NAMES or not ref_steps.isdigit():
        raise UserError(f"--reference must be SAMPLER:STEPS, e.g. ddpm:250, got {args.reference!r}")
    if args.num_samples < 2 or args.batch_size < 1 or not 0 < args.tolerance < 1:
        raise UserError("--num-samples must be >= 2, --batch-size positive and --tolerance in (0, 1)")
    if args.bootstrap < 0 or args.bootstrap == 1:
        raise UserError(f"--bootstrap must be 0 (no intervals) or at least 2 resamples, got {args.bootstrap}")
    if args.metric == "inception" and not args.ref:
        raise UserError("--metric inception needs --ref")
    model, ckpt = load_model(args.ckpt)
    diffusion = process_from_meta(ckpt.meta)
    vae = load_autoencoder(ckpt.meta.get("vae", "none"))
    n = args.num_samples
    labels = np.arange(n) % model.num_classes
    if args.metric == "shapes":
        from dit.eval.metrics import ShapesMetric

        scorer = ShapesScorer(ShapesMetric(model.input_size * vae.downsample, args.cache_dir,
                                           classifier_steps=args.classifier_steps))
    else:
        scorer = InceptionScorer(args.ref, args.cache_dir)

    grid = [(s, k) for s in args.samplers for k in (args.steps or DEFAULT_GRID.get(s, [5, 10, 25, 50]))]
    if (ref_sampler, int(ref_steps)) not in grid:
        grid.append((ref_sampler, int(ref_steps)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for sampler in dict.fromkeys(s for s, _ in grid):  # one-time costs (imports, scheduler set-up) off the clock
        generate(model, vae, diffusion, [0], labels[:1], sampler, 2, args.cfg_scale)
    rows = []
    for sampler, steps in grid:
        start = time.perf_counter()
        images = np.concatenate([
            generate(model, vae, diffusion, range(a, min(a + args.batch_size, n)), labels[a : a + args.batch_size],
                     sampler, steps, args.cfg_scale)
            for a in range(0, n, args.batch_size)])
        seconds = time.perf_counter() - start
        data = scorer.per_sample(images, labels)
        point = scorer.statistics(data)
        row = {"sampler": sampler, "steps": steps, "seconds": seconds, "images_per_s": n / seconds, **point}
        for key, (lo, hi) in bootstrap(scorer, data, point, args.bootstrap, args.bootstrap_seed).items():
            row[f"{key}_lo"], row[f"{key}_hi"] = lo, hi
        rows.append(row)
        print(json.dumps(rows[-1]), flush=True)
    finish(rows, {"reference": args.reference, "torch_threads": torch.get_num_threads(), "num_samples": n,
                  "cfg_scale": args.cfg_scale, "metric": args.metric,
                  "bootstrap": {"resamples": args.bootstrap, "seed": args.bootstrap_seed, "level": LEVEL}}, args)


# --- per-sample scores, statistics on any resample, bootstrap intervals ----------------------------


# --- the match rule, summary, files, plot -------------------------------------------------------


def match_rule(rows: list[dict], ref: dict, keys: list[str], tolerance: float):
    """(description, predicate on a row): the interval rule when every row has intervals, else tolerance."""
    if all(f"{k}_lo" in r and f"{k}_hi" in r for r in rows for k in keys):
        def matches(r):
            return all(r[f"{k}_lo"] <= ref[f"{k}_hi"] if k in LOWER_BETTER else r[f"{k}_hi"] >= ref[f"{k}_lo"]
                       for k in keys)
        return ("on every metric, its 95% bootstrap interval overlaps the reference's or lies on the better side "
                "of it (not worse beyond what the sample size resolves)"), matches

    def within(r):
        return all(r[k] <= ref[k] * (1 + tolerance) if k in LOWER_BETTER else r[k] >= ref[k] * (1 - tolerance)
                   for k in keys)
    return f"every metric within {tolerance:.0%} of the reference's point estimate (no intervals)", within


def _interval(r: dict, k: str):
    return [r[f"{k}_lo"], r[f"{k}_hi"]] if f"{k}_lo" in r else None


def finish(rows: list[dict], summary: dict, args) -> None:
    """Summary (fewest steps per sampler matching the reference on every metric), files, plot."""
    ref_sampler, _, ref_steps = summary["reference"].partition(":")
    ref = next(r for r in rows if r["sampler"] == ref_sampler and r["steps"] == int(ref_steps))
    keys = [k for k in LOWER_BETTER + HIGHER_BETTER if k in ref]
    rule, matches = match_rule(rows, ref, keys, args.tolerance)
    summary.update(reference_quality={k: ref[k] for k in keys},
                   reference_ci={k: _interval(ref, k) for k in keys}, match_rule=rule, tolerance=args.tolerance)
    for sampler in dict.fromkeys(r["sampler"] for r in rows):
        best = min((r for r in rows if r["sampler"] == sampler and matches(r)), key=lambda r: r["steps"], default=None)
        summary[sampler] = None if best is None else {
            "steps": best["steps"], **{k: best[k] for k in keys}, **{f"{k}_ci": _interval(best, k) for k in keys},
            "speedup": ref["seconds"] / best["seconds"]}
    out = Path(args.out)
    (out / "sampler_quality.json").write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    with open(out / "sampler_quality.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "sampler_quality.md").write_text(markdown(rows, summary, keys, matches))
    plot(rows, keys, ref, out / "sampler_quality.png")
    print(json.dumps(summary))
    print(f"wrote {out}/sampler_quality.csv, .json, .md and .png")


def markdown(rows, summary, keys, matches) -> str:
    def cell(r, k):
        ci = _interval(r, k)
        return f"{r[k]:.4g}" + (f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "")

    boot = summary.get("bootstrap") or {}
    lines = [f"# Sampler quality vs steps (reference {summary['reference']}, {summary.get('num_samples')} samples, "
             f"cfg {summary.get('cfg_scale')})", ""]
    if boot.get("resamples"):
        lines.append(f"Intervals: {boot['level']:.0%} percentile bootstrap over {boot['resamples']} resamples of the "
                     f"samples (seed {boot['seed']}).")
    lines += [f"A row matches the reference when {summary['match_rule']}.", "",
              "| sampler | steps | seconds | " + " | ".join(keys) + " | matches |",
              "|---|---|---|" + "---|" * len(keys) + "---|"]
    for r in rows:
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['seconds']:.2f} | "
                     + " | ".join(cell(r, k) for k in keys) + f" | {'yes' if matches(r) else 'no'} |")
    lines += ["", "Fewest steps that match the reference:", "", "| sampler | steps | speed-up |", "|---|---|---|"]
    for sampler in dict.fromkeys(r["sampler"] for r in rows):
        best = summary[sampler]
        lines.append(f"| {sampler} | "
                     + ("none | - |" if best is None else f"{best['steps']} | {best['speedup']:.1f}x |"))
    return "\n".join(lines) + "\n"


def plot(rows, keys, ref, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(k, k + (" (lower is better)" if k in LOWER_BETTER else " (higher is better)")) for k in keys]
    panels.append(("seconds", "seconds for all samples"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6))
    for sampler in dict.fromkeys(r["sampler"] for r in rows):
        rr = sorted((r for r in rows if r["sampler"] == sampler), key=lambda r: r["steps"])
        for ax, (key, _) in zip(axes, panels):
            steps, values = [r["steps"] for r in rr], [r[key] for r in rr]
            if key != "seconds" and all(_interval(r, key) for r in rr):  # 95% intervals as error bars
                err = [[r[key] - r[f"{key}_lo"] for r in rr], [r[f"{key}_hi"] - r[key] for r in rr]]
                ax.errorbar(steps, values, yerr=np.clip(err, 0, None), marker="o", capsize=3, label=sampler)
            else:
                ax.plot(steps, values, marker="o", label=sampler)
    for ax, (key, label) in zip(axes, panels):
        if key != "seconds":
            ax.axhline(ref[key], color="gray", ls="--", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("sampler steps")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(run_cli(main))
