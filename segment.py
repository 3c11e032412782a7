"""Unsupervised segmentation with a trained image DiT (EmerDiff on a DiT; dit/segmentation/).

    python segment.py --ckpt results/cpu-demo --images photos/ --k 3 --out masks/
    python segment.py --ckpt results/cpu-demo --shapes 20 --k 2 --out masks/     # built-in shapes, scored

For each image: <name>.png, the label map (one channel, the image's size, values 0..K-1) and
<name>_overlay.png, the regions painted over the image. Images are resized to the model's square
input; the region scores are interpolated back to each image's own size before the argmax.
--shapes N renders N images of the built-in data from a fixed seed (held out from training) and
also writes <name>_image.png and <name>_truth.png (the renderer's coverage > 1/2), and prints the
binary mIoU of the coarse and the refined masks. settings.json records what made the outputs.

Times are the process's own: gaussian timestep index (999 = noise), flow t (1 = data). Region i of
an image is the same cluster in the coarse (token) map and the refined (pixel) map.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from dit.cli import ArgumentParser, positive, run_cli
from dit.errors import UserError
from dit.pipelines.segment import load_segmenter, segment_folder, segment_shapes, settings
from dit.registry import load_plugins
from dit.segmentation import Settings
from dit.segmentation.emerdiff import DEFAULT_TIMES, DIRECTIONS
from dit.segmentation.features import FEATURES
from dit.segmentation.files import list_images


def _defaults(time: str) -> str:
    return ", ".join(f"{times[time]:g} {key}" for key, times in DEFAULT_TIMES.items())


def parse_args(argv=None) -> argparse.Namespace:
    load_plugins()
    d = Settings()
    p = ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", required=True, help="an image DiT checkpoint (anything sample.py reads)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="a folder of images (.png, .jpg, ...) to segment")
    src.add_argument("--shapes", type=positive(int), metavar="N", help="segment N built-in shapes images (with ground truth)")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--k", type=int, default=d.k, help="regions per image (k-means clusters), >= 2")
    p.add_argument("--t-m", type=float, help=f"modulation time (default: {_defaults('t_m')})")
    p.add_argument("--lam", type=float, default=d.lam, help="offset size in units of the block output's mean token norm")
    p.add_argument("--block", type=int, help="modulated block index (negative from the end; default: the last)")
    p.add_argument("--feature", choices=FEATURES, default=d.feature, help="k-means features: block output or attention queries")
    p.add_argument("--feature-block", type=int, help="block whose features are clustered (default: the middle one)")
    p.add_argument("--feature-t", type=float, help=f"time of the features (default: {_defaults('feature_t')})")
    p.add_argument("--steps", type=positive(int), default=d.steps, help="DDIM steps between the image and t_m")
    p.add_argument("--blur", type=float, default=d.blur, help="sigma (pixels) of the difference maps' blur (0: none)")
    p.add_argument("--direction", choices=DIRECTIONS, default=d.direction,
                   help="offset direction: random with zero channel mean, or constant (the paper's; a DiT ignores it)")
    p.add_argument("--seed", type=int, default=0, help="seeds image i's feature noise and k-means from (seed, i), and the random direction")
    p.add_argument("--batch-size", type=positive(int), default=16, help="images per batch (each runs 2K modulated passes)")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.k < 2:
        raise UserError(f"--k must be at least 2 (regions per image), got {args.k}")
    if not args.lam > 0:
        raise UserError(f"--lam must be positive, got {args.lam}")
    if args.blur < 0:
        raise UserError(f"--blur must be >= 0, got {args.blur}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out {args.out} is a file; give a folder")
    return args


def main(argv=None):
    args = parse_args(argv)
    files = list_images(args.images) if args.images else None
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and device.type != "cuda":
        raise UserError("--device cuda, but no CUDA device is visible")
    model, process, vae = load_segmenter(args.ckpt, device)
    s = settings(args, model, process)
    side = model.input_size * vae.downsample
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "settings.json").write_text(json.dumps({"ckpt": str(args.ckpt), "process": process.key,
                                                       **dataclasses.asdict(s)}, indent=1) + "\n")
    except OSError as e:
        raise UserError(f"could not write to --out {out}: {e}") from None
    if files is not None:
        segment_folder(model, process, vae, files, s, side, out, args.batch_size, device, not args.no_progress)
    else:
        segment_shapes(model, process, vae, args.shapes, s, side, out, args.batch_size, device, not args.no_progress)


if __name__ == "__main__":
    sys.exit(run_cli(main))
