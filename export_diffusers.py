"""Export a DiT checkpoint as a diffusers `DiTPipeline` directory.

    python export_diffusers.py --ckpt results/my-run/export.safetensors --out my-run-diffusers
    python -c "from diffusers import DiTPipeline; p = DiTPipeline.from_pretrained('my-run-diffusers')"
    python export_diffusers.py --ckpt results/text-joint --out text-joint-diffusers   # a text DiT's transformer

The pipeline holds the transformer, a DDIM scheduler with the run's betas (trailing spacing, as
`sample.py --sampler diffusers-ddim`) and the VAE. What exports: a DiT with adaLN-Zero or adaLN
conditioning, mlp_ratio 4 and at most 1000 classes, trained with Gaussian diffusion in a VAE's
latent space; anything else is refused before --out is created. `sample.py --ckpt` reads the
directory back as the same model, process and VAE.

A text DiT (`--arch text-dit`) exports its transformer as diffusers' own class: cross-attention as
`PixArtTransformer2DModel`, joint attention as `SD3Transformer2DModel` (out/transformer), with its text
encoder's weights beside it (dit/io/text_transformers.py says what differs: the null text, SD3's padding).
"""

from __future__ import annotations

import sys
from pathlib import Path

from dit.autoencoders import DEFAULT_VAE, ChannelNorm, load_autoencoder
from dit.cli import ArgumentParser, run_cli
from dit.errors import UserError
from dit.io.checkpoint import load_model
from dit.io.diffusers_transformer import EXPORTS, check_exportable
from dit.networks.base import ReadsText, supports
from dit.networks.conditioning import reads_only_null
from dit.pipelines.export import UNCONDITIONAL_NOTE, save_diffusers_pipeline, save_text_transformer
from dit.processes import process_from_meta


def main(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", required=True, help="any checkpoint sample.py accepts")
    p.add_argument("--out", required=True, help="new directory for the pipeline")
    p.add_argument("--vae", help="default: the checkpoint's, else ema")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} exists and is not empty; choose a new directory")
    model, ckpt = load_model(args.ckpt)
    if supports(model, ReadsText):  # a text DiT: its transformer as diffusers' own class, its text encoder beside it
        kind = save_text_transformer(model, out)
        print(f"wrote {out}: {kind}.from_pretrained('{out / 'transformer'}'); the text encoder in {out}")
        return
    # Every refusal comes before anything is written (the pipeline itself is written atomically).
    if (ckpt.arch, ckpt.process) != ("dit", "gaussian"):
        raise UserError(f"cannot export: {args.ckpt} holds a {ckpt.arch!r} network with the {ckpt.process!r} "
                        f"process; {EXPORTS}")
    if ChannelNorm.from_meta(ckpt.meta) is not None:
        raise UserError(f"cannot export: {args.ckpt} was trained with --latent-norm channel, and DiTPipeline decodes "
                        "with one scalar scaling_factor; sample it with sample.py instead")
    vae_name = args.vae or ckpt.meta.get("vae") or DEFAULT_VAE
    check_exportable(model.config)  # the network first: refused before a VAE that may be absent is sought
    vae = load_autoencoder(vae_name)
    check_exportable(model.config, pixel_space=vae.diffusers_vae is None)  # DiTPipeline decodes with an AutoencoderKL
    if vae.latent_channels != model.in_channels:
        raise UserError(f"cannot export: the VAE {vae_name} gives {vae.latent_channels}-channel latents but the "
                        f"model takes {model.in_channels}; pass the --vae it was trained with")
    diffusion = process_from_meta(ckpt.meta)
    save_diffusers_pipeline(model, vae, diffusion, out, ckpt.meta.get("class_names"))
    print(f"wrote {out}: DiTPipeline.from_pretrained('{out}')")
    if reads_only_null(model.config.num_classes, model.config.class_dropout_prob):
        print(f"note: {UNCONDITIONAL_NOTE}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
