"""The quick-start demo, measured: train.py's CPU demo under flow-ln and DiT's recipe, timed and scored. Run it ALONE.

    python benchmarks/cpu_demo/cpu_demo.py                     # both recipes, 1000 samples each (~20 min on 2 cores)
    python benchmarks/cpu_demo/cpu_demo.py --report            # the table again

Each recipe trains through the real train.py exactly as the README's quick start runs it (flow-ln:
`train.py --recipe flow-ln`; dit: `train.py`, the cpu-demo preset's DiT recipe) into
runs/<recipe>; the subprocess's wall-clock (imports, training, checkpoints and train.py's final
sample grid included) and the machine's load average before and after are recorded, with the
training loop's images/s and the mean loss of the first and of the last 100 steps from the run's
metrics.jsonl (the two recipes' losses are different objectives: compare each with itself). The
EMA export then draws N samples (seeds 0..N-1, labels i % 10, cfg 3, 50 steps: Euler for the flow
recipe, DDIM for DiT's; --samplers RECIPE:SAMPLER picks others) through the library, and the shapes
judge (dit/eval/metrics.py) scores them: class accuracy and the Fréchet distance in its features.
Per-sample scores go to scores/<recipe>-<sampler>.npz (the judge's reference: scores/reference.npz),
a grid of the flow-ln model's samples (a row per class, 8 each, enlarged 3x) to samples.png.
Every finished unit is a line of results.jsonl: a rerun skips it (an unfinished training run is
started again from scratch, so that its wall-clock is one uninterrupted run's).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

from dit.cli import ArgumentParser, positive, run_cli
from dit.errors import UserError
from dit.eval.records import ResultsLog, existing_log
from dit.eval.tables import benchmark_module

RECIPES = {"flow-ln": ["--recipe", "flow-ln"], "dit": []}  # train.py's flags after the preset
PROCESS = {"flow-ln": "flow", "dit": "gaussian"}
MAIN_SAMPLER = {"flow": "euler", "gaussian": "ddim"}
SAMPLE_STEPS, CFG, BATCH, GRID_PER_CLASS, GRID_SCALE = 50, 3.0, 250, 8, 3
SHARED_CACHES = [ROOT / "benchmarks" / name / "cache" for name in ("time_to_quality", "ssm_vs_dit", "vq_diffusion")]


def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/cpu_demo")
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--num-samples", type=int, default=1000, help="samples per (recipe, sampler), a multiple of 10")
    p.add_argument("--max-steps", type=positive(), help="training steps (smoke runs; default: the preset's 5,000)")
    p.add_argument("--samplers", nargs="+", metavar="RECIPE:SAMPLER",
                   help="samplers per recipe (default: flow-ln:euler dit:ddim)")
    p.add_argument("--classifier-steps", type=positive(), help="the shapes judge's training steps (default: its own)")
    p.add_argument("--report", action="store_true", help="only print the table from results.jsonl")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.report:
        existing_log(out)
        return report(out)
    if args.num_samples < 20 or args.num_samples % 10:
        raise UserError(f"--num-samples must be a multiple of 10 (balanced labels), at least 20; got {args.num_samples}")
    samplers = parse_samplers(args.samplers, args.recipes)
    log = ResultsLog(out / "results.jsonl")
    check_settings(log, args)
    out.mkdir(parents=True, exist_ok=True)
    for recipe in args.recipes:
        if not log.find(kind="train", recipe=recipe):
            log.add(kind="train", **train(recipe, out, args.max_steps))
    scorer = None
    for recipe in args.recipes:
        for sampler in samplers[recipe]:
            if log.find(kind="quality", recipe=recipe, sampler=sampler):
                continue
            if scorer is None:
                from dit.eval.scoring import seeded_scorer

                scorer = seeded_scorer(out, out / "cache", SHARED_CACHES, args.classifier_steps)
            grid = out / "samples.png" if recipe == "flow-ln" and sampler == samplers[recipe][0] else None
            log.add(kind="quality", **quality(recipe, sampler, out, scorer, args, grid))
    report(out)


def parse_samplers(entries, recipes) -> dict[str, list[str]]:
    """{recipe: [samplers]} from RECIPE:SAMPLER entries (each recipe's main sampler where none is named)."""
    from dit.sampling import sampler_names

    chosen = {r: [] for r in recipes}
    for entry in entries or []:
        recipe, _, sampler = entry.partition(":")
        if recipe not in chosen or not sampler:
            raise UserError(f"--samplers {entry!r}: give RECIPE:SAMPLER with RECIPE one of {', '.join(recipes)}")
        names = list(sampler_names(PROCESS[recipe]))
        if sampler not in names:
            raise UserError(f"--samplers {entry!r}: the {PROCESS[recipe]} process has {', '.join(names)}")
        chosen[recipe].append(sampler)
    return {r: list(dict.fromkeys(s)) or [MAIN_SAMPLER[PROCESS[r]]] for r, s in chosen.items()}


def judge_steps(args) -> int:
    from dit.eval.shapes_judge import DEFAULT_STEPS

    return args.classifier_steps or DEFAULT_STEPS


def check_settings(log: ResultsLog, args) -> None:
    """Refuse to mix runs of another length, or samples of another N or judge, into one results.jsonl."""
    for r in log.rows:
        if r["kind"] == "train" and r["max_steps"] != args.max_steps:
            raise UserError(f"{log.path} holds runs trained with --max-steps {r['max_steps']}; pass that, or another --out")
        if r["kind"] == "quality" and (r["num_samples"], r["judge_steps"]) != (args.num_samples, judge_steps(args)):
            raise UserError(f"{log.path} holds samples scored with --num-samples {r['num_samples']} and a judge of "
                            f"{r['judge_steps']} steps; pass those, or another --out")


def train(recipe: str, out: Path, max_steps: int | None) -> dict:
    """One uninterrupted train.py run, timed from outside; what its metrics.jsonl says."""
    run = out / "runs" / recipe
    if run.exists():  # an interrupted run: its wall-clock would be two runs'
        shutil.rmtree(run)
    extra = ["--max-steps", str(max_steps)] if max_steps else []
    flags = ["cpu-demo", *RECIPES[recipe], "--run-name", recipe, "--no-progress", *extra]
    load_start = os.getloadavg()[0]
    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "train.py"), *flags, "--results-dir", str(run.parent.resolve())],
                   check=True, cwd=ROOT)
    wall = time.perf_counter() - start
    load_end = os.getloadavg()[0]
    config = json.loads((run / "config.json").read_text())
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = logged[-1]["step"]
    images = logged[-1]["images_seen"]
    loop_s = sum((b["step"] - a) / b["steps_per_s"] for a, b in zip([0] + [m["step"] for m in logged], logged))
    results_dir = os.path.relpath(run.parent.resolve(), ROOT)
    return {"recipe": recipe, "train_command": "python " + shlex.join(["train.py", *flags, "--results-dir", results_dir]),
            "max_steps": max_steps, "batch": config.get("global_batch_size"), "wall_s": wall, "steps": steps,
            "images": images, "steps_per_s": steps / loop_s, "images_per_s": images / loop_s,
            "loss_first100": window_mean(logged, 0, 100), "loss_last100": window_mean(logged, steps - 100, steps),
            "load_avg_start": round(load_start, 2), "load_avg_end": round(load_end, 2)}


def window_mean(logged: list[dict], lo: int, hi: int) -> float:
    """Mean loss over steps lo+1..hi from the logged windows (each a mean over the steps since the last log),
    every window that ends in (lo, hi] weighted by its steps."""
    total = weight = 0.0
    for prev, m in zip([0] + [x["step"] for x in logged], logged):
        if lo < m["step"] <= hi or (prev < hi < m["step"]):
            total += m["loss"] * (m["step"] - prev)
            weight += m["step"] - prev
    return total / weight


def quality(recipe: str, sampler: str, out: Path, scorer, args, grid: Path | None) -> dict:
    """N samples of the run's EMA export with `sampler`, counted, timed and judged."""
    import torch

    from dit.autoencoders import load_autoencoder
    from dit.io.checkpoint import checkpoint_sha256, load_model
    from dit.processes import process_from_meta
    from dit.sampling.generate import generate_images

    run = str(out / "runs" / recipe)
    model, ckpt = load_model(run)
    model.eval()
    process, vae = process_from_meta(ckpt.meta), load_autoencoder("none")
    n = args.num_samples
    labels = np.arange(n) % model.num_classes
    calls, per_batch, chunks = [0], [], []
    hook = model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    start = time.perf_counter()
    try:
        with torch.no_grad():
            for a in range(0, n, BATCH):
                before = calls[0]
                chunks.append(generate_images(model, vae, process, range(a, min(a + BATCH, n)), labels[a:a + BATCH],
                                              sampler, SAMPLE_STEPS, CFG))
                per_batch.append(calls[0] - before)
    finally:
        hook.remove()
    seconds = time.perf_counter() - start
    images = np.concatenate(chunks)
    data = scorer.per_sample(images, labels)
    scores = Path("scores") / f"{recipe}-{sampler}.npz"
    np.savez_compressed(out / scores, features=data["features"].astype(np.float32), hits=data["hits"].astype(np.uint8))
    if grid is not None:
        save_grid(images, labels, grid)
    point = scorer.statistics(data)
    return {"recipe": recipe, "sampler": sampler, "steps": SAMPLE_STEPS, "cfg_scale": CFG,
            "nfe": per_batch[0] if len(set(per_batch)) == 1 else float(np.mean(per_batch)), "num_samples": n,
            "seconds": seconds, "judge_steps": judge_steps(args), "class_acc": point["class_acc"],
            "fd_shapes": point["fd_shapes"], "scores": str(scores), "checkpoint_sha256": checkpoint_sha256(run)}


def save_grid(images: np.ndarray, labels: np.ndarray, path: Path) -> None:
    """A row per class, the first samples of each (up to 8), enlarged 3x (nearest)."""
    from dit.io.images import make_grid, save_png

    per = min(GRID_PER_CLASS, int(np.bincount(labels).min()))
    picked = np.concatenate([np.flatnonzero(labels == c)[:per] for c in range(int(labels.max()) + 1)])
    grid = make_grid(images[picked], nrow=per)
    save_png(grid.repeat(GRID_SCALE, 0).repeat(GRID_SCALE, 1), path)


def report(out: Path) -> None:
    for key, table in benchmark_module("cpu_demo", "tables").tables(out).items():
        print(f"{key}:\n{table}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    sys.exit(run_cli(main))
