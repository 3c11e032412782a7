"""Train a noise-aware classifier p(y | x_t, t) for classifier guidance (ADM, Dhariwal & Nichol 2021).

    python train_classifier.py                          # CPU: the built-in shapes, Classifier-T/2, minutes
    accelerate launch train_classifier.py classifier-256 --data /data/imagenet256-latents
    python sample.py --ckpt UNCOND_RUN --classifier results/classifier-cpu --classifier-scale 10

It takes train.py's data, size, optimisation and run flags (--data, --image-size, --vae,
--global-batch-size, --max-steps, --results-dir, --run-name, --process and its settings, ...) and
writes a run directory that `--classifier` accepts. Each step: x_t from the process's own forward
sampling at uniform t (a latent cache gives a fresh posterior sample every time), cross-entropy;
AdamW 3e-4, weight decay 0.05, linear decay (the presets); accuracy logged per quarter of the noise
range (acc_q0 nearest the data). Train it under the same process settings (schedule, timesteps) and
on the same data space (--vae, --image-size) as the model it will guide: sample.py checks.
Re-running the same command resumes exactly, as train.py does.
"""

from __future__ import annotations

import argparse
import sys

from dit.cli import run_cli
from dit.errors import UserError
from dit.networks import CLASSIFIER, get_architecture, keys_with_role
from dit.training.classifier_objective import NoisyClassification
from dit.training.config import CLASSIFIER_PRESETS, DEFAULT_CLASSIFIER_PRESET, TrainConfig
from dit.training.flags import arch_of, config_from_args, training_parser
from dit.training.loop import run_training
from dit.training.data import check_latent_norm


def parse_args(argv=None) -> tuple[TrainConfig, argparse.Namespace]:
    parser = training_parser(__doc__.split("\n")[0], CLASSIFIER_PRESETS, DEFAULT_CLASSIFIER_PRESET, recipes=False)
    args = parser.parse_args(argv)
    arch = arch_of(args, CLASSIFIER_PRESETS)  # by role, before another system's flags are judged
    if get_architecture(arch).role != CLASSIFIER:
        raise UserError(f"train_classifier.py trains --arch {' or '.join(keys_with_role(CLASSIFIER))}, got --arch "
                        f"{arch}; train generators with train.py")
    config = config_from_args(args, CLASSIFIER_PRESETS)
    check_latent_norm(config)
    return config, args


def main(argv=None):
    config, args = parse_args(argv)
    return run_training(config, args, NoisyClassification, export_meta={"objective": NoisyClassification.key})


if __name__ == "__main__":
    sys.exit(run_cli(main))
