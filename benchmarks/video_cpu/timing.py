"""What the video preset costs a user, timed through the real scripts. Run it ALONE on the machine.

    python benchmarks/video_cpu/timing.py --run results/video-cpu --out benchmarks/video_cpu

Two timings, one row of timing.jsonl (with commit, machine and command):
- completion: `sample.py --ckpt RUN --video-in CLIPS.npz --given-frames 0-3 --npz OUT` with no
  --steps and no --cfg-scale (the defaults a user gets: the run's recorded steps, else its process's),
  on --clips held-out clips (dataset seed 1, at the run's --shapes-speed, with their labels), wall
  clock of the whole command (start-up and the write included);
- training: the run's own config (config.json) for --train-steps steps from scratch in a scratch
  folder (`train.py video-cpu` with the run's flags, no --init-from: the step costs the same), the
  steps/s train.py logs over its last --train-steps / 2 steps (after warm-up), and the run's minutes
  at that rate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dit.cli import ArgumentParser, run_cli
from dit.errors import UserError
from dit.eval.records import ResultsLog
from dit.eval.tables import benchmark_module

ROOT = Path(__file__).resolve().parents[2]


def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a finished video-cpu run directory")
    p.add_argument("--out", default="benchmarks/video_cpu")
    p.add_argument("--clips", type=int, default=200)
    p.add_argument("--train-steps", type=int, default=200)
    args = p.parse_args(argv)
    run = benchmark_module("video_cpu", "grid").finished_video_run(args.run)
    config_path = run / "config.json"
    if args.clips < 1 or args.train_steps < 4:
        raise UserError("--clips >= 1 and --train-steps >= 4, please")
    from dit.data.shapes_video import cached_uint8_clips
    from dit.io.video import write_clip_npz

    config = json.loads(config_path.read_text())
    log = ResultsLog(Path(args.out) / "timing.jsonl")
    with tempfile.TemporaryDirectory() as tmp:
        clips, labels, _ = cached_uint8_clips(args.clips, config["image_size"], config["frames"], 1, None,
                                              config.get("shapes_speed", 1.0))
        given = Path(tmp) / "clips.npz"
        write_clip_npz(given, clips.permute(0, 1, 3, 4, 2).numpy(), labels.numpy())
        sample = [sys.executable, str(ROOT / "sample.py"), "--ckpt", str(run), "--video-in", str(given),
                  "--given-frames", "0-3", "--npz", str(Path(tmp) / "done.npz"), "--no-progress"]
        completion_s, out = timed(sample)
        steps_per_s = train_rate(config, args.train_steps, Path(tmp))
    from dit.pipelines.cli import COMPLETION_CFG

    command = f"python sample.py --ckpt {run} --video-in CLIPS.npz --given-frames 0-3 --npz OUT.npz --no-progress"
    log.add(run=run.name, clips=args.clips, completion_s=round(completion_s, 1), completion_command=command,
            completion_output=out.strip(), cfg_default=COMPLETION_CFG, train_steps_timed=args.train_steps,
            train_steps_per_s=steps_per_s, train_batch=config["global_batch_size"], max_steps=config["max_steps"],
            train_minutes=round(config["max_steps"] / steps_per_s / 60, 1),
            threads=int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))


def timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise UserError(f"{' '.join(cmd[1:3])} ... failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return seconds, done.stdout


def train_rate(config: dict, steps: int, tmp: Path) -> float:
    """steps/s of the run's config from scratch, over the last half of `steps` (train.py's own log):
    `train.py video-cpu` with a flag for every field where the run's config differs from the preset's."""
    from dit.training.config import from_preset

    preset = from_preset("video-cpu").to_dict()
    skip = {"init_from", "max_steps", "log_every", "ckpt_every", "results_dir", "run_name", "sample_every"}
    flags = [a for k, v in config.items() if k in preset and k not in skip and v != preset[k]
             for a in (f"--{k.replace('_', '-')}", str(v).lower() if isinstance(v, bool) else str(v))]
    timed([sys.executable, str(ROOT / "train.py"), "video-cpu", *flags, "--init-from", "", "--max-steps", str(steps),
           "--log-every", str(steps // 2), "--ckpt-every", str(steps), "--results-dir", str(tmp / "runs"),
           "--run-name", "timing", "--no-progress"])
    rows = [json.loads(line) for line in (tmp / "runs" / "timing" / "metrics.jsonl").read_text().splitlines()]
    return round(float([r["steps_per_s"] for r in rows if "steps_per_s" in r][-1]), 3)


if __name__ == "__main__":
    sys.exit(run_cli(main))
