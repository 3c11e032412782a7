"""Classifier guidance (ADM) on the built-in shapes: class accuracy against the guidance scale. Run it ALONE.

    python benchmarks/classifier_guidance.py --out benchmarks/classifier_guidance
    python benchmarks/classifier_guidance.py --out benchmarks/classifier_guidance --report

Trained through the real scripts (16 px shapes, pixel space, the Gaussian process of the cpu-demo):
    uncond       train.py cpu-demo --class-dropout-prob 1 --max-steps 1500: an unconditional model
    classifier   train_classifier.py classifier-cpu (Classifier-T/2, 1,500 steps)
    demo         train.py cpu-demo: the class-conditional demo model (5,000 steps), sampled without CFG
Each (model, sampler, scale) draws --samples samples with balanced labels from seeds 0..N-1 (the same
seeds and labels at every scale: paired) and --steps sampler steps; the independent shapes judge
(dit/eval/metrics.py) says which of the 10 shapes each shows, or "other" (no clean shape): accuracy
is the share judged to be its label; "shape" the share judged any shape. An unconditional model
with balanced labels scores (shape share) / 10 by chance. Targets (the issue's): accuracy <= 0.02 at
scale 0, >= 0.08 at 10, >= 0.12 at 30, never falling as the scale grows; on the demo model without
CFG, scale 3 adds >= 0.08. Intervals: accuracy and shape share 95% Wilson score intervals (good near
0), gains a 95% paired percentile bootstrap over samples; they cover the sampling noise of one
training seed per model, not the seed-to-seed spread. "Falls" marks a scale whose paired gain over
the previous scale has its whole interval below 0. Samplers: ddim (the eps
form, ADM eq. 14) and ddpm (the mean shift, ADM Algorithm 1). Every finished unit is a line of
results.jsonl; per-sample judge hits are kept in scores/ for the bootstrap.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dit.cli import ArgumentParser, run_cli  # noqa: E402
from dit.data.shapes import CLASS_NAMES as SHAPE_CLASSES  # noqa: E402
from dit.errors import UserError  # noqa: E402

LEVEL = 0.95
SCALES = {"uncond": [0.0, 1.0, 3.0, 10.0, 30.0], "demo": [0.0, 1.0, 3.0, 10.0]}
SAMPLERS = {"uncond": ["ddim", "ddpm"], "demo": ["ddim"]}
# The targets: accuracy (uncond) and the gain over scale 0 (demo).
TARGETS = {("uncond", 0.0): ("<=", 0.02), ("uncond", 10.0): (">=", 0.08), ("uncond", 30.0): (">=", 0.12)}
DEMO_GAIN = 0.08


def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/classifier_guidance")
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--max-steps", type=int, default=1500, help="training steps of uncond and the classifier")
    p.add_argument("--demo-steps", type=int, default=None, help="training steps of the demo model (default: the preset's)")
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--report", action="store_true")
    args = p.parse_args(argv)
    if args.samples < 10 or args.samples % 10 or args.steps < 2 or args.max_steps < 1 or args.bootstrap < 2:
        raise UserError("--samples a multiple of 10 (balanced labels), --steps >= 2, --max-steps >= 1, --bootstrap >= 2")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "results.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    for r in rows:
        if not args.report and (r["steps"], r["samples"]) != (args.steps, args.samples):
            raise UserError(f"{log} holds rows drawn with --steps {r['steps']} --samples {r['samples']}; pass those "
                            "to continue it, or another --out")
    if not args.report:
        runs = train_all(out, args)
        judge = make_judge(out)
        labels = np.arange(args.samples) % 10
        for model in ("uncond", "demo"):
            for sampler in SAMPLERS[model]:
                for scale in SCALES[model]:
                    if any(r["model"] == model and r["sampler"] == sampler and r["scale"] == scale for r in rows):
                        continue
                    images = generate(runs[model], runs["classifier"], labels, sampler, scale, args)
                    predicted = judge(images)
                    hits = (predicted == labels).astype(np.float64)
                    path = out / "scores" / f"{model}-{sampler}-s{scale:g}.npz"
                    path.parent.mkdir(exist_ok=True)
                    np.savez(path, hits=hits, predicted=predicted, labels=labels)
                    row = {"model": model, "sampler": sampler, "scale": scale, "steps": args.steps,
                           "samples": args.samples, "class_acc": float(hits.mean()),
                           "shape_share": float((predicted < len(SHAPE_CLASSES)).mean()),
                           "scores": str(path.relative_to(out))}
                    rows.append(row)
                    with open(log, "a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(json.dumps(row), flush=True)
    summary = summarise(out, rows, args.bootstrap)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "classifier_guidance.md").write_text(markdown(summary))
    plot(summary, out / "accuracy_vs_scale.png")
    print(markdown(summary))


def train_all(out: Path, args) -> dict:
    runs = out / "runs"
    common = ["--results-dir", str(runs), "--no-progress", "--keep-last", "1"]
    jobs = {
        "uncond": ["train.py", "cpu-demo", "--class-dropout-prob", "1", "--max-steps", str(args.max_steps)],
        "classifier": ["train_classifier.py", "classifier-cpu", "--max-steps", str(args.max_steps)],
        "demo": ["train.py", "cpu-demo"] + (["--max-steps", str(args.demo_steps)] if args.demo_steps else []),
    }
    for name, cmd in jobs.items():
        subprocess.run([sys.executable, str(ROOT / cmd[0]), *cmd[1:], *common, "--run-name", name], check=True, cwd=ROOT)
    return {name: runs / name for name in jobs}


def make_judge(out: Path):
    import torch

    from dit.eval.metrics import ShapesMetric

    metric = ShapesMetric(16, out / "cache")

    def predict(images) -> np.ndarray:
        """The judge's class per image: 0..9 a shape, 10 "other"."""
        x = metric.to_float(images)
        with torch.no_grad():
            return torch.cat([metric.classifier(x[i : i + 500]) for i in range(0, len(x), 500)]).argmax(1).numpy()

    return predict


def generate(run: Path, classifier_run: Path, labels, sampler: str, scale: float, args) -> np.ndarray:
    from dit.autoencoders import load_autoencoder
    from dit.io.checkpoint import load_model
    from dit.processes import process_from_meta
    from dit.sampling.classifier_guidance import check_classifier
    from dit.sampling.generate import generate_images

    model, ckpt = load_model(str(run))
    classifier, cls_ckpt = load_model(str(classifier_run))
    process = process_from_meta(ckpt.meta)
    check_classifier(classifier, cls_ckpt.meta, model, ckpt.meta, process, str(classifier_run))
    model.eval(), classifier.eval().requires_grad_(False)
    vae = load_autoencoder("none")
    out = []
    for a in range(0, len(labels), 100):
        b = min(a + 100, len(labels))
        out.append(generate_images(model, vae, process, range(a, b), labels[a:b], sampler, args.steps, 1.0,
                                   classifier=classifier, classifier_scale=scale))
    return np.concatenate(out)


def summarise(out: Path, rows: list[dict], resamples: int) -> list[dict]:
    """Per row: accuracy, shape share and the paired gains over scale 0 and over the next smaller
    scale, each with a bootstrap interval."""
    scores = {(r["model"], r["sampler"], r["scale"]): np.load(out / r["scores"]) for r in rows}
    hits = {k: v["hits"] for k, v in scores.items()}
    shape = {k: (v["predicted"] < len(SHAPE_CLASSES)).astype(np.float64) for k, v in scores.items()}
    summary = []
    for (model, sampler, scale), h in sorted(hits.items()):
        base = hits.get((model, sampler, 0.0))
        n = len(h)
        rng = np.random.default_rng(0)
        idx = rng.integers(0, n, (resamples, n))
        row = {"model": model, "sampler": sampler, "scale": scale, "samples": n,
               "class_acc": float(h.mean()), "class_acc_ci": wilson(h.sum(), n)}
        sh = shape[(model, sampler, scale)]
        row["shape_share"], row["shape_share_ci"] = float(sh.mean()), wilson(sh.sum(), n)
        if base is not None and scale != 0:
            d = h - base  # the same seeds and labels: paired
            row["gain"], row["gain_ci"] = float(d.mean()), _ci(d[idx].mean(1), d.mean())
            smaller = max(s for (m, sp, s) in hits if (m, sp) == (model, sampler) and s < scale)
            d = h - hits[(model, sampler, smaller)]
            row["step_gain"], row["step_gain_ci"] = float(d.mean()), _ci(d[idx].mean(1), d.mean())
            row["falls"] = row["step_gain_ci"][1] < 0
        target = TARGETS.get((model, scale)) if model == "uncond" else ((">=", DEMO_GAIN) if scale == 3.0 else None)
        if target is not None:
            value = row["class_acc"] if model == "uncond" else row.get("gain", np.nan)
            row["target"] = f"{target[0]} {target[1]}"
            row["meets_target"] = bool(value <= target[1] if target[0] == "<=" else value >= target[1])
        summary.append(row)
    return summary


def _ci(draws: np.ndarray, point: float) -> list[float]:
    """Percentile interval of bootstrap draws of a mean (unbiased: no shift needed)."""
    lo, hi = np.quantile(draws, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return [float(lo), float(hi)]


def wilson(k: float, n: int, z: float = 1.959964) -> list[float]:
    """95% Wilson score interval of a share k / n (keeps its coverage near 0 and 1)."""
    p = k / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def markdown(summary: list[dict]) -> str:
    def cell(r, k):
        sign = "+" if "gain" in k else ""
        return "-" if k not in r else f"{r[k]:{sign}.3f} [{r[k + '_ci'][0]:{sign}.3f}, {r[k + '_ci'][1]:{sign}.3f}]"

    lines = ["| model | sampler (form) | scale | class acc | judged a shape | gain over scale 0 | gain over the "
             "previous scale | target |", "|---|---|---|---|---|---|---|---|"]
    for r in summary:
        form = "eps" if r["sampler"] != "ddpm" else "mean shift"
        target = f"{r['target']}: {'met' if r['meets_target'] else 'missed'}" if "target" in r else ""
        if r.get("falls"):
            target += " FALLS"
        lines.append(f"| {r['model']} | {r['sampler']} ({form}) | {r['scale']:g} | {cell(r, 'class_acc')} | "
                     f"{cell(r, 'shape_share')} | {cell(r, 'gain')} | {cell(r, 'step_gain')} | {target} |")
    return "\n".join(lines) + "\n"


def plot(summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
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
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(run_cli(main))
