"""Sample quality against the number of sampler steps, and the fewest steps that match 250-step DDPM.

    python benchmarks/sampler_quality.py --ckpt results/cpu-demo --num-samples 400 --cfg-scale 3

For a trained model: every sampler (ddpm, ddim, dpm++, unipc, ...) at every step count draws the
same samples (seeds 0..N-1, balanced labels) and is scored with the offline shapes metric
(`--metric shapes`, for the built-in dataset) or FID (`--metric inception --ref ...`). Writes
sampler_quality.csv / .json and sampler_quality.png (quality and wall time vs steps) to --out, and
reports, for each fast sampler, the fewest steps whose quality is within --tolerance (5%) of the
reference (250-step DDPM, the paper's protocol) and the wall-clock speed-up that gives. "Within"
means every metric: the distance (fd_shapes or FID) at most 5% above the reference's, and the
class accuracy (shapes) at least 95% of it, because a few-step sampler's blur can lower a
Fréchet distance on its own. `--report` redoes the summary and plot from the saved rows.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dit.cli import ArgumentParser, positive, run_cli
from dit.errors import UserError  # noqa: E402

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
    p.add_argument("--tolerance", type=float, default=0.05)
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
        finish(data["rows"], {k: data["summary"][k] for k in ("reference", "torch_threads", "num_samples",
                                                              "cfg_scale")}, args)
        return

    import torch

    from dit.io.checkpoint import load_model
    from dit.processes import process_from_meta
    from dit.sampling import sampler_names
    from dit.sampling.generate import generate_images as generate
    from dit.autoencoders.vae import Autoencoder

    SAMPLER_NAMES = sampler_names("gaussian")
    bad = [s for s in args.samplers if s not in SAMPLER_NAMES]
    if bad:
        raise UserError(f"unknown samplers {bad}; choose from {', '.join(SAMPLER_NAMES)}")
    ref_sampler, _, ref_steps = args.reference.partition(":")
    if ref_sampler not in SAMPLER_NAMES or not ref_steps.isdigit():
        raise UserError(f"--reference must be SAMPLER:STEPS, e.g. ddpm:250, got {args.reference!r}")
    if args.num_samples < 2 or args.batch_size < 1 or not 0 < args.tolerance < 1:
        raise UserError("--num-samples must be >= 2, --batch-size positive and --tolerance in (0, 1)")
    if args.metric == "inception" and not args.ref:
        raise UserError("--metric inception needs --ref")
    model, ckpt = load_model(args.ckpt)
    diffusion = process_from_meta(ckpt.meta)
    vae = Autoencoder.load(ckpt.meta.get("vae", "none"))
    n = args.num_samples
    labels = np.arange(n) % model.num_classes
    if args.metric == "shapes":
        from dit.eval.metrics import ShapesMetric

        metric = ShapesMetric(model.input_size * vae.downsample, args.cache_dir,
                              classifier_steps=args.classifier_steps)
    else:
        from dit.eval.metrics import InceptionFeatures, inception_metrics

        extractor = InceptionFeatures()
        metric = lambda images, labels: inception_metrics(images, extractor, args.ref, prc=False,  # noqa: E731
                                                          cache_dir=args.cache_dir)

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
        q = metric(images, labels)
        rows.append({"sampler": sampler, "steps": steps, "seconds": seconds, "images_per_s": n / seconds,
                     **{k: v for k, v in q.items() if k != "num_samples"}})
        print(json.dumps(rows[-1]), flush=True)
    finish(rows, {"reference": args.reference, "torch_threads": torch.get_num_threads(), "num_samples": n,
                  "cfg_scale": args.cfg_scale}, args)


LOWER_BETTER, HIGHER_BETTER = ("fd_shapes", "fid"), ("class_acc", "inception_score")


def finish(rows: list[dict], summary: dict, args) -> None:
    """Summary (fewest steps per sampler within tolerance of the reference on every metric), files, plot."""
    ref_sampler, _, ref_steps = summary["reference"].partition(":")
    ref = next(r for r in rows if r["sampler"] == ref_sampler and r["steps"] == int(ref_steps))
    keys = [k for k in LOWER_BETTER + HIGHER_BETTER if k in ref]
    tol = args.tolerance

    def within(r):
        return all(r[k] <= ref[k] * (1 + tol) if k in LOWER_BETTER else r[k] >= ref[k] * (1 - tol) for k in keys)

    summary.update(reference_quality={k: ref[k] for k in keys}, tolerance=tol)
    for sampler in dict.fromkeys(r["sampler"] for r in rows):
        best = min((r for r in rows if r["sampler"] == sampler and within(r)), key=lambda r: r["steps"], default=None)
        summary[sampler] = None if best is None else {
            "steps": best["steps"], **{k: best[k] for k in keys}, "speedup": ref["seconds"] / best["seconds"]}
    out = Path(args.out)
    (out / "sampler_quality.json").write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    with open(out / "sampler_quality.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, keys, ref, out / "sampler_quality.png")
    print(json.dumps(summary))
    print(f"wrote {out}/sampler_quality.csv, .json and .png")


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
            ax.plot([r["steps"] for r in rr], [r[key] for r in rr], marker="o", label=sampler)
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
