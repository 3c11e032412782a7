"""Train a VQ tokenizer: images <-> grids of codebook ids, for discrete diffusion (VQ-Diffusion).

    python train_vq.py                                   # CPU: the built-in shapes, VQ-T/2, 8x8 ids of K = 128
    accelerate launch train_vq.py vq-256 --data /data/imagenet/train
    python train.py ... --vae results/vq-cpu             # the run directory is an autoencoder for the other scripts

It takes train.py's data, size, optimisation and run flags (--data shapes or an image folder,
--image-size, --global-batch-size, --lr, --max-steps, --results-dir, --run-name, --stop-at, ...)
plus the tokenizer's: --model VQ-{T,S,B}/f (f the downsampling factor; --hidden-size the base
width, --depth the layers per level), --codebook-size K, --codebook-dim, --commitment (beta),
--kmeans-iters, --restart-every, --dead-code-threshold. The network is diffusers' VQModel with the
VQ-VAE loss's commitment term on the encoder (dit/networks/vq_tokenizer.py says how diffusers'
differs); the loss, k-means init and dead-code restarts are dit/training/vq_objective.py.
Checkpoints, exact resume (re-run the same command), SIGTERM and bad-input rules are train.py's;
the export (`export.safetensors`, the raw weights with the presets' --ema-decay 0) carries the
tokenizer's config, and `load_autoencoder(RUN_DIR)` (dit/autoencoders/vq.py) reads it.
"""

from __future__ import annotations

import argparse
import sys

from dit.cli import run_cli
from dit.errors import UserError
from dit.networks import TOKENIZER, get_architecture, keys_with_role
from dit.training.config import DEFAULT_VQ_PRESET, SHAPES, VQ_PRESETS, TrainConfig
from dit.training.flags import arch_of, config_from_args, training_parser
from dit.training.loop import run_training
from dit.training.vq_objective import VQObjective


def parse_args(argv=None) -> tuple[TrainConfig, argparse.Namespace]:
    parser = training_parser(__doc__.split("\n")[0], VQ_PRESETS, DEFAULT_VQ_PRESET, recipes=False)
    args = parser.parse_args(argv)
    arch = arch_of(args, VQ_PRESETS)  # by role, before another system's flags are judged
    if get_architecture(arch).role != TOKENIZER:
        raise UserError(f"train_vq.py trains --arch {' or '.join(keys_with_role(TOKENIZER))}, got --arch {arch}; "
                        "train generators with train.py and classifiers with train_classifier.py")
    config = config_from_args(args, VQ_PRESETS)
    if config.data != SHAPES:
        from dit.data.latent_cache import is_cache

        if config.data and is_cache(config.data):
            raise UserError(f"--data {config.data} is a latent cache; a tokenizer is trained on images: pass the "
                            "image folder (<root>/<class>/<image>) or --data shapes")
    return config, args


def main(argv=None):
    config, args = parse_args(argv)
    meta = {"objective": VQObjective.key, "codebook_size": config.codebook_size}
    return run_training(config, args, lambda process: VQObjective(config), export_meta=meta)


if __name__ == "__main__":
    sys.exit(run_cli(main))
