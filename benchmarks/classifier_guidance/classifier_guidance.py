"""Classifier guidance (ADM) on the built-in shapes: class accuracy against the guidance scale. Run it ALONE.

    python benchmarks/classifier_guidance/classifier_guidance.py --out benchmarks/classifier_guidance
    python benchmarks/classifier_guidance/classifier_guidance.py --out benchmarks/classifier_guidance --report

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
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

from dit.cli import ArgumentParser, run_cli
from dit.data.shapes import CLASS_NAMES as SHAPE_CLASSES
from dit.errors import UserError
from dit.eval.records import ResultsLog
from dit.eval.tables import benchmark_module

SCALES = {"uncond": [0.0, 1.0, 3.0, 10.0, 30.0], "demo": [0.0, 1.0, 3.0, 10.0]}
SAMPLERS = {"uncond": ["ddim", "ddpm"], "demo": ["ddim"]}


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
    log = ResultsLog(out / "results.jsonl")
    rows = log.rows
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
                    np.savez_compressed(path, hits=hits.astype(np.uint8), predicted=predicted.astype(np.uint8),
                                        labels=labels.astype(np.uint8))
                    row = {"model": model, "sampler": sampler, "scale": scale, "steps": args.steps,
                           "samples": args.samples, "class_acc": float(hits.mean()),
                           "shape_share": float((predicted < len(SHAPE_CLASSES)).mean()),
                           "scores": str(path.relative_to(out))}
                    rows.append(log.add(**row))
    tables = benchmark_module("classifier_guidance", "tables")
    summary = tables.summarise(out, rows, args.bootstrap)
    tables.plot(summary, out / "accuracy_vs_scale.png")
    print(tables.markdown(summary))


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


if __name__ == "__main__":
    sys.exit(run_cli(main))
