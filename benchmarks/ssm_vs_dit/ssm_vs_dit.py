"""DiffuSSM against the CPU-demo DiT at equal parameters on the built-in shapes. Run it ALONE.

    python benchmarks/ssm_vs_dit/ssm_vs_dit.py --out benchmarks/ssm_vs_dit             # trains 3 models, scores them
    python benchmarks/ssm_vs_dit/ssm_vs_dit.py --out benchmarks/ssm_vs_dit --report    # the table again, from results.jsonl

Three networks, trained by the real train.py with one recipe, the cpu-demo preset's (16 px shapes in
pixel space, batch 16, AdamW lr 2e-3, 100 warm-up steps, cosine to 0 at --max-steps = 5,000, EMA
0.999 with warm-up), from the same --seed:
    dit      DiT-S/2 shape at width 128, depth 4, 2 heads: the CPU demo itself (1.28M parameters, 64 tokens)
    ssm-p1   DiffuSSM-CPU/1 at width 120, depth 4 (1.24M): 256 positions, no patchification (the paper's)
    ssm-p2   DiffuSSM-CPU/2 at width 120, depth 4 (1.25M): 64 tokens, DiT's patchification, no attention
ssm-p2 against dit isolates "no attention"; ssm-p1 against ssm-p2 "no patchify".

Evaluation: each model's EMA weights draw --samples samples (1,000) with balanced labels (i % 10) from
seeds 0..N-1 (the same seeds and labels for every model: paired), DDIM with --steps (50), cfg 3, scored
by the shapes judge (dit/eval/metrics.py ShapesMetric: class accuracy, and fd_shapes, a Fréchet
distance in the judge's features, not FID). Intervals: 95% percentile bootstrap over the samples
(--bootstrap resamples), bias-shifted as benchmarks/sampler_quality/sampler_quality.py's; the ratios to the DiT
(accuracy ratio, FD ratio) are computed on the same resampled index sets for every model (paired).
Targets: accuracy ratio >= 0.8 and FD ratio <= 1.25, judged on the point estimates ("resolved" when
the whole interval is on that side). The intervals cover the sampling noise of one training seed
per model, not the seed-to-seed spread.

Cost: seconds per training step, the median of 1 / steps_per_s over train.py's logged windows
(metrics.jsonl; the first window, which holds the start-up, dropped when there are others): only
meaningful when train.py ran alone on the machine. The quality runs can share the machine (they are
step-based), so `--time` adds a separate pass, to be run ALONE: each model trains --time-steps steps
(300) from scratch in <out>/timing/<model> with --log-every 50, and its "timing" row's seconds per step
replace the training run's in the table. GFLOPs: forward multiply-accumulates per
image at batch 1, S4D kernel generation and FFT convolution included (dit/analysis/flops.py
forward_cost; the kernels are built once per forward, so at a larger batch a DiffuSSM's per-image
cost is lower).

Files in --out: runs/<model> (train.py's run directories: an interrupted benchmark resumes them),
results.jsonl (one line per finished unit: a trained model, a scored model), scores/<model>.npz (per
sample judge features and hits) and scores/reference.npz (the judge's reference statistics), so
that --report needs neither the models nor the judge (commit results.jsonl and scores/: tables.py
renders RESULTS.md's table from them). The judge's
cache is --cache (default <out>/cache), seeded from benchmarks/time_to_quality/cache when that holds
the judge's files (the judge is deterministic, so a copy is the same judge).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

from dit.cli import ArgumentParser, positive, run_cli
from dit.errors import UserError
from dit.eval.intervals import shifted_interval
from dit.eval.records import ResultsLog
from dit.eval.tables import benchmark_module

SSM = ["--arch", "diffussm", "--hidden-size", "120", "--depth", "4"]
MODELS = {  # train.py flags on top of the cpu-demo preset
    "dit": [],
    "ssm-p1": [*SSM, "--model", "DiffuSSM-CPU/1"],
    "ssm-p2": [*SSM, "--model", "DiffuSSM-CPU/2"],
}
BASELINE = "dit"
BASE = ["cpu-demo", "--keep-last", "1", "--sample-steps", "2", "--no-progress"]  # previews are not the evaluation
CFG = 3.0
SAMPLER = "ddim"
SHARED_CACHE = ROOT / "benchmarks" / "time_to_quality" / "cache"
KEYS = ("fd_shapes", "class_acc")


def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/ssm_vs_dit")
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--max-steps", type=positive(), default=5000, help="training steps (the cosine schedule's length)")
    p.add_argument("--seed", type=int, default=0, help="the training seed of every model")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--steps", type=positive(), default=50, help="DDIM steps")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--cache", help="the judge's cache directory (default <out>/cache)")
    p.add_argument("--classifier-steps", type=positive(), help="the judge's training steps (default: ShapesMetric's)")
    p.add_argument("--train-args", default="", help="extra train.py flags for every model (e.g. --shapes-images 64)")
    p.add_argument("--report", action="store_true", help="only rebuild the table from results.jsonl")
    p.add_argument("--time", action="store_true", help="also time each model's step in a separate short run (ALONE)")
    p.add_argument("--time-steps", type=positive(), default=300, help="steps of each --time run")
    args = p.parse_args(argv)
    if args.samples < 10 or args.samples % 10 or args.bootstrap < 2 or args.steps < 2:
        raise UserError("--samples a multiple of 10 (balanced labels), --steps >= 2 and --bootstrap >= 2, please")
    if BASELINE not in args.models:
        raise UserError(f"--models must include {BASELINE} (the ratios are to it)")
    out = Path(args.out)
    log = ResultsLog(out / "results.jsonl")
    rows = log.rows
    if args.report:
        if not rows:
            raise UserError(f"--report: {log.path} holds no results yet; run the benchmark first")
    else:
        check_settings(rows, args)
        out.mkdir(parents=True, exist_ok=True)
        judge = None
        for model in args.models:
            if not find(rows, "train", model):
                log.add(**train(model, out, args))
            if not find(rows, "quality", model):
                judge = judge or make_judge(out, args)
                log.add(**evaluate(model, out, judge, args))
        for model in args.models if args.time else []:
            if not find(rows, "timing", model):
                log.add(**time_steps(model, out, args))
    print(benchmark_module("ssm_vs_dit", "tables").markdown(summarise(out, rows, args.bootstrap)))


def settings(args) -> dict:
    """What every row of one benchmark shares: a row drawn otherwise cannot be compared with it."""
    return {"train": {"max_steps": args.max_steps, "seed": args.seed, "train_args": args.train_args},
            "quality": {"samples": args.samples, "steps": args.steps, "cfg": CFG,
                        "classifier_steps": args.classifier_steps},
            "timing": {"time_steps": args.time_steps, "train_args": args.train_args}}


def check_settings(rows: list[dict], args) -> None:
    for r in rows:
        want = settings(args)[r["kind"]]
        got = {k: r.get(k) for k in want}
        if got != want:
            flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in got.items() if v is not None and k != "cfg")
            raise UserError(f"{r['model']}'s {r['kind']} row was made with {flags}: pass the same, or another --out")


def find(rows: list[dict], kind: str, model: str) -> dict | None:
    return next((r for r in rows if r["kind"] == kind and r["model"] == model), None)


# --- the units: train one model, score one model ---------------------------------------------------


def run_train(model: str, runs: Path, max_steps: int, args, *extra: str) -> tuple[Path, list[float]]:
    """train.py for `model` into runs/<model> (resumed when it is there); (run dir, its steps/s windows)."""
    import shlex

    cmd = [sys.executable, str(ROOT / "train.py"), *BASE, *MODELS[model], "--max-steps", str(max_steps),
           "--seed", str(args.seed), "--results-dir", str(runs), "--run-name", model, *extra,
           *shlex.split(args.train_args)]
    res = subprocess.run(cmd, cwd=ROOT)
    if res.returncode != 0:
        raise UserError(f"training {model} failed (exit status {res.returncode}, output above): {shlex.join(cmd)}")
    run = runs / model
    return run, [m["steps_per_s"] for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def seconds_per_step(windows: list[float]) -> float:
    timed = windows[1:] or windows  # the first window holds the start-up
    return statistics.median(1 / w for w in timed)


def time_steps(model: str, out: Path, args) -> dict:
    """A short run from scratch, alone on the machine, for the step time only (its weights are not used)."""
    runs = out / "timing"
    if (runs / model).exists():
        shutil.rmtree(runs / model)  # an interrupted timing run starts again: a resumed one mixes two start-ups
    every = ["--log-every", str(min(50, args.time_steps)), "--ckpt-every", str(args.time_steps)]
    _, windows = run_train(model, runs, args.time_steps, args, *every)
    return {"kind": "timing", "model": model, **settings(args)["timing"], "step_s": seconds_per_step(windows),
            "windows": windows, "omp_threads": os.environ.get("OMP_NUM_THREADS")}


def train(model: str, out: Path, args) -> dict:
    """Train (or resume) `model` through the real train.py; its size, forward cost and step time."""
    from dit.analysis.flops import count_params, forward_cost
    from dit.io.checkpoint import load_model

    run, windows = run_train(model, out / "runs", args.max_steps, args)
    network, _ = load_model(str(run))
    cost = forward_cost(network)
    return {"kind": "train", "model": model, **settings(args)["train"], "params": count_params(network),
            "gflops": cost.total / 1e9, "gflops_counted": cost.counted / 1e9, "gflops_s4d": cost.analytic / 1e9,
            "step_s": seconds_per_step(windows), "windows": windows,
            "omp_threads": os.environ.get("OMP_NUM_THREADS")}


def make_judge(out: Path, args):
    """The shapes judge, per sample (dit/eval/scoring.py ShapesScorer), its cache seeded from the shared one."""
    from dit.eval.scoring import seeded_scorer

    return seeded_scorer(out, Path(args.cache or out / "cache"), [SHARED_CACHE], args.classifier_steps)


def evaluate(model: str, out: Path, judge, args) -> dict:
    """`model`'s EMA weights: --samples samples from seeds 0..N-1, balanced labels, DDIM, cfg 3, judged."""
    import torch

    from dit.autoencoders import load_autoencoder
    from dit.io.checkpoint import load_model
    from dit.processes import process_from_meta
    from dit.sampling.generate import generate_images

    network, ckpt = load_model(str(out / "runs" / model))
    network.eval()
    process, vae = process_from_meta(ckpt.meta), load_autoencoder("none")
    n = args.samples
    labels = np.arange(n) % network.num_classes
    with torch.no_grad():
        images = np.concatenate([generate_images(network, vae, process, range(a, min(a + 250, n)), labels[a:a + 250],
                                                 SAMPLER, args.steps, CFG) for a in range(0, n, 250)])
    data = judge.per_sample(images, labels)
    scores = Path("scores") / f"{model}.npz"
    np.savez_compressed(out / scores, **data)
    return {"kind": "quality", "model": model, **settings(args)["quality"], **judge.statistics(data),
            "scores": str(scores)}


# --- the report: intervals, paired ratios, targets ---------------------------------------------------


def _interval(draws: np.ndarray, point: float, clip: bool = False) -> list[float] | None:
    """dit/eval/intervals.py's shifted interval over the finite draws; None when none is (a ratio to 0)."""
    draws = draws[np.isfinite(draws)]
    return shifted_interval(draws, point, clip=clip) if len(draws) and np.isfinite(point) else None


def summarise(out: Path, rows: list[dict], resamples: int, seed: int = 0) -> list[dict]:
    """Per model: size, cost, quality with intervals, and the paired ratios to the DiT."""
    from types import SimpleNamespace

    from dit.eval.scoring import ShapesScorer

    with np.load(out / "scores" / "reference.npz") as ref:
        scorer = ShapesScorer(SimpleNamespace(ref_mu=ref["mu"], ref_sigma=ref["sigma"]))  # no classifier needed
    models = [m for m in MODELS if find(rows, "quality", m) and find(rows, "train", m)]
    if BASELINE not in models:
        raise UserError(f"the report needs {BASELINE}'s trained and scored rows; run the benchmark")
    data = {}
    for m in models:
        with np.load(out / find(rows, "quality", m)["scores"]) as f:
            data[m] = {k: f[k] for k in f.files}
    n = len(data[BASELINE]["hits"])
    rng = np.random.default_rng(seed)
    index_sets = [rng.integers(0, n, n) for _ in range(resamples)]  # the same for every model: paired
    draws = {m: {k: np.empty(resamples) for k in KEYS} for m in models}
    for m in models:
        for i, idx in enumerate(index_sets):
            for k, v in scorer.statistics(data[m], idx).items():
                draws[m][k][i] = v
    base = find(rows, "quality", BASELINE)
    summary = []
    for m in models:
        q, t = find(rows, "quality", m), find(rows, "train", m)
        timing = find(rows, "timing", m) or t  # the separate timing run's, when there is one
        row = {"model": m, "flags": " ".join(MODELS[m]) or "(the cpu-demo preset)", "params": t["params"],
               "gflops": t["gflops"], "gflops_counted": t["gflops_counted"], "gflops_s4d": t["gflops_s4d"],
               "step_s": timing["step_s"], "step_s_from": timing["kind"], "step_threads": timing.get("omp_threads"),
               "max_steps": t["max_steps"], "samples": q["samples"], "steps": q["steps"]}
        for k in KEYS:
            row[k], row[f"{k}_ci"] = q[k], _interval(draws[m][k], q[k], clip=k == "fd_shapes")
        if m != BASELINE:
            with np.errstate(divide="ignore", invalid="ignore"):  # a ratio to an accuracy of 0 is undefined
                for name, k in (("acc_ratio", "class_acc"), ("fd_ratio", "fd_shapes")):
                    point = q[k] / base[k] if base[k] else float("nan")
                    row[name] = point if np.isfinite(point) else None
                    row[f"{name}_ci"] = _interval(draws[m][k] / draws[BASELINE][k], point)
        summary.append(row)
    return summary


if __name__ == "__main__":
    sys.exit(run_cli(main))
