"""Export any DiT checkpoint sample.py reads as a diffusers `DiTPipeline` directory.

    python export_diffusers.py --ckpt results/my-run/export.safetensors --out my-run-diffusers
    python -c "from diffusers import DiTPipeline; p = DiTPipeline.from_pretrained('my-run-diffusers')"

The pipeline holds the transformer, a DDIM scheduler with the run's betas and the VAE.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dit.io.checkpoint import load_model
from dit.io.diffusers import save_diffusers_pipeline
from dit.processes import process_from_meta
from dit.cli import ArgumentParser, run_cli
from dit.errors import UserError
from dit.autoencoders.vae import DEFAULT_VAE, Autoencoder


def main(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", required=True, help="any checkpoint sample.py accepts")
    p.add_argument("--out", required=True, help="new directory for the pipeline")
    p.add_argument("--vae", help="default: the checkpoint's, else ema")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out {out} exists and is not empty; choose a new directory")
    model, ckpt = load_model(args.ckpt)
    if (ckpt.arch, ckpt.process) != ("dit", "gaussian"):
        raise UserError(f"{args.ckpt} holds a {ckpt.arch!r} network with the {ckpt.process!r} process; a diffusers "
                        "DiTPipeline holds only a DiT with Gaussian diffusion")
    vae = Autoencoder.load(args.vae or ckpt.meta.get("vae") or DEFAULT_VAE)
    diffusion = process_from_meta(ckpt.meta)
    save_diffusers_pipeline(model, vae, diffusion, out, ckpt.meta.get("class_names"))
    print(f"wrote {out}: DiTPipeline.from_pretrained('{out}')")


if __name__ == "__main__":
    sys.exit(run_cli(main))
