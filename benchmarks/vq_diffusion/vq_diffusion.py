"""VQ-Diffusion on the built-in shapes: class accuracy of decoded samples, full chain against strided steps.

    python benchmarks/vq_diffusion/vq_diffusion.py --out benchmarks/vq_diffusion                # tokenizer, training, scoring
    python benchmarks/vq_diffusion/vq_diffusion.py --out benchmarks/vq_diffusion --report       # the table again

Pipeline, through the real scripts:
    tokenizer   --tokenizer DIR (default <out>/runs/vq-cpu; missing: `train_vq.py vq-cpu` writes it):
                VQ-T/2, 16 px -> 8x8 ids of K = 128
    training    `train.py vq-diffusion-cpu --vae TOKENIZER` (TokenDiT-CPU: width 128, depth 4, 2 heads;
                vq-diffusion with the released schedule, T = 100, uniform t; the built-in shapes encoded
                on the fly; batch 32, AdamW 1e-3, cosine, EMA 0.999), resumed when <out>/runs holds it
    sampling    the EMA network, --samples N (300) with balanced labels (i % 10) from seeds 0..N-1 (the
                same seeds and labels in every row: paired), the ancestral sampler at each of --steps
                (100 = the full chain, fewer = the paper's strided fast inference), cfg --cfg (3, on
                log-probabilities), truncation --truncation (default 1: none), decoded by the tokenizer
    ceiling     the tokenizer's reconstructions of N fresh shapes (seed 1): what a perfect prior on ids
                would score through this tokenizer
Scored by the shapes judge (dit/eval/metrics.py ShapesMetric: class_acc, the share of samples the judge
assigns their label; fd_shapes, a Fréchet distance in its features, not FID). Intervals: 95% percentile
bootstrap over samples (--bootstrap resamples), bias-shifted (benchmarks/sampler_quality/sampler_quality.py's); the
strided rows' difference to the full chain on the same resampled index sets (paired). Wall-clock:
seconds to draw and decode the N samples (batch --batch), on the threads the run was given
(OMP_NUM_THREADS is recorded, and the load average: the machine may be shared). Target (the issue's,
to calibrate): class accuracy >= 0.35 at the full chain.

Files in --out: runs/ (tokenizer and training runs; an interrupted benchmark resumes them), cache/ (the
judge, seeded from other benchmarks' caches), scores/ (per-sample judge features and hits),
results.jsonl (one line per finished unit). Commit results.jsonl and scores/: tables.py renders
RESULTS.md's table from them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

from dit.cli import ArgumentParser, positive, run_cli
from dit.errors import UserError
from dit.eval.intervals import shifted_interval
from dit.eval.records import ResultsLog
from dit.eval.tables import benchmark_module

PRESET = "vq-diffusion-cpu"
SHARED_CACHES = [ROOT / "benchmarks" / d / "cache" for d in ("time_to_quality", "ssm_vs_dit", "classifier_guidance")]
KEYS = ("class_acc", "fd_shapes")


def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/vq_diffusion")
    p.add_argument("--tokenizer", help="a train_vq.py run (default <out>/runs/vq-cpu, trained when missing)")
    p.add_argument("--max-steps", type=positive(int), help="training steps (default: the preset's)")
    p.add_argument("--samples", type=positive(int), default=300)
    p.add_argument("--steps", type=positive(int), nargs="+", default=[100, 50, 25, 10])
    p.add_argument("--cfg", type=float, default=3.0)
    p.add_argument("--truncation", type=float, default=1.0)
    p.add_argument("--batch", type=positive(int), default=100)
    p.add_argument("--bootstrap", type=positive(int), default=2000)
    p.add_argument("--classifier-steps", type=positive(int), help="the judge's training steps (default: its own)")
    p.add_argument("--cache", help="judge cache (default <out>/cache)")
    p.add_argument("--report", action="store_true", help="only the table, from results.jsonl")
    args = p.parse_args(argv)
    if args.samples % 10:
        raise UserError("--samples must be a multiple of 10 (balanced labels over the 10 shapes)")
    if not 0 < args.truncation <= 1:
        raise UserError(f"--truncation must be in (0, 1], got {args.truncation}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = ResultsLog(out / "results.jsonl")
    rows = log.rows
    if not args.report:
        tokenizer = Path(args.tokenizer) if args.tokenizer else make_tokenizer(out)
        run = train(out, tokenizer, args)
        if not find(rows, "train"):
            log.add(**train_row(run, tokenizer, args))
        judge = make_judge(out, args)
        if not find(rows, "ceiling", samples=args.samples):
            log.add(**ceiling(out, tokenizer, judge, args))
        for steps in args.steps:
            if not find(rows, "quality", **unit(args, steps)):
                log.add(**quality(out, run, tokenizer, judge, steps, args))
    print(benchmark_module("vq_diffusion", "tables").markdown(summarise(out, rows, args), rows))


def unit(args, steps: int) -> dict:
    """What one quality row was drawn with: another setting is another row."""
    return {"samples": args.samples, "steps": steps, "cfg": args.cfg, "truncation": args.truncation}


def find(rows: list[dict], kind: str, **match) -> dict | None:
    return next((r for r in reversed(rows) if r["kind"] == kind and all(r.get(k) == v for k, v in match.items())), None)


# --- the units ---------------------------------------------------------------------------------------


def make_tokenizer(out: Path) -> Path:
    run = out / "runs" / "vq-cpu"
    if not (run / "config.json").is_file() or not _finished(run):  # re-running the command resumes it
        cmd = [sys.executable, str(ROOT / "train_vq.py"), "vq-cpu", "--results-dir", str(out / "runs"), "--no-progress"]
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            raise UserError(f"training the tokenizer failed (output above): {shlex.join(cmd)}")
    return run


def _finished(run: Path) -> bool:
    config = json.loads((run / "config.json").read_text())
    from dit.training.state import list_checkpoints

    done = list_checkpoints(run)
    return bool(done) and done[-1][0] >= config["max_steps"]


def train_cmd(out: Path, tokenizer: Path, args) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), PRESET, "--vae", str(tokenizer), "--results-dir", str(out / "runs"),
            "--no-progress", *(["--max-steps", str(args.max_steps)] if args.max_steps else [])]


def train(out: Path, tokenizer: Path, args) -> Path:
    """train.py vq-diffusion-cpu: run, resumed, or found finished (re-running the same command is all three)."""
    cmd = train_cmd(out, tokenizer, args)
    if subprocess.run(cmd, cwd=ROOT).returncode != 0:
        raise UserError(f"training failed (output above): {shlex.join(cmd)}")
    return out / "runs" / PRESET


def train_row(run: Path, tokenizer: Path, args) -> dict:
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    config = json.loads((run / "config.json").read_text())
    windows = [m["steps_per_s"] for m in logged]
    every = config["log_every"]
    command = "python " + shlex.join(["train.py", *train_cmd(Path(args.out), tokenizer, args)[2:]])
    return {"kind": "train", "run": str(run), "tokenizer": str(tokenizer), "command": command,
            "max_steps": config["max_steps"],
            "global_batch_size": config["global_batch_size"], "params": _params(run),
            "train_seconds": sum(every / w for w in windows), "windows": windows,
            "final_loss_mean_last5": float(np.mean([m["loss"] for m in logged[-5:]]))}


def _params(run: Path) -> int:
    from dit.io.checkpoint import load_model

    network, _ = load_model(str(run))
    return sum(p.numel() for p in network.parameters())


def make_judge(out: Path, args):
    from dit.eval.scoring import seeded_scorer

    return seeded_scorer(out, Path(args.cache or out / "cache"), SHARED_CACHES, args.classifier_steps)


def ceiling(out: Path, tokenizer: Path, judge, args) -> dict:
    """The tokenizer's reconstructions of N fresh shapes: the most any prior over its ids can score."""
    import torch

    from dit.autoencoders.pixels import to_uint8
    from dit.autoencoders import load_autoencoder
    from dit.data.shapes import ShapesDataset

    ae = load_autoencoder(str(tokenizer))
    x, y = ShapesDataset(args.samples, 16, seed=1).tensors()
    with torch.no_grad():
        rec = torch.cat([ae.decode(ae.encode(x[a:a + args.batch])) for a in range(0, len(x), args.batch)])
    data = judge.per_sample(to_uint8(rec), y.numpy())
    originals = judge.statistics(judge.per_sample(to_uint8(x), y.numpy()))
    scores = Path("scores") / "ceiling.npz"
    np.savez_compressed(out / scores, **data)
    return {"kind": "ceiling", "samples": args.samples, **judge.statistics(data), "scores": str(scores),
            "originals": originals}


def quality(out: Path, run: Path, tokenizer: Path, judge, steps: int, args) -> dict:
    """The EMA network's N samples at `steps` ancestral steps (seeds 0..N-1, labels i % 10), judged; timed."""
    import torch

    from dit.autoencoders import load_autoencoder
    from dit.io.checkpoint import load_model
    from dit.processes import process_from_meta
    from dit.sampling.generate import generate_images

    network, ckpt = load_model(str(run))
    process, vae = process_from_meta(ckpt.meta), load_autoencoder(str(tokenizer))
    n, bs = args.samples, args.batch
    labels = np.arange(n) % network.num_classes
    stats, t0 = {}, time.perf_counter()
    with torch.no_grad():
        images = np.concatenate([generate_images(network, vae, process, range(a, min(a + bs, n)), labels[a:a + bs],
                                                 "ancestral", steps, args.cfg, options={"truncation": args.truncation},
                                                 stats=stats) for a in range(0, n, bs)])
    seconds = time.perf_counter() - t0
    data = judge.per_sample(images, labels)
    scores = Path("scores") / f"steps{steps}-cfg{args.cfg:g}-r{args.truncation:g}.npz"
    np.savez_compressed(out / scores, **data)
    (out / "samples").mkdir(exist_ok=True)
    from dit.io.images import make_grid, save_png

    order = np.argsort(labels[:100], kind="stable")  # 10 per class, a row per class
    save_png(make_grid(images[:100][order], nrow=10), out / "samples" / f"steps{steps}.png")
    return {"kind": "quality", **unit(args, steps), **judge.statistics(data), "scores": str(scores),
            "sample_seconds": seconds, "seconds_per_sample": seconds / n, "nfe_per_batch": stats["nfe"] / stats["batches"],
            "batch": bs}


# --- the report ------------------------------------------------------------------------------------


def summarise(out: Path, rows: list[dict], args) -> list[dict]:
    from types import SimpleNamespace

    from dit.eval.scoring import ShapesScorer

    if not (out / "scores" / "reference.npz").is_file():
        raise UserError(f"{out} holds no scored rows yet; run the benchmark without --report")
    with np.load(out / "scores" / "reference.npz") as ref:
        scorer = ShapesScorer(SimpleNamespace(ref_mu=ref["mu"], ref_sigma=ref["sigma"]))
    units = [("ceiling", find(rows, "ceiling", samples=args.samples))]
    units += [(f"steps {s}", find(rows, "quality", **unit(args, s))) for s in args.steps]
    units = [(name, r) for name, r in units if r is not None]
    data = {}
    for name, r in units:
        with np.load(out / r["scores"]) as f:
            data[name] = {k: f[k] for k in f.files}
    rng = np.random.default_rng(0)
    index_sets = [rng.integers(0, args.samples, args.samples) for _ in range(args.bootstrap)]  # paired
    draws = {}
    for name, _ in units:
        resampled = [scorer.statistics(data[name], idx) for idx in index_sets]
        draws[name] = {k: np.array([d[k] for d in resampled]) for k in KEYS}
    full = f"steps {max(args.steps)}"
    summary = []
    for name, r in units:
        row = {"unit": name, "steps": r.get("steps"), "cfg": r.get("cfg"), "truncation": r.get("truncation"),
               "samples": r["samples"], "seconds": r.get("sample_seconds"), "seconds_per_sample": r.get("seconds_per_sample")}
        for k in KEYS:
            row[k], row[f"{k}_ci"] = r[k], shifted_interval(draws[name][k], r[k], clip=k == "fd_shapes")
        if name.startswith("steps") and name != full and full in draws:
            point = r["class_acc"] - find(rows, "quality", **unit(args, max(args.steps)))["class_acc"]
            row["acc_vs_full"], row["acc_vs_full_ci"] = point, shifted_interval(
                draws[name]["class_acc"] - draws[full]["class_acc"], point)
        summary.append(row)
    return summary


if __name__ == "__main__":
    sys.exit(run_cli(main))
