"""Encode an ImageFolder dataset once through the VAE, for training from latents (dit/data/latent_cache.py).

    python cache_latents.py --data /imagenet/train --out /data/imagenet256-latents --image-size 256
    accelerate launch --num_processes 8 cache_latents.py --data ... --out ...   # split over GPUs

Then: `accelerate launch train.py imagenet-256 --data /data/imagenet256-latents`.
Re-running the same command resumes an interrupted run and repairs missing or damaged chunks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from dit.dist import check_world, force_cpu
from dit.cli import ArgumentParser, positive, run_cli
from dit.errors import UserError
from dit.data.latent_cache import DTYPES, build_cache
from dit.autoencoders.vae import DEFAULT_VAE, Autoencoder


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", required=True, help="ImageFolder root: <root>/<class>/<image>")
    p.add_argument("--out", required=True, help="cache directory to create (or to resume)")
    p.add_argument("--image-size", type=positive(), default=256)
    p.add_argument("--vae", default=DEFAULT_VAE, help="ema, mse, a hub id or a local diffusers AutoencoderKL directory")
    p.add_argument("--batch-size", type=positive(), default=64, help="per process")
    p.add_argument("--chunk-size", type=positive(), default=10_000, help="images per chunk file")
    p.add_argument("--dtype", choices=list(DTYPES), default="float16", help="storage type of the moments")
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.num_workers < 0:
        raise UserError(f"--num-workers must be >= 0, got {args.num_workers}")
    # Cheap checks before the (possibly absent) VAE is sought.
    if args.vae == "none":
        raise UserError("--vae none: pixel-space training reads the image folder directly, there is nothing to cache")
    if not Path(args.data).is_dir():
        raise UserError(f"--data {args.data} does not exist or is not a directory: give an ImageFolder root "
                        "(<root>/<class>/<image>)")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out {args.out} is a file; give a directory for the cache")
    return args


def main(argv=None):
    args = parse_args(argv)
    from accelerate import PartialState

    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda, but no CUDA device is visible; use --device auto or cpu")
    state = PartialState(cpu=force_cpu(args.device == "cpu"))
    check_world(state)
    vae = Autoencoder.load(args.vae, state.device)
    vae.latent_size(args.image_size)  # the VAE's factor must divide the image size
    index = build_cache(args.data, args.out, args.image_size, vae, state, args.batch_size, args.chunk_size,
                        args.dtype, args.num_workers, progress=state.is_main_process and not args.no_progress)
    if state.is_main_process:
        print(f"wrote {args.out}: {index['images']} images in {len(index['chunks'])} chunks, latents "
              f"{'x'.join(map(str, index['latent_shape']))}; skipped {len(index['skipped'])} unreadable files"
              + (f" (e.g. {index['skipped'][0]})" if index["skipped"] else ""))


if __name__ == "__main__":
    sys.exit(run_cli(main))
