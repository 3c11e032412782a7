"""The paper's scaling study (DiT §5, Fig. 2/6/8, Table 4): train S/B/L/XL x patch 2/4/8, evaluate, plot.

    # CPU: a width-scaled family on the built-in shapes, about an hour on two cores
    python benchmarks/scaling_sweep/scaling_sweep.py --preset cpu
    # ImageNet: the paper's grid, 400K steps each, FID-50K without guidance, on a latent cache
    python benchmarks/scaling_sweep/scaling_sweep.py --preset imagenet --data /data/imagenet256-latents \
        --ref VIRTUAL_imagenet256_labeled.npz --launch "accelerate launch --multi_gpu --num_processes 8"
    # DiffuSSM (attention-free): sizes CPU/S/XL x patches 1/2, the same protocol
    python benchmarks/scaling_sweep/scaling_sweep.py --preset cpu --arch diffussm

Every model is trained for the same number of steps with the same batch (as in the paper) by
train.py, paused at each evaluation point with --stop-at and evaluated from its EMA weights; all
state lives in --out, so an interrupted sweep resumes where it stopped (finished evaluations are
never redone, training resumes from its checkpoints). `--jobs K` trains K runs side by side,
`--only XL/2` runs one combination (e.g. one cluster job each), `--report` only redraws the table
and plots from what is there.

Outputs in --out: results.csv / results.json (one row per model, patch and evaluation step:
parameters, forward GFLOPs, images seen, training compute, quality), and the paper's plots as PNGs:
quality vs forward GFLOPs at the last step (Fig. 8 left), quality vs training steps per model
(Fig. 6), quality vs training compute (Fig. 9), with the correlation between quality and GFLOPs.

`--arch diffussm` runs the DiffuSSM grid instead (dit/networks/diffussm.py): sizes CPU, S, XL and
patches 1 (no patchification, the paper's) and 2, trained with --arch diffussm --model
DiffuSSM-<size>/<patch>, in results/sweep-<preset>-diffussm by default, runs named ssm-<size>-<patch>.
On --preset cpu, S and XL are scaled as the DiT family (width / 8, depth / 4: 48 x 3 and 144 x 7)
and CPU keeps its own size (120 x 4: already sized to the CPU demo's DiT). Its GFLOPs include the
S4D layers' FFT convolution and kernel generation, which torch's FlopCounterMode does not see
(dit/analysis/flops.py forward_cost): the quality-vs-GFLOPs plot uses that total.

Quality: --preset cpu reports the offline shapes metric (dit/eval/metrics.py: `fd_shapes`, a Fréchet
distance in a shapes classifier's features, not FID; and `class_acc`); --preset imagenet reports
FID through torch-fidelity's Inception (needs --ref). Samples use no guidance, like Table 4.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

from dit.cli import ArgumentParser, positive, run_cli
from dit.errors import UserError  # noqa: E402

SIZES = ("S", "B", "L", "XL")
PATCHES = (2, 4, 8)

# The CPU family: widths of DiT Table 1 / 8 and depths / 4, so every ratio between S, B, L and XL is
# the paper's (width 384:768:1024:1152, depth 12:12:24:28); heads 16 wide (heads ratio kept too).
CPU_FAMILY = {"S": (48, 3, 3), "B": (96, 3, 6), "L": (128, 6, 8), "XL": (144, 7, 9)}  # hidden, depth, heads
# DiffuSSM's, scaled the same way (S 384 x 12, XL 1152 x 29 -> 48 x 3, 144 x 7); DiffuSSM-CPU is
# already the CPU demo's size and stays 120 x 4. No heads: there is no attention.
SSM_CPU_FAMILY = {"CPU": (120, 4, None), "S": (48, 3, None), "XL": (144, 7, None)}


@dataclass(frozen=True)
class Arch:
    model: str  # the --model prefix
    sizes: tuple[str, ...]
    patches: tuple[int, ...]
    cpu_family: dict
    run_prefix: str = ""  # keeps run names apart when two architectures share an --out


ARCHS = {
    "dit": Arch("DiT", SIZES, PATCHES, CPU_FAMILY),
    "diffussm": Arch("DiffuSSM", ("CPU", "S", "XL"), (1, 2), SSM_CPU_FAMILY, run_prefix="ssm-"),
}
ALL_SIZES = ("CPU", *SIZES)  # what --sizes / --patches accept; each --arch takes its own subset
ALL_PATCHES = (1, *PATCHES)

PRESETS = {
    "cpu": dict(
        train=["cpu-demo", "--image-size", "16", "--global-batch-size", "16", "--lr", "2e-3", "--lr-schedule",
               "cosine", "--warmup-steps", "100", "--ema-warmup", "true", "--ckpt-every", "1000",
               "--log-every", "100"],
        steps=3000, eval_at=(1000, 2000, 3000), num_samples=300, sampler="ddim", sample_steps=25, family="cpu",
        metric="shapes", quality="fd_shapes", threads=2, jobs=2),
    "imagenet": dict(
        train=["imagenet-256"], steps=400_000, eval_at=(50_000, 100_000, 200_000, 300_000, 400_000),
        num_samples=50_000, sampler="ddpm", sample_steps=250, family=None, metric="inception", quality="fid",
        threads=None, jobs=1),
}


@dataclass
class Run:
    size: str
    patch: int
    hidden: int | None = None  # None: the paper's (DiT Table 1)
    depth: int | None = None
    heads: int | None = None
    arch: str = "dit"

    @property
    def name(self) -> str:
        return f"{ARCHS[self.arch].run_prefix}{self.size}-{self.patch}"

    def flags(self) -> list[str]:
        out = [] if self.arch == "dit" else ["--arch", self.arch]
        out += ["--model", f"{ARCHS[self.arch].model}-{self.size}/{self.patch}"]
        if self.hidden:
            out += ["--hidden-size", str(self.hidden), "--depth", str(self.depth)]
        if self.heads:
            out += ["--num-heads", str(self.heads)]
        return out


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=list(PRESETS), default="cpu")
    p.add_argument("--arch", choices=list(ARCHS), default="dit", help="the network family (diffussm: attention-free)")
    p.add_argument("--out", help="sweep directory (default results/sweep-<preset>, -diffussm appended for diffussm)")
    p.add_argument("--sizes", nargs="+", choices=ALL_SIZES,
                   help="default: all of the arch's (dit: S B L XL; diffussm: CPU S XL)")
    p.add_argument("--patches", nargs="+", type=int, choices=ALL_PATCHES,
                   help="default: all of the arch's (dit: 2 4 8; diffussm: 1 2)")
    p.add_argument("--only", help="one combination, e.g. XL/2")
    p.add_argument("--steps", type=int, help="training steps per model (default: the preset's)")
    p.add_argument("--eval-at", type=int, nargs="+", help="steps at which to evaluate (default: the preset's)")
    p.add_argument("--num-samples", type=int, help="samples per evaluation")
    p.add_argument("--sample-steps", type=int, help="sampler steps per evaluation")
    p.add_argument("--data", help="training data for --preset imagenet (an ImageFolder or latent cache)")
    p.add_argument("--ref", help="FID reference for --preset imagenet (see evaluate.py)")
    p.add_argument("--launch", default="", help="prefix for train.py, e.g. 'accelerate launch --num_processes 8'")
    p.add_argument("--jobs", type=int, help="runs trained side by side (default: the preset's; cpu: 2 of 1 thread)")
    p.add_argument("--process", choices=["gaussian", "flow"], default="gaussian",
                   help="the process every run trains (flow: the SiT flow process; more flags via --train-args)")
    p.add_argument("--sampler", help="evaluation sampler (default: the preset's for gaussian, the process's own otherwise)")
    p.add_argument("--train-args", default="", help="extra train.py flags for every run")
    p.add_argument("--classifier-steps", type=positive(), help="shapes metric: classifier training steps")
    p.add_argument("--report", action="store_true", help="only rebuild the table and plots")
    args = p.parse_args(argv)
    preset = dict(PRESETS[args.preset])
    for key in ("steps", "eval_at", "num_samples", "sample_steps", "jobs"):
        if getattr(args, key) is not None:
            preset[key] = getattr(args, key)
    args.jobs = preset["jobs"]
    if args.sampler or args.process != "gaussian":
        from dit.processes import get_process
        from dit.sampling import check_sampler, default_sampler

        preset["sampler"] = args.sampler or default_sampler(args.process)
        check_sampler(get_process(args.process).from_meta({}), preset["sampler"], preset["sample_steps"])
    preset["train"] = [*preset["train"], "--process", args.process]
    if preset["steps"] < 1 or args.jobs < 1 or preset["num_samples"] < 2 or preset["sample_steps"] < 1:
        raise UserError("--steps, --jobs and --sample-steps must be positive and --num-samples at least 2")
    preset["eval_at"] = sorted({s for s in preset["eval_at"] if s < preset["steps"]} | {preset["steps"]})
    if args.preset == "imagenet" and not args.report and not (args.data and args.ref):
        raise UserError("--preset imagenet needs --data (ImageFolder or latent cache) and --ref (FID reference)")
    arch = ARCHS[args.arch]
    args.sizes, args.patches = args.sizes or list(arch.sizes), args.patches or list(arch.patches)
    for flag, given, valid in (("--sizes", args.sizes, arch.sizes), ("--patches", args.patches, arch.patches)):
        bad = [v for v in given if v not in valid]
        if bad:
            raise UserError(f"{flag} {' '.join(map(str, bad))}: --arch {args.arch} has {' '.join(map(str, valid))}")
    suffix = "" if args.arch == "dit" else f"-{args.arch}"
    args.out = Path(args.out or ROOT / "results" / f"sweep-{args.preset}{suffix}")
    family = arch.cpu_family if preset["family"] == "cpu" else None
    runs = [Run(s, p, *(family[s] if family else ()), arch=args.arch) for s in args.sizes for p in args.patches]
    # Longest first (forward cost ~ width^2 x depth x tokens), so that side-by-side jobs pack well.
    runs.sort(key=lambda r: -(r.hidden or 1) ** 2 * (r.depth or 1) * (256 // r.patch**2) if family else 0)
    if args.only:
        runs = [r for r in runs if f"{r.size}/{r.patch}" == args.only]
        if not runs:
            combos = ", ".join(f"{s}/{p}" for s in arch.sizes for p in arch.patches)
            raise UserError(f"--only {args.only}: not one of {combos} (--arch {args.arch})")
    return args, preset, runs


# --- one run: train to each evaluation point, evaluate, record ----------------------------------


def run_one(run: Run, args, preset) -> list[dict]:
    """Train `run` stage by stage (resumable) and evaluate each stage once; returns its rows."""
    run_dir = args.out / "runs" / run.name
    evals = args.out / "runs" / f"{run.name}.evals.jsonl"
    done = {}
    if evals.exists():
        done = {r["step"]: r for r in map(json.loads, evals.read_text().splitlines())}
    env = dict(os.environ)
    if preset["threads"]:
        env["OMP_NUM_THREADS"] = str(max(1, preset["threads"] // args.jobs))
    for stop in preset["eval_at"]:
        if stop in done:
            continue
        cmd = [*shlex.split(args.launch), *([] if args.launch else [sys.executable]), str(ROOT / "train.py"),
               *preset["train"], *run.flags(), "--max-steps", str(preset["steps"]), "--stop-at", str(stop),
               "--results-dir", str(args.out / "runs"), "--run-name", run.name, "--no-progress",
               *(["--data", args.data] if args.data else []), *shlex.split(args.train_args)]
        start = time.time()
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if res.returncode != 0:
            tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise UserError(f"training {run.name} failed: {tail[0]} (command: {shlex.join(cmd)})")
        row = {"run": run.name, "arch": run.arch, "size": run.size, "patch": run.patch, "step": stop,
               "train_seconds": time.time() - start, **evaluate(run_dir, args, preset, env)}
        with open(evals, "a") as f:
            f.write(json.dumps(row) + "\n")
        done[stop] = row
    return [done[s] for s in preset["eval_at"]]


def evaluate(run_dir: Path, args, preset, env: dict) -> dict:
    """Quality of the run's newest EMA weights through evaluate.py (fixed seeds, balanced labels, no
    guidance; generation split over processes by --launch), plus its size and compute."""
    from dit.io.checkpoint import load_model

    out = run_dir / "eval.json"
    cmd = [*shlex.split(args.launch), *([] if args.launch else [sys.executable]), str(ROOT / "evaluate.py"),
           "--ckpt", str(run_dir / "export.safetensors"), "--num-samples", str(preset["num_samples"]),
           "--metric", preset["metric"], "--cache-dir", str(args.out / "eval-cache"), "--out", str(out),
           "--cfg-scale", "1", "--sampler", preset["sampler"], "--steps", str(preset["sample_steps"]),
           "--batch-size", "250" if preset["metric"] == "shapes" else "64", "--no-progress"]
    if preset["metric"] == "shapes" and args.classifier_steps:
        cmd += ["--classifier-steps", str(args.classifier_steps)]
    if preset["metric"] == "inception":
        cmd += ["--ref", args.ref, "--no-prc"]
    start = time.time()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise UserError(f"evaluating {run_dir.name} failed: {tail[0]} (command: {shlex.join(cmd)})")
    quality = {k: v for k, v in json.loads(out.read_text()).items() if k not in ("samples", "metric")}
    model, _ = load_model(str(run_dir / "export.safetensors"))
    state = json.loads((sorted((run_dir / "checkpoints").glob("step_*"))[-1] / "train_state.json").read_text())
    return {**model_cost(model, state["config"]["global_batch_size"], state["images_seen"]),
            "eval_seconds": time.time() - start, **quality}


def model_cost(model, batch: int, images_seen: int) -> dict:
    """Size and compute of a network (dit/analysis/flops.py forward_cost): `gflops` the forward
    multiply-accumulates per image at batch 1 (the paper's), FFT and S4D kernel terms included;
    `gflops_counted` / `gflops_s4d` its two parts (S4D: 0 for DiT). Training compute ~ 3 x forward
    (DiT §5, Fig. 9) per image seen, at the training batch: S4D kernels are built once per forward,
    so a DiffuSSM's per-image cost is lower there than at batch 1 (for DiT the two are equal)."""
    from dit.analysis.flops import count_params, forward_cost

    one, per_batch = forward_cost(model), forward_cost(model, batch=batch)
    return {"params": count_params(model), "gflops": one.total / 1e9, "gflops_counted": one.counted / 1e9,
            "gflops_s4d": one.analytic / 1e9, "images_seen": images_seen,
            "train_gflops_total": 3 * per_batch.total / batch / 1e9 * images_seen}


# --- report: table, plots, correlation ------------------------------------------------------------


def spearman(x, y) -> float | None:
    """Rank correlation; None where it is undefined (a constant input)."""
    import warnings

    from scipy.stats import spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = float(spearmanr(x, y).statistic)
    return rho if math.isfinite(rho) else None


def report(rows: list[dict], out: Path, quality: str, arch: str = "dit") -> dict:
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sizes, patches = ARCHS[arch].sizes, ARCHS[arch].patches
    rows = sorted(rows, key=lambda r: (sizes.index(r["size"]), r["patch"], r["step"]))
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    keys = sorted({k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99)
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    last = max(r["step"] for r in rows)
    final = [r for r in rows if r["step"] == last]
    lower_better = quality in ("fid", "fd_shapes")
    summary = {"quality": quality, "step": last, "runs": len(final)}
    if len(final) >= 3:
        g, q = [r["gflops"] for r in final], [r[quality] for r in final]
        summary["spearman_quality_vs_gflops"] = spearman(g, q)
        pearson = float(np.corrcoef(np.log(g), q)[0, 1])
        summary["pearson_quality_vs_log_gflops"] = pearson if math.isfinite(pearson) else None
        if "class_acc" in final[0]:
            summary["spearman_class_acc_vs_gflops"] = spearman(g, [r["class_acc"] for r in final])
    (out / "summary.json").write_text(json.dumps(summary, indent=1))

    colors = {"S": "tab:blue", "B": "tab:orange", "L": "tab:green", "XL": "tab:red", "CPU": "tab:purple"}
    markers = {1: "D", 2: "o", 4: "s", 8: "^"}
    alphas = {p: a for p, a in zip(patches, (1.0, 0.7, 0.45))}  # the finest patch drawn darkest
    fig, ax = plt.subplots(figsize=(5, 4))
    for r in final:
        ax.scatter(r["gflops"], r[quality], color=colors[r["size"]], marker=markers[r["patch"]], s=50,
                   label=f"{r['size']}/{r['patch']}")
    ax.set_xscale("log")
    ax.set_yscale("log")  # quality spans orders of magnitude across the grid (as the paper's FIDs do)
    ax.set_xlabel("forward GFLOPs" + (" (matmuls + S4D FFT and kernel)" if arch == "diffussm" else ""))
    ax.set_ylabel(quality)
    rho = summary.get("spearman_quality_vs_gflops")
    ax.set_title(f"step {last}" + (f", Spearman rho = {rho:.2f}" if rho is not None else ""))
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "quality_vs_gflops.png", dpi=120)
    plt.close(fig)

    for name, xkey, xlabel in (("quality_vs_steps.png", "step", "training steps"),
                               ("quality_vs_compute.png", "train_gflops_total", "training compute (GFLOPs)")):
        fig, ax = plt.subplots(figsize=(5, 4))
        for run in dict.fromkeys(r["run"] for r in rows):  # rows are sorted by size, then patch
            rr = [r for r in rows if r["run"] == run]
            ax.plot([r[xkey] for r in rr], [r[quality] for r in rr], marker=markers[rr[0]["patch"]],
                    color=colors[rr[0]["size"]], alpha=alphas[rr[0]["patch"]],
                    label=f"{rr[0]['size']}/{rr[0]['patch']}")
        if xkey == "train_gflops_total":
            ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(quality + (" (lower is better)" if lower_better else ""))
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
    return summary


def main(argv=None):
    args, preset, runs = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:  # each run is a subprocess chain
            for future in [pool.submit(run_one, r, args, preset) for r in runs]:
                future.result()
                print(".", end="", flush=True)
        print()
    rows = []
    for f in sorted((args.out / "runs").glob("*.evals.jsonl")):
        rows += [json.loads(line) for line in f.read_text().splitlines()]
    rows = [r for r in rows if r.get("arch", "dit") == args.arch]  # rows written before "arch" existed are DiT's
    if not rows:
        raise UserError(f"no --arch {args.arch} evaluations in {args.out} yet; run the sweep first")
    summary = report(rows, args.out, preset["quality"], args.arch)
    final = [r for r in rows if r["step"] == summary["step"]]
    print(f"{'run':<8}{'params':>12}{'GFLOPs':>10}{'images':>10}{preset['quality']:>12}"
          + ("{:>11}".format("class_acc") if "class_acc" in rows[0] else ""))
    for r in sorted(final, key=lambda r: r["gflops"]):
        print(f"{r['run']:<8}{r['params']:>12,}{r['gflops']:>10.4f}{r['images_seen']:>10,}{r[preset['quality']]:>12.3f}"
              + (f"{r['class_acc']:>11.3f}" if "class_acc" in r else ""))
    print(json.dumps(summary))
    print(f"wrote {args.out}/results.csv, results.json, summary.json and quality_vs_{{gflops,steps,compute}}.png")


if __name__ == "__main__":
    sys.exit(run_cli(main))
