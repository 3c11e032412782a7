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

import numpy as np
import torch
from tqdm import tqdm

from dit.autoencoders.pixels import to_uint8
from dit.autoencoders.vae import DEFAULT_VAE, Autoencoder, ChannelNorm
from dit.cli import ArgumentParser, positive, run_cli
from dit.errors import UserError
from dit.io.checkpoint import instantiate, load_weights
from dit.io.images import save_png
from dit.processes import process_from_meta
from dit.registry import load_plugins
from dit.segmentation import Settings, image_seeds, segment
from dit.segmentation.emerdiff import DIRECTIONS
from dit.segmentation.features import FEATURES, num_tokens
from dit.segmentation.files import labels_at, list_images, read_image, read_original, write_outputs
from dit.segmentation.inversion import check_time
from dit.segmentation.scores import score
from dit.segmentation.truth import SEED, shapes_with_truth


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
    p.add_argument("--t-m", type=float, help="modulation time (default: 500 gaussian, 0.225 flow)")
    p.add_argument("--lam", type=float, default=d.lam, help="offset size in units of the block output's mean token norm")
    p.add_argument("--block", type=int, help="modulated block index (negative from the end; default: the last)")
    p.add_argument("--feature", choices=FEATURES, default=d.feature, help="k-means features: block output or attention queries")
    p.add_argument("--feature-block", type=int, help="block whose features are clustered (default: the middle one)")
    p.add_argument("--feature-t", type=float, help="time of the features (default: 50 gaussian, 0.85 flow)")
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


def build(args, device):
    """Network, process and autoencoder of --ckpt, refused unless it is an image DiT of a known process."""
    ckpt = load_weights(args.ckpt)
    if ckpt.meta.get("objective") == "noisy-classification":
        raise UserError(f"{args.ckpt} is a noise-aware classifier, not a generator: segment.py needs an image DiT")
    if ckpt.arch != "dit":
        raise UserError(f"{args.ckpt} holds a {ckpt.arch!r} network: segment.py needs an image DiT (arch 'dit')")
    process = process_from_meta(ckpt.meta)
    if process.key not in ("gaussian", "flow"):
        raise UserError(f"{args.ckpt} was trained with the {process.key!r} process: segment.py inverts gaussian and flow only")
    model = instantiate(ckpt, None, device).requires_grad_(False)
    vae = Autoencoder.load(ckpt.meta.get("vae") or DEFAULT_VAE, device).with_norm(ChannelNorm.from_meta(ckpt.meta))
    if vae.latent_channels != model.in_channels:
        raise UserError(f"the VAE gives {vae.latent_channels}-channel inputs but the model takes {model.in_channels}")
    return model, process, vae


def settings(args, model, process) -> Settings:
    """The flags as Settings, every index and time checked against the network and process."""
    depth = len(model.blocks)
    for flag in ("block", "feature_block"):
        b = getattr(args, flag)
        if b is not None and not -depth <= b < depth:
            raise UserError(f"--{flag.replace('_', '-')} {b} is out of range: the network has {depth} blocks "
                            f"(0..{depth - 1}, or -{depth}..-1 from the end)")
    if args.k > num_tokens(model):
        raise UserError(f"--k {args.k} is more than the {num_tokens(model)} tokens of an image")
    s = Settings(k=args.k, feature=args.feature, feature_block=args.feature_block, feature_t=args.feature_t,
                 block=args.block, t_m=args.t_m, lam=args.lam, steps=args.steps, blur=args.blur,
                 direction=args.direction, seed=args.seed).resolve(model, process)
    check_time(process, s.t_m, "--t-m")
    check_time(process, s.feature_t, "--feature-t")
    return s


def main(argv=None):
    args = parse_args(argv)
    files = list_images(args.images) if args.images else None
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and device.type != "cuda":
        raise UserError("--device cuda, but no CUDA device is visible")
    model, process, vae = build(args, device)
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
        segment_folder(model, process, vae, files, s, side, out, args, device)
    else:
        segment_shapes(model, process, vae, s, side, out, args, device)


def segment_folder(model, process, vae, files, s, side, out, args, device):
    for a in tqdm(range(0, len(files), args.batch_size), desc="segmenting", disable=args.no_progress):
        batch = files[a : a + args.batch_size]
        images, sizes = zip(*(read_image(f, side) for f in batch))
        seg = segment(model, process, vae, torch.stack(images).to(device), s, image_seeds(args.seed, range(a, a + len(batch))))
        for f, size, scores in zip(batch, sizes, seg.scores.cpu()):
            write_outputs(out, f.stem, read_original(f), labels_at(scores, size))
    print(f"wrote {len(files)} label maps (values 0..{s.k - 1}) and overlays to {out}")


def segment_shapes(model, process, vae, s, side, out, args, device):
    images, truth, _ = shapes_with_truth(args.shapes, side, SEED)
    coarse, refined = [], []
    for a in tqdm(range(0, args.shapes, args.batch_size), desc="segmenting", disable=args.no_progress):
        b = min(a + args.batch_size, args.shapes)
        seg = segment(model, process, vae, images[a:b].to(device), s, image_seeds(args.seed, range(a, b)))
        coarse.append(seg.coarse_up("nearest").cpu())
        refined.append(seg.labels.cpu())
        pixels = to_uint8(images[a:b])
        for i, labels in zip(range(a, b), seg.labels.cpu()):
            stem = f"shape_{i:05d}"
            write_outputs(out, stem, pixels[i - a], labels.to(torch.uint8).numpy())
            save_png(pixels[i - a], out / f"{stem}_image.png")
            save_png((truth[i].numpy()[..., None] * np.uint8(255)).astype(np.uint8), out / f"{stem}_truth.png")
    low, high = score(torch.cat(coarse), truth, s.k), score(torch.cat(refined), truth, s.k)
    print(f"wrote {args.shapes} label maps (values 0..{s.k - 1}), overlays, images and truths to {out}")
    print(f"binary mIoU against the coverage masks: coarse (nearest) {low['miou'].mean():.3f}, "
          f"refined {high['miou'].mean():.3f}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
