"""How far stock diffusers' DiTPipeline is from our samples of the same exported model (PSNR).

    python benchmarks/diffusers_export.py --make-vae results/tiny-vae          # a tiny random VAE (seed 0)
    python train.py cpu-demo --vae results/tiny-vae --max-steps 3000 --run-name latent
    python benchmarks/diffusers_export.py --ckpt results/latent --out results/latent-diffusers

Exports --ckpt with export_diffusers.py, then draws the same seeds and labels three ways: our
`--sampler diffusers-ddim`, stock DiTPipeline, and stock DiTPipeline with its timestep frequencies
patched to DiT's convention (downscale_freq_shift 0): the one difference an export carries
(dit/io/diffusers_transformer.py). Prints one JSON row per (steps, cfg): PSNR in dB and mean / max absolute
difference in 0..255 levels, both uint8 with our rounding.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dit.cli import ArgumentParser, positive, run_cli  # noqa: E402
from dit.errors import UserError  # noqa: E402


def make_vae(path: Path) -> None:
    """The 2x-downsampling, 4-channel AutoencoderKL (random, seed 0) the measurement in RESULTS.md used."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8), layers_per_block=1,
                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  norm_num_groups=4, sample_size=16).save_pretrained(path)
    print(f"wrote {path}")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def stock(pipe, labels, seeds, steps, cfg) -> np.ndarray:
    from dit.autoencoders.pixels import to_uint8

    generators = [torch.Generator().manual_seed(s) for s in seeds]  # sample i from seed i, as ours
    images = pipe(labels, generator=generators, num_inference_steps=steps, guidance_scale=cfg, output_type="np").images
    return to_uint8(torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1)


def main(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--make-vae", metavar="DIR", help="only write the tiny random VAE of the recorded measurement")
    p.add_argument("--ckpt", help="a latent-space DiT run or export (anything sample.py reads)")
    p.add_argument("--out", help="new directory for the exported pipeline")
    p.add_argument("--samples", type=positive(), default=32)
    p.add_argument("--steps", type=positive(), nargs="+", default=[25, 50])
    p.add_argument("--cfg", type=float, nargs="+", default=[1.0, 4.0])
    args = p.parse_args(argv)
    if args.make_vae:
        return make_vae(Path(args.make_vae))
    if not (args.ckpt and args.out):
        raise UserError("give --ckpt and --out (or --make-vae DIR)")
    import export_diffusers
    from diffusers import DiTPipeline

    from dit.autoencoders.vae import Autoencoder
    from dit.io.checkpoint import load_model
    from dit.processes import process_from_meta
    from dit.sampling.generate import generate_images

    if run_cli(export_diffusers.main, ["--ckpt", args.ckpt, "--out", args.out]) != 0:
        raise UserError(f"could not export {args.ckpt} (see the line above)")
    model, ckpt = load_model(args.ckpt)
    process, vae = process_from_meta(ckpt.meta), Autoencoder.load(ckpt.meta["vae"])
    seeds, labels = list(range(100, 100 + args.samples)), [i % model.num_classes for i in range(args.samples)]
    pipe, patched = DiTPipeline.from_pretrained(args.out), DiTPipeline.from_pretrained(args.out)
    for block in patched.transformer.transformer_blocks:
        block.norm1.emb.time_proj.downscale_freq_shift = 0  # DiT's convention
    for p_ in (pipe, patched):
        p_.set_progress_bar_config(disable=True)
    for steps in args.steps:
        for cfg in args.cfg:
            ours = generate_images(model, vae, process, seeds, labels, "diffusers-ddim", steps, cfg)
            theirs, fixed = stock(pipe, labels, seeds, steps, cfg), stock(patched, labels, seeds, steps, cfg)
            diff = np.abs(theirs.astype(int) - ours)
            print(json.dumps({"steps": steps, "cfg": cfg, "samples": args.samples, "psnr_stock_db": round(psnr(theirs, ours), 2),
                              "mean_abs_diff": round(float(diff.mean()), 3), "max_abs_diff": int(diff.max()),
                              "psnr_patched_db": round(psnr(fixed, ours), 2)}))


if __name__ == "__main__":
    sys.exit(run_cli(main))
