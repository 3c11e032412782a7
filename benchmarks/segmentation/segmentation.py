"""EmerDiff on the CPU-demo DiT: shape-against-background masks of the built-in shapes, scored exactly.

    python benchmarks/segmentation/segmentation.py --out benchmarks/segmentation     # trains (or reuses) the model, sweeps, tests
    python benchmarks/segmentation/segmentation.py --out benchmarks/segmentation --report

The model is the quick-start demo of DiT's recipe, trained by the real train.py (`train.py cpu-demo`:
16 px shapes in pixel space, Gaussian diffusion with learned sigma, 5,000 steps) into <out>/runs/demo;
an interrupted run resumes, a finished one is reused. Ground truth: the renderer's coverage > 1/2
(dit/segmentation/truth.py). Clusters are mapped to shape / background by majority vote per image;
the score is the binary mIoU (mean of the two classes' IoU) per image, and the boundary F-score of the
shape's inner boundary within 1 px (and exact, 0 px), each averaged over images with a 95% percentile
bootstrap interval over images.

Methods, K clusters per image:
    (a) coarse-nearest   k-means of the token features (8 x 8 tokens), each token's label on its 2 x 2 pixels
    (b) coarse-bilinear  the same clusters, one-hot masks up-sampled bilinearly, argmax
    (c) emerdiff         (a)'s clusters refined by the modulated denoising (dit/segmentation/emerdiff.py)
    (c') emerdiff-const  the paper's recipe unchanged: a constant offset on every channel (LayerNorm removes it)
    (d) pixel-kmeans     k-means on the pixels' RGB colours: an easy upper bound on this data
Settings are chosen on a validation set (--val images from another seed), first the features (by
(a)'s mIoU), then t_m, lam, the modulated block and the blur (by (c)'s), then the offset direction
(one random zero-mean direction, or per-region contrast); the test set (--test images) is scored once
with them. Files in --out: results.jsonl (the settings, the sweep and the test rows, each with its
commit, machine and command), scores/test.npz (the per-image scores: tables.py recomputes every
interval from them) and the figure --figure (default benchmarks/segmentation/segmentation.png).
The rows are written whole when the run ends (replacing the file; a killed run leaves the old one).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

from dit.cli import ArgumentParser, positive, run_cli  # noqa: E402
from dit.errors import UserError  # noqa: E402
from dit.eval.records import existing_log, write_rows  # noqa: E402
from dit.eval.tables import benchmark_module  # noqa: E402

TRAIN = ["cpu-demo", "--run-name", "demo", "--no-progress"]  # the quick-start demo of DiT's recipe
FEATURE_SWEEP = {"feature": ["hidden", "query"], "feature_block": [0, 1, 2, 3], "feature_t": [20, 50]}
MOD_SWEEP = {"t_m": [100, 200, 281, 400, 500], "lam": [0.5, 1.0, 2.0, 4.0], "block": [1, 2, 3]}
BLURS = [0.0, 0.5, 1.0]
SCORES = "scores/test.npz"  # per-image scores, keyed k{K}-{method}-{score}


def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/segmentation")
    p.add_argument("--figure", default="benchmarks/segmentation/segmentation.png")
    p.add_argument("--val", type=positive(), default=50, help="validation images (settings are chosen on them)")
    p.add_argument("--test", type=positive(), default=200, help="test images")
    p.add_argument("--steps", type=positive(), default=10, help="DDIM steps between the image and t_m")
    p.add_argument("--batch-size", type=positive(), default=25)
    p.add_argument("--report", action="store_true", help="only the tables, from results.jsonl and scores/")
    p.add_argument("--train-args", default="", help="extra train.py flags (e.g. --max-steps 50 for a smoke run)")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.report:
        existing_log(out)
        print(benchmark_module("segmentation", "tables").tables(out)["test"])
        return
    out.mkdir(parents=True, exist_ok=True)
    run = train(out / "runs", args)

    from dit.autoencoders import load_autoencoder
    from dit.io.checkpoint import load_model
    from dit.processes import process_from_meta
    from dit.segmentation.truth import SEED, VALIDATION_SEED, shapes_with_truth

    model, ckpt = load_model(str(run))
    model.requires_grad_(False)
    process, vae = process_from_meta(ckpt.meta), load_autoencoder("none")
    size = model.input_size
    meta = {"kind": "meta", "checkpoint": str(run.relative_to(out)), "train_step": ckpt.meta.get("step"),
            "val": args.val, "test": args.test, "steps": args.steps, "batch_size": args.batch_size}
    rows = [meta]
    val = shapes_with_truth(args.val, size, VALIDATION_SEED)
    best, sweep_rows = choose(model, process, vae, val, args)
    rows += sweep_rows
    test = shapes_with_truth(args.test, size, SEED)
    test_rows, figure_data, per_image = evaluate(model, process, vae, test, best, args)
    rows += test_rows
    (out / "scores").mkdir(exist_ok=True)
    np.savez_compressed(out / SCORES, **per_image)
    write_rows(out / "results.jsonl", rows)
    draw_figure(figure_data, test, Path(args.figure))
    print(benchmark_module("segmentation", "tables").tables(out)["test"])


def train(runs: Path, args) -> Path:
    """The demo model through the real train.py, resumed or reused (a finished run is not retrained)."""
    from dit.io.checkpoint import load_weights

    run = runs / "demo"
    cmd = [sys.executable, str(ROOT / "train.py"), *TRAIN, "--results-dir", str(runs), *shlex.split(args.train_args)]
    export = run / "export.safetensors"
    config = json.loads((run / "config.json").read_text()) if (run / "config.json").exists() else {}
    if export.exists() and load_weights(str(export)).meta.get("step") == config.get("max_steps"):
        print(f"reusing {run} (finished at step {config['max_steps']})")
        return run
    res = subprocess.run(cmd, cwd=ROOT)
    if res.returncode != 0:
        raise UserError(f"training failed (exit status {res.returncode}, output above): {shlex.join(cmd)}")
    return run


# --- running the methods ---------------------------------------------------------------------------


def run_emerdiff(model, process, vae, images, s, args, seeds_from: int = 0):
    """Coarse labels (N, h, w) and difference maps (N, K, H, W) of every image, in batches."""
    import torch

    from dit.segmentation import image_seeds, segment

    segs = []
    for a in range(0, len(images), args.batch_size):
        b = min(a + args.batch_size, len(images))
        segs.append(segment(model, process, vae, images[a:b], s, image_seeds(seeds_from, range(a, b))))
    return {key: torch.cat([getattr(g, key) for g in segs]) for key in ("coarse", "features", "diffs")}


def run_coarse(model, process, images, s):
    from dit.segmentation import image_seeds
    from dit.segmentation.emerdiff import coarse_masks

    side = model.input_size // model.patch_size
    labels, feats = coarse_masks(model, process, images, s, image_seeds(0, range(len(images))))
    return labels.view(-1, side, side)


def pixel_kmeans(images, k: int):
    from dit.segmentation import image_seeds
    from dit.segmentation.kmeans import kmeans

    N, C, H, W = images.shape
    return kmeans(images.flatten(2).transpose(1, 2), k, image_seeds(0, range(N))).view(N, H, W)


def miou_of(labels, truth, k) -> float:
    from dit.segmentation.scores import score

    return float(score(labels, truth, k)["miou"].mean())


def choose(model, process, vae, val, args):
    """Settings with the best validation mIoU: features first (by the coarse masks), then the modulation."""
    from dit.segmentation import Settings
    from dit.segmentation.assign import assign, upsample_labels

    images, truth, _ = val
    size = tuple(truth.shape[-2:])
    rows, best_f = [], None
    for feature, block, t in itertools.product(*FEATURE_SWEEP.values()):
        s = Settings(k=2, feature=feature, feature_block=block, feature_t=t, steps=args.steps).resolve(model, process)
        coarse = run_coarse(model, process, images, s)
        m = miou_of(upsample_labels(coarse, 2, size), truth, 2)
        rows.append({"kind": "sweep-features", "feature": feature, "feature_block": block, "feature_t": t, "val_miou_a": m})
        print(json.dumps(rows[-1]), flush=True)
        if best_f is None or m > best_f[0]:
            best_f = (m, s)
    base = best_f[1]
    best = None
    for t_m, lam, block in itertools.product(*MOD_SWEEP.values()):
        s = dataclasses.replace(base, t_m=t_m, lam=lam, block=block)
        t0 = time.perf_counter()
        diffs = run_emerdiff(model, process, vae, images, s, args)["diffs"]
        seconds = time.perf_counter() - t0
        for blur in BLURS:
            m = miou_of(assign(diffs, blur), truth, 2)
            rows.append({"kind": "sweep-modulation", "t_m": t_m, "lam": lam, "block": block, "blur": blur,
                         "val_miou_c": m, "seconds": seconds})
            if best is None or m > best[0]:
                best = (m, dataclasses.replace(s, blur=blur))
        print(json.dumps(rows[-1]), flush=True)
    # The offset direction, at the chosen settings: one random direction for all, or per-region contrast.
    for kind in ("random", "contrast"):
        diffs = run_emerdiff(model, process, vae, images, dataclasses.replace(best[1], direction=kind), args)["diffs"]
        m = miou_of(assign(diffs, best[1].blur), truth, 2)
        rows.append({"kind": "sweep-direction", "direction": kind, "val_miou_c": m})
        print(json.dumps(rows[-1]), flush=True)
        if m > best[0]:
            best = (m, dataclasses.replace(best[1], direction=kind))
    return best[1], rows


def evaluate(model, process, vae, test, s, args):
    """Test rows for K = 2 and 3, every method's mean scores, and the per-image scores behind them
    (tables.py draws the intervals, and the paired gain over the coarse masks, from those)."""
    from dit.segmentation.assign import bilinear_labels, region_scores, upsample_labels
    from dit.segmentation.scores import score

    images, truth, _ = test
    size = tuple(truth.shape[-2:])
    rows, figure, scores = [], {}, {}
    for k in (2, 3):
        sk = dataclasses.replace(s, k=k)
        t0 = time.perf_counter()
        res = run_emerdiff(model, process, vae, images, sk, args)
        coarse, diffs = res["coarse"], res["diffs"]
        seconds = (time.perf_counter() - t0) / len(images)
        refined = region_scores(diffs, sk.blur).argmax(1)
        const_diffs = run_emerdiff(model, process, vae, images, dataclasses.replace(sk, direction="constant"), args)["diffs"]
        methods = {
            "coarse-nearest": upsample_labels(coarse, k, size),
            "coarse-bilinear": bilinear_labels(res["features"], coarse, k, size),
            "emerdiff": refined,
            "emerdiff-const": region_scores(const_diffs, sk.blur).argmax(1),
            "pixel-kmeans": pixel_kmeans(images, k),
        }
        for name, labels in methods.items():
            sc = score(labels, truth, k)
            scores.update({f"k{k}-{name}-{key}": values.astype(np.float32) for key, values in sc.items()})
            row = {"kind": "test", "k": k, "method": name, "images": len(images), "scores": SCORES,
                   **{key: float(values.mean()) for key, values in sc.items()}}
            if name == "emerdiff":
                row["seconds_per_image"] = seconds
                row["const_max_diff"] = float(const_diffs.max())
            rows.append(row)
            print(json.dumps(row), flush=True)
        if k == 2:
            figure = {"coarse": methods["coarse-nearest"], "refined": refined, "diffs": diffs}
    return rows, figure, scores


# --- reporting -----------------------------------------------------------------------------------------


def draw_figure(data, test, path: Path, n: int = 8) -> None:
    """Rows of test images: the image, the coarse mask, the refined mask, the truth (K = 2), and the
    difference maps of the two regions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, truth, _ = test
    n = min(n, len(images))
    cols = ["image", "coarse (a)", "refined (c)", "truth", "|I- - I+|, region 0", "|I- - I+|, region 1"]
    fig, axes = plt.subplots(n, len(cols), figsize=(1.6 * len(cols), 1.6 * n), squeeze=False)
    for i in range(n):
        panels = [((images[i].permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy(), data["coarse"][i], data["refined"][i],
                  truth[i], data["diffs"][i, 0], data["diffs"][i, 1]]
        for j, (ax, panel) in enumerate(zip(axes[i], panels)):
            ax.imshow(panel, cmap=None if j == 0 else ("magma" if j >= 4 else "gray"), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(run_cli(main))
