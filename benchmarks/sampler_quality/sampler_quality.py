"""Sample quality against the number of sampler steps, each row compared (paired) with 250-step DDPM.

    python benchmarks/sampler_quality/sampler_quality.py --ckpt results/cpu-demo            # rows to benchmarks/sampler_quality
    python benchmarks/sampler_quality/sampler_quality.py --report                           # the table and plot again

For a trained model: every sampler (ddpm, ddim, dpm++, unipc, ...) at every step count draws the
same samples (seeds 0..N-1, balanced labels i % classes, cfg --cfg-scale) and is scored with the
offline shapes metric (`--metric shapes`, for the built-in dataset: class accuracy and the Fréchet
distance in the judge's features) or FID / Inception Score (`--metric inception --ref ...`). Each
(sampler, steps) is a row of results.jsonl (the network evaluations per sample, counted with a
forward pre-hook; the seconds for all N samples; the metrics) and its per-sample scores (judge
features and hits, or Inception pool features and logits) a compressed npz under scores/; the
judge's reference statistics are scores/reference.npz. A rerun skips the rows already there;
rows drawn with other settings (samples, cfg, checkpoint, metric, judge) are refused.

Intervals (tables.py, from the committed scores): 95% bootstrap over the samples, bias-shifted
(dit/eval/intervals.py). Every row is compared with the reference (--reference, default ddpm:250)
PAIRED: the samplers share seeds and labels, so the same resampled index sets are applied to the
row and to the reference, and the interval is that of the difference (class accuracy: the mean of
the per-sample difference of hits; a Fréchet distance: the per-resample difference of the two
distances). A row is "worse" on a metric when the whole interval of the difference lies on the
reference's worse side of 0, else "not resolvably worse" there; that is not a test of
equivalence: a difference inside the interval's width goes unseen at this N.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

from dit.cli import ArgumentParser, positive, run_cli
from dit.errors import UserError
from dit.eval.records import ResultsLog, existing_log
from dit.eval.tables import benchmark_module

DEFAULT_GRID = {"ddpm": [25, 50, 100, 250], "ddim": [5, 10, 15, 25, 50], "dpm++": [5, 10, 15, 25, 50],
                "unipc": [5, 10, 15, 25, 50]}
SHARED_CACHES = [ROOT / "benchmarks" / name / "cache" for name in ("time_to_quality", "ssm_vs_dit", "vq_diffusion")]
# What every row of one results.jsonl must share (the bootstrap's settings are the report's).
SETTINGS = ("num_samples", "cfg_scale", "metric", "checkpoint_sha256", "judge_steps", "fid_ref", "reference",
            "bootstrap", "bootstrap_seed")


def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", help="a run, export or zoo name (not needed with --report)")
    p.add_argument("--num-samples", type=int, default=400)
    p.add_argument("--cfg-scale", type=float, default=3.0)
    p.add_argument("--samplers", nargs="+", default=list(DEFAULT_GRID))
    p.add_argument("--steps", type=int, nargs="+", help="one step grid for every sampler (default: per sampler)")
    p.add_argument("--reference", default="ddpm:250", help="SAMPLER:STEPS every row is compared with")
    p.add_argument("--bootstrap", type=int, default=2000, help="resamples for the 95%% intervals (>= 2)")
    p.add_argument("--bootstrap-seed", type=int, default=0)
    p.add_argument("--metric", choices=["shapes", "inception"], default="shapes")
    p.add_argument("--ref", help="FID reference (--metric inception)")
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--cache-dir", help="judge / FID reference cache (default: --out/cache, seeded from other benchmarks')")
    p.add_argument("--classifier-steps", type=positive(), help="shapes metric: the judge's training steps")
    p.add_argument("--out", default="benchmarks/sampler_quality")
    p.add_argument("--report", action="store_true", help="only redo the table and plot from --out/results.jsonl")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.report:
        existing_log(out)
        return report(out)
    if not args.ckpt:
        raise UserError("--ckpt is needed (a run, an export or a zoo name), or --report")

    from dit.sampling import check_sampler, sampler_names

    names = list(sampler_names("gaussian"))
    bad = [s for s in args.samplers if s not in names]
    if bad:
        raise UserError(f"unknown samplers {bad}; choose from {', '.join(names)}")
    ref_sampler, _, ref_steps = args.reference.partition(":")
    if ref_sampler not in names or not ref_steps.isdigit() or int(ref_steps) < 1:
        raise UserError(f"--reference must be SAMPLER:STEPS, e.g. ddpm:250, got {args.reference!r}")
    if args.num_samples < 2 or args.batch_size < 1 or any(k < 1 for k in args.steps or []):
        raise UserError("--num-samples must be >= 2, --batch-size and --steps positive")
    if args.bootstrap < 2:
        raise UserError(f"--bootstrap must be at least 2 resamples, got {args.bootstrap}")
    if args.metric == "inception" and not args.ref:
        raise UserError("--metric inception needs --ref")

    from dit.autoencoders import load_autoencoder
    from dit.io.checkpoint import checkpoint_sha256, load_model
    from dit.processes import process_from_meta

    model, ckpt = load_model(args.ckpt)
    model.eval()
    process = process_from_meta(ckpt.meta)
    vae = load_autoencoder(ckpt.meta.get("vae", "none"))
    settings = {"num_samples": args.num_samples, "cfg_scale": args.cfg_scale, "metric": args.metric,
                "checkpoint_sha256": checkpoint_sha256(args.ckpt),
                "judge_steps": judge_steps(args) if args.metric == "shapes" else None,
                "fid_ref": args.ref if args.metric == "inception" else None, "reference": args.reference,
                "bootstrap": args.bootstrap, "bootstrap_seed": args.bootstrap_seed}
    log = ResultsLog(out / "results.jsonl")
    check_settings(log, settings)
    grid = [(s, k) for s in args.samplers for k in (args.steps or DEFAULT_GRID.get(s, [5, 10, 25, 50]))]
    if (ref_sampler, int(ref_steps)) not in grid:
        grid.append((ref_sampler, int(ref_steps)))
    for sampler, steps in grid:  # the sampler catalog says what the checkpoint's process can draw with
        check_sampler(process, sampler, steps)
    todo = [(s, k) for s, k in grid if not log.find(sampler=s, steps=k)]
    if todo:
        scorer = make_scorer(out, model.input_size * vae.downsample, args)
        measure(log, model, vae, process, scorer, todo, settings, args)
    report(out)


def judge_steps(args) -> int:
    from dit.eval.shapes_judge import DEFAULT_STEPS

    return args.classifier_steps or DEFAULT_STEPS


def check_settings(log: ResultsLog, settings: dict) -> None:
    for row in log.rows:
        differ = [k for k in SETTINGS if row.get(k) != settings[k]]
        if differ:
            raise UserError(f"{log.path} holds rows with other settings ({', '.join(f'{k} {row.get(k)!r}' for k in differ)}); "
                            "pass those to continue it, or another --out")


def make_scorer(out: Path, image_size: int, args):
    """The metric's per-sample scorer; its reference statistics saved as scores/reference.npz."""
    from dit.eval.scoring import InceptionScorer, ShapesScorer, seeded_scorer

    cache = Path(args.cache_dir or out / "cache")
    (out / "scores").mkdir(parents=True, exist_ok=True)
    if args.metric == "inception":
        scorer = InceptionScorer(args.ref, cache)
        np.savez(out / "scores" / "reference.npz", mu=scorer.ref["mu"], sigma=scorer.ref["sigma"])
        return scorer
    if image_size == 16:  # the built-in shapes' size: the judge other benchmarks trained is this one
        return seeded_scorer(out, cache, SHARED_CACHES, args.classifier_steps)
    from dit.eval.metrics import ShapesMetric

    scorer = ShapesScorer(ShapesMetric(image_size, cache, classifier_steps=args.classifier_steps))
    np.savez(out / "scores" / "reference.npz", mu=scorer.metric.ref_mu, sigma=scorer.metric.ref_sigma)
    return scorer


def measure(log, model, vae, process, scorer, todo, settings, args) -> None:
    """Draw, time, count and score each (sampler, steps) in `todo`; one row and one npz each."""
    import torch

    from dit.sampling.generate import generate_images

    n, bs, cfg = args.num_samples, args.batch_size, args.cfg_scale
    labels = np.arange(n) % model.num_classes
    calls = [0]
    hook = model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        with torch.no_grad():
            for sampler in dict.fromkeys(s for s, _ in todo):  # one-time costs (imports, set-up) off the clock
                generate_images(model, vae, process, [0], labels[:1], sampler, 2, cfg)
            for sampler, steps in todo:
                calls[0], per_batch = 0, []
                start = time.perf_counter()
                chunks = []
                for a in range(0, n, bs):
                    before = calls[0]
                    chunks.append(generate_images(model, vae, process, range(a, min(a + bs, n)), labels[a:a + bs],
                                                  sampler, steps, cfg))
                    per_batch.append(calls[0] - before)
                seconds = time.perf_counter() - start
                images = np.concatenate(chunks)
                data = scorer.per_sample(images, labels)
                point = scorer.statistics(data)
                scores = Path("scores") / f"{sampler}-{steps}.npz"
                np.savez_compressed(Path(args.out) / scores, **compact(data))
                # A network call evaluates the whole batch (a CFG pair in one call): calls per batch = per sample.
                nfe = per_batch[0] if len(set(per_batch)) == 1 else float(np.mean(per_batch))
                log.add(sampler=sampler, steps=steps, nfe=nfe, seconds=seconds, images_per_s=n / seconds,
                        batch_size=bs, **settings, **{k: float(v) for k, v in point.items()}, scores=str(scores))
    finally:
        hook.remove()


def compact(data: dict) -> dict:
    """Per-sample scores as stored: features / pool / logits float32, hits uint8."""
    return {k: (v.astype(np.uint8) if k == "hits" else v.astype(np.float32)) for k, v in data.items()}


def report(out: Path) -> None:
    tables = benchmark_module("sampler_quality", "tables")
    summary = tables.summarise(out)
    plot(summary, out / "sampler_quality.png")
    for key, table in tables.render(summary).items():
        print(f"{key}:\n{table}")


def plot(summary: dict, path: Path) -> None:
    """Quality (95% intervals) and seconds against steps, one line per sampler; the reference dashed."""
    from dit.eval.tables import new_figure, save_figure

    rows, keys, ref = summary["rows"], summary["keys"], summary["ref"]
    panels = [(k, f"{k} ({'lower' if k in summary['lower_better'] else 'higher'} is better)") for k in keys]
    panels.append(("seconds", f"seconds for {summary['num_samples']} samples"))
    fig, axes = new_figure(1, len(panels), figsize=(4.5 * len(panels), 3.6))
    for sampler in dict.fromkeys(r["sampler"] for r in rows):
        rr = sorted((r for r in rows if r["sampler"] == sampler), key=lambda r: r["steps"])
        steps = [r["steps"] for r in rr]
        for ax, (key, _) in zip(axes, panels):
            values = [r[key] for r in rr]
            if key == "seconds":
                ax.plot(steps, values, marker="o", label=sampler)
            else:
                err = [[r[key] - r[key + "_ci"][0] for r in rr], [r[key + "_ci"][1] - r[key] for r in rr]]
                ax.errorbar(steps, values, yerr=np.clip(err, 0, None), marker="o", capsize=3, label=sampler)
    for ax, (key, label) in zip(axes, panels):
        if key != "seconds" and ref is not None:
            ax.axhline(ref[key], color="gray", ls="--", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("sampler steps")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.suptitle(f"Sampler quality vs steps ({summary['num_samples']} samples, cfg {summary['cfg_scale']:g}, 95% CIs)")
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(run_cli(main))
