"""Time to quality: DiT's recipe against flow matching and the LightningDiT levers, side by side.

    python benchmarks/time_to_quality/time_to_quality.py --out benchmarks/time_to_quality      # everything (~2 h on 2 cores)
    python benchmarks/time_to_quality/time_to_quality.py --out benchmarks/time_to_quality --report   # tables and plots again

One fixed network, the CPU-demo size (DiT-S/2 shape at width 128, depth 4, 2 heads; 16 px built-in
shapes in pixel space; batch 16; AdamW lr 2e-3, 100 warm-up steps, cosine to 0 at 5,000 steps; EMA
0.999 with warm-up), trained by the real train.py under five cumulative recipes:

    R0  DiT: Gaussian diffusion, epsilon + learned sigma, hybrid loss, uniform t (the paper's recipe)
    R1  + rectified flow (the flow process: linear path, velocity, uniform t)
    R2  + logit-normal t (m = 0, s = 1)
    R3  + cosine velocity loss (weight 1), with LightningDiT's gradient clipping at norm 1
    R4  + SwiGLU, RMSNorm, 2-D RoPE

Each recipe runs with 3 training seeds; the EMA weights at 1k/2k/3k/5k steps draw the same samples
(seeds 0..N-1, balanced labels) with 50 network evaluations at cfg 3 (DDIM-50 for R0, Euler-50 for
the flow recipes, Heun-25 as a variant) and are scored by the shapes judge (dit/eval/metrics.py:
class accuracy, Fréchet distance in the judge's features). Intervals: 95% hierarchical bootstrap
(seeds resampled, then samples within each seed), bias-shifted as in benchmarks/sampler_quality/sampler_quality.py.

Wall-clock: each recipe's training cost per step is timed alone, after the quality runs (rounds of
`--timing-steps` steps of train.py per recipe in turn, the median of its logged 50-step intervals
after the first `--timing-warmup` (100)), so the quality runs themselves may share the machine without
changing any figure (training and sampling are deterministic per seed).
Then the budget question: R0's 5,000-step class accuracy, and the wall-clock at which each recipe
first reaches it on the 1k/2k/3k/5k grid; and, for the flow recipes, short runs whose cosine
schedule ends at 1/3 (and 1/5) of R0's 5,000-step wall-clock. Every finished unit of work is a line
in results.jsonl: an interrupted benchmark continues where it stopped (train.py resumes its runs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

from dit.cli import ArgumentParser, positive, run_cli
from dit.errors import UserError
from dit.eval.intervals import LEVEL
from dit.eval.records import ResultsLog
from dit.eval.tables import benchmark_module

FLOW = ["--process", "flow"]
RECIPES = {  # cumulative, as LightningDiT's ablation
    "R0": [],
    "R1": FLOW,
    "R2": FLOW + ["--time-sampling", "logit-normal"],
    # The cosine loss comes with LightningDiT's gradient clipping at norm 1: at the zero-initialised
    # output the cosine's gradient is ~1/eps, and unclipped it poisons AdamW's second moment for
    # thousands of steps (measured: diagnostics.jsonl, RESULTS.md "Time to quality").
    "R3": FLOW + ["--time-sampling", "logit-normal", "--cosine-loss", "1", "--grad-clip", "1"],
    "R4": FLOW + ["--time-sampling", "logit-normal", "--cosine-loss", "1", "--grad-clip", "1", "--mlp", "swiglu",
                  "--norm", "rmsnorm", "--pos", "rope2d"],
}
# 50 network evaluations each. The first is the recipe's main sampler; the others are variants. DiT's own
# recipe is scored with every 50-NFE sampler its process has, so that its target is its best (issue 31).
SAMPLERS = {"gaussian": [("ddim", 50), ("ddpm", 50), ("dpm++", 50), ("unipc", 50)],
            "flow": [("euler", 50), ("heun", 25)]}
BASE = ["cpu-demo", "--keep-last", "0", "--log-every", "100", "--sample-steps", "2", "--no-progress"]
CFG = 3.0
TIMING_INTERVAL = 50  # steps per logged rate of a timing run
LEGACY_JUDGE_STEPS = 600  # quality rows from before their judge_steps field: the judge's default then


def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/time_to_quality")
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--max-steps", type=int, default=5000, help="training steps (the cosine schedule's length)")
    p.add_argument("--grid", type=int, nargs="+", default=[1000, 2000, 3000, 5000], help="evaluated steps")
    p.add_argument("--num-samples", type=int, default=300)
    p.add_argument("--timing-steps", type=int, default=600, help="steps of each timing run")
    p.add_argument("--timing-rounds", type=int, default=2, help="timing runs per recipe, interleaved")
    p.add_argument("--timing-warmup", type=int, default=100, help="first steps of each timing run left out of its rate")
    p.add_argument("--fractions", type=int, nargs="*", default=[3], help="short runs at 1/k of R0's wall-clock")
    p.add_argument("--short-recipes", nargs="*", default=["R2", "R4"], choices=list(RECIPES))
    p.add_argument("--within-draws", type=int, default=400, help="per-run resamples kept for the bootstrap")
    p.add_argument("--bootstrap", type=int, default=2000, help="two-stage bootstrap resamples in the report")
    p.add_argument("--classifier-steps", type=positive(), help="the shapes judge's training steps (default: ShapesMetric's)")
    p.add_argument("--every-sampler", action="store_true",
                   help="score every 50-NFE sampler at every grid step (not only at the last)")
    p.add_argument("--report", action="store_true", help="only redo the tables and plots from results.jsonl")
    p.add_argument("--quality-only", action="store_true",
                   help="only the step-grid quality runs, which need no quiet machine (instances over disjoint "
                        "--seeds may run side by side); run once more without it, alone, for timing and short runs")
    p.add_argument("--timing-only", action="store_true",
                   help="only the per-step timing (alone on the machine; quality runs of other instances paused)")
    args = p.parse_args(argv)
    if args.timing_warmup < 0 or args.timing_warmup % TIMING_INTERVAL or \
            args.timing_steps < args.timing_warmup + TIMING_INTERVAL:
        raise UserError(f"--timing-warmup a multiple of {TIMING_INTERVAL} (train.py's logged intervals) and --timing-steps "
                        f">= --timing-warmup + {TIMING_INTERVAL} (one interval after the warm-up), please")
    if args.num_samples < 10 or min(args.grid) < 1 or max(args.grid) > args.max_steps:
        raise UserError("--num-samples >= 10 and --grid steps in 1..--max-steps, please")
    if args.timing_rounds < 1 or args.within_draws < 2 or args.bootstrap < 2:
        raise UserError("--timing-rounds >= 1, --within-draws >= 2 and --bootstrap >= 2, please")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = ResultsLog(out / "results.jsonl")
    if not args.report:
        scorer = None
        if not args.timing_only:  # timing scores nothing: no judge
            judge = judge_steps(args)
            for row in log.find(kind="quality"):  # rows from before the flag: the default judge
                if row.get("judge_steps", LEGACY_JUDGE_STEPS) != judge:
                    raise UserError(f"{out} was scored by a judge of {row.get('judge_steps', LEGACY_JUDGE_STEPS)} "
                                    "training steps: pass that --classifier-steps, or another --out")
            scorer = make_scorer(out, args.classifier_steps)
        quality_seeds = [] if args.timing_only else args.seeds
        for seed in quality_seeds:  # seeds outermost: a partial benchmark already compares every recipe
            for recipe in args.recipes:
                run = train(recipe, seed, out, ["--max-steps", args.max_steps, "--ckpt-every", _gcd(args.grid)])
                for step in args.grid:
                    evaluate(log, scorer, run, recipe, seed, step, args, out,
                         variants=args.every_sampler or step == args.max_steps)
        if args.quality_only:
            return
        # Costs per step, timed alone after the quality runs (which need no quiet machine): rounds
        # over the recipes in turn, so a disturbance hits all alike; the median of each recipe's intervals.
        todo = [r for r in args.recipes if not log.find(kind="timing", recipe=r)]
        rates = {r: [] for r in todo}
        for _ in range(args.timing_rounds if todo else 0):
            for recipe in todo:
                rates[recipe] += time_recipe(recipe, out, args.timing_steps, args.timing_warmup)
        for recipe in todo:
            step_s = 1 / statistics.median(rates[recipe])
            log.add(kind="timing", recipe=recipe, step_s=step_s, images_per_s=16 / step_s, intervals=len(rates[recipe]),
                    warmup=args.timing_warmup, threads=_threads())
        r0_step_s = log.find(kind="timing", recipe="R0")[0]["step_s"]
        for k in [] if args.timing_only else args.fractions:
            for recipe in args.short_recipes:
                steps = max(1, int(args.max_steps * r0_step_s / (k * log.find(kind="timing", recipe=recipe)[0]["step_s"])))
                for seed in args.seeds:
                    run = train(recipe, seed, out, ["--max-steps", steps, "--ckpt-every", steps], f"{recipe}-1of{k}")
                    evaluate(log, scorer, run, recipe, seed, steps, args, out, budget=k, variants=True)
    report(log.rows, out, args)


def report(rows: list[dict], out: Path, args) -> None:
    """The tables (as RESULTS.md shows them; `benchmarks/report.py` places them) and the plot."""
    tables = benchmark_module("time_to_quality", "tables")
    summary = tables.summarise(rows, args.bootstrap, LEVEL, args.max_steps)
    tables.plot(summary, out / "time_to_quality.png", args.max_steps)
    for key, table in tables.render(summary, args.max_steps).items():
        print(f"{key}:\n{table}")


def _gcd(steps: list[int]) -> int:
    return math.gcd(*steps)


def _train_cmd(recipe: str, seed: int, out: Path, extra, name: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *BASE, *RECIPES[recipe], "--seed", str(seed),
            "--results-dir", str(out / "runs"), "--run-name", name, *map(str, extra)]


def train(recipe: str, seed: int, out: Path, extra, name: str | None = None) -> Path:
    """Train (or resume, or find finished) one run through the real train.py."""
    name = f"{name or recipe}-seed{seed}"
    run = out / "runs" / name
    subprocess.run(_train_cmd(recipe, seed, out, extra, name), check=True, cwd=ROOT)
    return run


def time_recipe(recipe: str, out: Path, steps: int, warmup: int = 100) -> list[float]:
    """Steps per second of `recipe` over train.py's logged intervals after the first `warmup` steps,
    in a throw-away run: run this alone on the machine."""
    name = f"timing-{recipe}"
    cmd = _train_cmd(recipe, 0, out, ["--max-steps", steps, "--ckpt-every", 10 * steps, "--log-every", TIMING_INTERVAL],
                     name)
    return logged_rates(cmd, out / "runs" / name, warmup)


def logged_rates(cmd: list[str], run: Path, warmup: int) -> list[float]:
    """Run the train.py command `cmd` (logging every TIMING_INTERVAL steps) into a fresh `run` directory and
    return its logged steps/s over whole intervals after the first `warmup` steps (the other benchmarks'
    step timing too: benchmarks/few_step/)."""
    if run.exists():
        import shutil

        shutil.rmtree(run)
    subprocess.run(cmd, check=True, cwd=ROOT)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # Whole logged intervals after the warm-up (train.py also logs the last step, maybe a partial one).
    return [r["steps_per_s"] for r in rows if r["step"] % TIMING_INTERVAL == 0 and r["step"] > warmup]


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def judge_steps(args) -> int:
    from dit.eval.shapes_judge import DEFAULT_STEPS

    return args.classifier_steps or DEFAULT_STEPS


def make_scorer(out: Path, classifier_steps: int | None = None):
    from dit.eval.metrics import ShapesMetric
    from dit.eval.scoring import ShapesScorer

    return ShapesScorer(ShapesMetric(16, out / "cache", classifier_steps=classifier_steps))


def evaluate(log: ResultsLog, scorer, run: Path, recipe: str, seed: int, step: int, args, out: Path, budget=None,
             variants: bool = False):
    """Score the EMA weights of `run` at `step` with its process's main sampler (and, with
    `variants`, the others) once."""
    import torch

    from dit.autoencoders import load_autoencoder
    from dit.io.checkpoint import load_model
    from dit.processes import process_from_meta
    from dit.sampling.generate import generate_images

    family = "flow" if "flow" in RECIPES[recipe] else "gaussian"
    wanted = SAMPLERS[family] if variants else SAMPLERS[family][:1]
    todo = [(s, k) for s, k in wanted
            if not log.find(kind="quality", recipe=recipe, seed=seed, step=step, sampler=s, budget=budget)]
    ckpt_dir = run / "checkpoints" / f"step_{step:09d}"
    if not todo or not ckpt_dir.exists():
        return
    model, ckpt = load_model(str(ckpt_dir))
    process = process_from_meta(ckpt.meta)
    vae = load_autoencoder("none")
    n = args.num_samples
    labels = np.arange(n) % model.num_classes
    for sampler, steps in todo:
        with torch.no_grad():
            images = np.concatenate([generate_images(model, vae, process, range(a, min(a + 250, n)), labels[a:a + 250],
                                                     sampler, steps, CFG) for a in range(0, n, 250)])
        data = scorer.per_sample(images, labels)
        point = scorer.statistics(data)
        draws = within_seed_draws(scorer, data, args.within_draws)
        scores = Path("scores") / f"{run.name}-step{step}-{sampler}.npz"  # per-sample judge output, for the bootstrap
        (out / "scores").mkdir(exist_ok=True)
        np.savez_compressed(out / scores, features=data["features"].astype(np.float32),  # committed: kept small
                            hits=data["hits"].astype(np.uint8))
        log.add(kind="quality", recipe=recipe, seed=seed, step=step, sampler=sampler, sampler_steps=steps, budget=budget,
                num_samples=n, judge_steps=judge_steps(args), **point, scores=str(scores), draws=draws)


def within_seed_draws(scorer, data: dict, resamples: int) -> dict:
    """The metrics on `resamples` resamples (with replacement) of this run's samples, index sets
    from a fixed generator: the within-seed stage of the report's two-stage bootstrap, kept in
    results.jsonl so that the report needs no per-sample files."""
    rng = np.random.default_rng(0)
    n = len(data["hits"])
    rows = [scorer.statistics(data, rng.integers(0, n, n)) for _ in range(resamples)]
    return {k: [round(r[k], 6) for r in rows] for k in scorer.keys}


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    sys.exit(run_cli(main))
