"""Few-step generation: MeanFlow and shortcut models against flow-ln's Euler-50, at equal training wall-clock.

    python benchmarks/few_step/few_step.py --out benchmarks/few_step                  # everything, ALONE on the machine
    python benchmarks/few_step/few_step.py --out benchmarks/few_step --timing-only    # per-step costs, alone
    python benchmarks/few_step/few_step.py --out benchmarks/few_step --seeds 0 --quality-only   # side by side with --seeds 1
    python benchmarks/few_step/few_step.py --out benchmarks/few_step --report         # tables and plot again

The time-to-quality network and data (benchmarks/time_to_quality/: the CPU demo, a DiT-S/2 shape at
width 128, depth 4, on the 16 px built-in shapes in pixel space, batch 16, AdamW 2e-3 with a cosine
schedule to 0 at the run's last step, EMA 0.999), trained by the real train.py with three recipes:

    flow-ln   rectified flow, logit-normal t: the project's best recipe (5,000 steps, the base budget)
    meanflow  MeanFlow (dit/processes/meanflow.py): 25% of samples spanning, adaptive weight p = 1,
              logit-normal(+0.4, 1) in our time, guidance w = 3 folded into training (--meanflow-cfg 3)
    shortcut  shortcut models (dit/processes/shortcut.py): M = 128, a quarter self-consistent
    reflow    distillation (dit/processes/reflow.py): the same seed's flow-ln run as teacher and init, its
              pairs from Euler-8 at cfg 3 (folded into the student), for flow-ln's wall-clock once more

Budgets. Each recipe's cost per step is timed first, alone (rounds of train.py runs of `--timing-steps`
steps in turn, the median of the logged 50-step rates after the warm-up), and the few-step recipes
then train for as many steps as flow-ln's 5,000 take (budget 1) and twice that (budget 2), each run
with its own cosine schedule ending at its last step. Reflow's budget is spent after its teacher's:
its wall-clock is the teacher's plus one more budget.

Scoring (as time to quality): 300 samples (balanced labels, seeds 0..299) of the EMA weights, scored by
the shapes judge (class accuracy; Fréchet distance in the judge's features), with
- flow-ln: Euler at 1, 2, 4 and 50 steps, cfg 3 (two passes a step);
- meanflow: the few-step sampler at 1, 2 and 4 steps, cfg 1 (its guidance is in the weights: one pass);
- shortcut: the few-step sampler at 1, 2, 4 steps, cfg 3 (two passes a step, as its paper samples);
- reflow: Euler at 1, 2 and 4 steps, cfg 1 (its teacher's guidance is in the weights).
NFE counts a guided pair once (dit/pipelines/pipeline.py); `passes` counts network passes. Intervals:
the two-stage bootstrap over seeds and samples of benchmarks/time_to_quality/tables.py. Sampling time
per image: the seed-0 models, 300 images each, alone. Every finished unit is a line of results.jsonl:
an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

from dit.cli import ArgumentParser, run_cli
from dit.errors import UserError
from dit.eval.records import ResultsLog
from dit.eval.tables import benchmark_module

RECIPES = {
    "flow-ln": ["--recipe", "flow-ln"],
    "meanflow": ["--recipe", "meanflow", "--meanflow-cfg", "3"],
    "shortcut": ["--recipe", "shortcut"],
    "reflow": ["--process", "reflow", "--teacher-steps", "8", "--teacher-cfg", "3"],  # + --teacher, --init-from
}
BASE_RECIPE, BASE_STEPS = "flow-ln", 5000  # the budget: flow-ln's steps of the time-to-quality benchmark
# (sampler, steps, cfg) per recipe: flow-ln's Euler-50 is the reference, Euler at few steps its few-step baseline.
SAMPLING = {
    "flow-ln": [("euler", 50, 3.0), ("euler", 1, 3.0), ("euler", 2, 3.0), ("euler", 4, 3.0)],
    "meanflow": [("few-step", 1, 1.0), ("few-step", 2, 1.0), ("few-step", 4, 1.0)],
    "shortcut": [("few-step", 1, 3.0), ("few-step", 2, 3.0), ("few-step", 4, 3.0)],
    "reflow": [("euler", 1, 1.0), ("euler", 2, 1.0), ("euler", 4, 1.0)],
}
BUDGETS = {"flow-ln": [1], "meanflow": [1, 2], "shortcut": [1, 2], "reflow": [1]}
TRAIN = ["cpu-demo", "--keep-last", "1", "--log-every", "100", "--no-progress", "--ckpt-every", "1000"]


def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/few_step")
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES),
                   help="flow-ln trains first: it is the budget and reflow's teacher")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--base-steps", type=int, default=BASE_STEPS, help="flow-ln's training steps (budget 1)")
    p.add_argument("--budgets", type=int, nargs="+", default=[1, 2], choices=[1, 2],
                   help="which budgets to train (flow-ln and reflow have budget 1 only)")
    p.add_argument("--num-samples", type=int, default=300)
    p.add_argument("--timing-steps", type=int, default=400, help="steps of each timing run")
    p.add_argument("--timing-rounds", type=int, default=2)
    p.add_argument("--within-draws", type=int, default=400, help="per-run resamples kept for the bootstrap")
    p.add_argument("--classifier-steps", type=int, help="the shapes judge's training steps (default: its own)")
    p.add_argument("--quality-only", action="store_true", help="train and score only (needs the timing rows); "
                   "instances over disjoint --seeds may run side by side")
    p.add_argument("--timing-only", action="store_true", help="only the per-step costs (alone on the machine)")
    p.add_argument("--report", action="store_true", help="only the tables and plot from results.jsonl")
    args = p.parse_args(argv)
    if args.num_samples < 10 or args.base_steps < 4 or args.timing_steps < 150 or args.within_draws < 2:
        raise UserError("--num-samples >= 10, --base-steps >= 4, --timing-steps >= 150 and --within-draws >= 2, please")
    args.recipes = sorted(set(args.recipes) | {BASE_RECIPE} if "reflow" in args.recipes else set(args.recipes),
                          key=list(RECIPES).index)  # reflow distils flow-ln's run of the same seed
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = ResultsLog(out / "results.jsonl")
    if not args.report:
        if not args.quality_only:
            time_steps(log, out, args)
        if args.timing_only:
            return
        steps = budget_steps(log, args)
        ttq = benchmark_module("time_to_quality", "time_to_quality")
        scorer = ttq.make_scorer(out, args.classifier_steps)
        for seed in args.seeds:  # seeds outermost: a partial benchmark already compares every recipe
            for recipe in args.recipes:
                for budget in [b for b in BUDGETS[recipe] if b in args.budgets]:
                    run = train(recipe, seed, budget, steps[recipe][budget], out)
                    score(log, scorer, ttq, run, recipe, seed, budget, steps[recipe][budget], args, out)
        if not args.quality_only:
            time_sampling(log, out, args)
    tables = benchmark_module("few_step", "tables")
    tables.plot(out)
    for key, table in tables.tables(out).items():
        print(f"{key}:\n{table}")


def time_steps(log: ResultsLog, out: Path, args) -> None:
    """Seconds per training step of each recipe, alone: rounds over the recipes in turn (a disturbance hits
    all alike), the median of train.py's logged 50-step rates after the first 100 steps."""
    ttq = benchmark_module("time_to_quality", "time_to_quality")
    todo = [r for r in args.recipes if not log.find(kind="timing", recipe=r)]
    rates = {r: [] for r in todo}
    for _ in range(args.timing_rounds if todo else 0):
        for recipe in todo:
            rates[recipe] += timed_rates(recipe, out, args.timing_steps, ttq)
    for recipe in todo:
        step_s = 1 / statistics.median(rates[recipe])
        log.add(kind="timing", recipe=recipe, step_s=step_s, intervals=len(rates[recipe]), threads=_threads())


def timed_rates(recipe: str, out: Path, steps: int, ttq) -> list[float]:
    run = out / "runs" / f"timing-{recipe}"
    cmd = [sys.executable, str(ROOT / "train.py"), *TRAIN, *RECIPES[recipe], *teacher(recipe, out / "runs" / "timing-flow-ln"),
           "--max-steps", str(steps), "--ckpt-every", str(10 * steps), "--log-every", str(ttq.TIMING_INTERVAL),
           "--results-dir", str(out / "runs"), "--run-name", run.name]
    return ttq.logged_rates(cmd, run, 100)


def budget_steps(log: ResultsLog, args) -> dict[str, dict[int, int]]:
    """Steps of each (recipe, budget): the wall-clock of --base-steps flow-ln steps, times the budget."""
    cost = {}
    for recipe in args.recipes + [BASE_RECIPE]:
        found = log.find(kind="timing", recipe=recipe)
        if not found:
            raise UserError(f"no timing row for {recipe} in {log.path}: run once without --quality-only, alone")
        cost[recipe] = found[-1]["step_s"]
    base_s = args.base_steps * cost[BASE_RECIPE]
    return {r: {b: max(1, round(b * base_s / cost[r])) for b in BUDGETS[r]} for r in args.recipes}


def train(recipe: str, seed: int, budget: int, steps: int, out: Path) -> Path:
    """Train (or resume, or find finished) one run through the real train.py."""
    name = f"{recipe}-b{budget}-seed{seed}"
    cmd = [sys.executable, str(ROOT / "train.py"), *TRAIN, *RECIPES[recipe], *teacher(recipe, out / "runs" /
           f"{BASE_RECIPE}-b1-seed{seed}"), "--seed", str(seed), "--max-steps", str(steps), "--results-dir",
           str(out / "runs"), "--run-name", name]
    subprocess.run(cmd, check=True, cwd=ROOT)
    return out / "runs" / name


def teacher(recipe: str, run: Path) -> list[str]:
    """Reflow's teacher and init: a flow-ln run (timing: the flow-ln timing run; quality: the same seed's)."""
    return ["--teacher", str(run), "--init-from", str(run)] if recipe == "reflow" else []


def score(log: ResultsLog, scorer, ttq, run: Path, recipe: str, seed: int, budget: int, steps: int, args, out: Path):
    """Every sampler setting of `recipe` on the run's EMA export, once each."""
    todo = [s for s in SAMPLING[recipe]
            if not log.find(kind="quality", recipe=recipe, seed=seed, budget=budget, sampler=s[0], sampler_steps=s[1])]
    if not todo:
        return
    pipe = load(run)
    n = args.num_samples
    labels = np.arange(n) % pipe.network.num_classes
    for sampler, k, cfg in todo:
        images, _, nfe = draw(pipe, sampler, k, cfg, labels)
        data = scorer.per_sample(images, labels)
        scores = Path("scores") / f"{run.name}-{sampler}{k}.npz"
        (out / "scores").mkdir(exist_ok=True)
        np.savez_compressed(out / scores, features=data["features"].astype(np.float32), hits=data["hits"].astype(np.uint8))
        log.add(kind="quality", recipe=recipe, seed=seed, budget=budget, steps_trained=steps, sampler=sampler,
                sampler_steps=k, cfg=cfg, nfe=nfe, passes=nfe * (2 if cfg != 1 else 1), num_samples=n,
                judge_steps=ttq.judge_steps(args), **scorer.statistics(data), scores=str(scores),
                draws=ttq.within_seed_draws(scorer, data, args.within_draws))


def load(run: Path):
    import torch

    from dit.pipelines.pipeline import load as load_pipeline
    from dit.pipelines.spec import SamplingSpec, Source

    pipe, _ = load_pipeline(Source(str(run / "export.safetensors")), SamplingSpec(), torch.device("cpu"))
    return pipe


def draw(pipe, sampler: str, steps: int, cfg: float, labels: np.ndarray) -> tuple[np.ndarray, float, int]:
    """(uint8 images, seconds, network evaluations per sample) for seeds 0..n-1 and `labels`."""
    import torch

    from dit.pipelines.spec import SamplingSpec

    spec = SamplingSpec(sampler=sampler, steps=steps, cfg_scale=cfg)
    t0 = time.perf_counter()
    with torch.no_grad():
        images = np.concatenate([pipe.generate(spec, range(a, min(a + 150, len(labels))), labels[a:a + 150], "cpu")
                                 for a in range(0, len(labels), 150)])
    return images, time.perf_counter() - t0, pipe.nfe


def time_sampling(log: ResultsLog, out: Path, args) -> None:
    """Seconds per image of every (recipe, sampler, steps) on seed 0's budget-1 model, alone."""
    n = args.num_samples
    for recipe in args.recipes:
        run = out / "runs" / f"{recipe}-b1-seed0"
        if not (run / "export.safetensors").is_file():
            continue
        pipe = None
        for sampler, k, cfg in SAMPLING[recipe]:
            if log.find(kind="sampling", recipe=recipe, sampler=sampler, sampler_steps=k):
                continue
            pipe = pipe or load(run)
            draw(pipe, sampler, k, cfg, np.arange(16) % pipe.network.num_classes)  # warm-up
            _, seconds, nfe = draw(pipe, sampler, k, cfg, np.arange(n) % pipe.network.num_classes)
            log.add(kind="sampling", recipe=recipe, sampler=sampler, sampler_steps=k, cfg=cfg, nfe=nfe,
                    images=n, seconds=seconds, ms_per_image=1000 * seconds / n, threads=_threads())


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    sys.exit(run_cli(main))
