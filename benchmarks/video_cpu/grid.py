"""The video preset at a glance: one animated GIF of what a `video-cpu` run generates and predicts.

    python benchmarks/video_cpu/grid.py --run results/video-cpu --out benchmarks/video_cpu/preset.gif

Rows of --per-row clips (default 10, one per class), top to bottom:
    1-2  generation: class-conditional clips, classes 0..9 in each row (seeds 0..19), the benchmark's
         sampler (Euler at the process's steps, cfg 3);
    3    held-out real clips (dataset seed 1, at the run's --shapes-speed): the truth;
    4    the run's prediction of their frames 4-7 from frames 0-3 (the given frames are the truth's);
    5    the constant-velocity tracker's (dit/eval/baselines.py) on the same clips, for comparison.
Sampled exactly as benchmarks/video_cpu/video_cpu.py samples (its `generate`), so the clips are
those the benchmark scores: generation seeds 0..19 are its first 20 clips, the held-out clips its first 10.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dit.cli import ArgumentParser, run_cli
from dit.errors import UserError
from dit.eval.tables import benchmark_module

GIVEN = [0, 1, 2, 3]


def finished_video_run(path: str) -> Path:
    """--run checked: a video run directory whose training finished (timing.py's too)."""
    run = Path(path)
    config = run / "config.json"
    if not config.is_file() or json.loads(config.read_text()).get("arch") != "video-dit":
        raise UserError(f"--run {run}: not a video run directory (no config.json of --arch video-dit)")
    if not (run / "export.safetensors").is_file():
        raise UserError(f"--run {run}: the run has not finished (no export.safetensors); resume its training")
    return run


def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a finished video-cpu run directory")
    p.add_argument("--out", default="benchmarks/video_cpu/preset.gif")
    p.add_argument("--per-row", type=int, default=10)
    p.add_argument("--steps", type=int, default=None, help="default: the run's (train.py --sampling-steps), else its process's")
    p.add_argument("--cfg", type=float, default=3.0)
    p.add_argument("--fps", type=float, default=4.0)
    args = p.parse_args(argv)
    run = finished_video_run(args.run)
    config = run / "config.json"
    if args.per_row < 1 or not args.out.endswith(".gif"):
        raise UserError("--per-row >= 1 and --out NAME.gif, please")

    from dit.data.shapes_video import cached_uint8_clips
    from dit.eval.baselines import constant_velocity
    from dit.io.checkpoint import load_model
    from dit.io.video import write_gif
    from dit.processes import process_from_meta
    from dit.sampling import default_sampler

    cfg = json.loads(config.read_text())
    _, ckpt = load_model(str(run))
    process = process_from_meta(ckpt.meta)
    bench = benchmark_module("video_cpu")
    args.sampler = default_sampler(cfg["process"])
    args.steps = args.steps or ckpt.meta.get("sampling_steps") or process.default_sampling_steps  # sample.py's order
    n = args.per_row
    gen_labels = np.arange(2 * n) % 10
    generated = bench.generate(run, gen_labels, None, None, args)
    clips, labels, _ = cached_uint8_clips(n, cfg["image_size"], cfg["frames"], 1, None, cfg.get("shapes_speed", 1.0))
    truth = clips.permute(0, 1, 3, 4, 2).numpy()
    predicted = bench.generate(run, labels.numpy(), GIVEN, truth, args)
    tracked = constant_velocity(truth, GIVEN)
    write_gif(args.out, np.concatenate([generated, truth, predicted, tracked]), ncols=n, fps=args.fps)
    print(f"wrote {args.out}: {2 * n} generated clips, then {n} held-out clips, their prediction from frames "
          f"0-3 and the constant-velocity tracker's ({args.sampler}, {args.steps} steps, cfg {args.cfg:g})")


if __name__ == "__main__":
    run_cli(main)
