"""Train a class-conditional DiT, from a CPU demo to multi-node ImageNet.

    python train.py                                    # CPU demo: built-in shapes, ~6 minutes on 2 cores
    accelerate launch train.py imagenet-256 --model DiT-B/4 --data /data/imagenet256-latents
    accelerate launch --multi_gpu --num_processes 8 train.py xl2-256 --data /data/imagenet256-latents \
        --mixed-precision bf16

The first positional argument names a preset (dit/training/config.py); every config field is a flag.
Re-running the same command resumes from the newest complete checkpoint of the run
(results/<run-name>/checkpoints/); `--resume PATH` resumes from a given checkpoint or run.
`--arch` and `--process` pick a registered network and process (default: dit, gaussian). One
training step: the process draws its randomness per sample from the data stream
(dit/data/stream.py) and computes the loss (dit/training/step.py); AdamW updates the weights, then
the EMA. The run itself is dit/training/loop.py; this file reads the flags.

Discrete diffusion (VQ-Diffusion) on the ids of a VQ tokenizer trained with train_vq.py, passed as
the autoencoder: `python train.py vq-diffusion-cpu --vae results/vq-cpu` (--arch token-dit --process
vq-diffusion; K is read from the tokenizer; --data shapes, an image folder or a cache of ids).
"""

from __future__ import annotations

import argparse
import sys

from dit.cli import run_cli
from dit.errors import UserError
from dit.networks import CLASSIFIER, role_of
from dit.training.config import DEFAULT_PRESET, PRESETS, TrainConfig
from dit.training.flags import config_from_args, training_parser
from dit.training.loop import run_training
from dit.training.data import check_latent_norm
from dit.training.tokens import resolve_tokens


def parse_args(argv=None) -> tuple[TrainConfig, argparse.Namespace]:
    args = training_parser(__doc__.split("\n")[0], PRESETS, DEFAULT_PRESET).parse_args(argv)
    if role_of(args.arch) == CLASSIFIER:
        raise UserError(f"--arch {args.arch} trains a classifier for guidance: use train_classifier.py")
    config = config_from_args(args, resolve=resolve_tokens)  # a tokenizer --vae: token-dit, vq-diffusion, its K
    check_latent_norm(config)
    return config, args


def main(argv=None):
    config, args = parse_args(argv)
    return run_training(config, args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
