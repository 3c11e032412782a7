"""The command line of the training scripts: a preset, then every TrainConfig field as a flag.

train.py (generators) and train_classifier.py (noise-aware classifiers) read the same flags, so a
classifier is trained on exactly the data, size and optimisation options its generator was.
"""

from __future__ import annotations

import argparse

from dit.cli import ArgumentParser, add_switch, typed
from dit.errors import UserError
from dit.registry import load_plugins
from dit.training.config import RECIPES, TrainConfig, field_types, from_preset


def training_parser(description: str, presets: dict, default_preset: str, recipes: bool = True) -> ArgumentParser:
    load_plugins()  # modules in $DIT_PLUGINS register their architectures and processes first
    p = ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=f"presets: {', '.join(presets)} (default {default_preset}); every field of "
                              "dit/training/config.py:TrainConfig is a flag, e.g. --global-batch-size 512")
    p.add_argument("preset", nargs="?", default=default_preset, help="named preset")
    if recipes:
        p.add_argument("--recipe", help=f"how to train: {', '.join(RECIPES)} (process, time sampling, loss, block "
                                        "options; flags win); the run is then named <preset>-<recipe>")
    p.add_argument("--resume", metavar="PATH", help="checkpoint (.../checkpoints/step_*) or run directory to resume")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is visible")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--stop-at", type=typed(int), metavar="STEP",
                   help="save and stop at this step (the schedule still runs to --max-steps); re-run to go on")
    defaults = TrainConfig()
    for name, kind in field_types().items():
        flag, help_ = name.replace("_", "-"), f"(TrainConfig default: {getattr(defaults, name)!r})"
        if kind is bool:  # --flag, --no-flag, --flag true|false
            add_switch(p, flag, dest=name, help=help_)
        else:
            p.add_argument(f"--{flag}", dest=name, type=typed(kind), metavar=kind.__name__.upper(), help=help_)
    return p


def config_from_args(args: argparse.Namespace, presets: dict | None = None, resolve=None) -> TrainConfig:
    """The run's config: the preset (from `presets`, default the generators'), a recipe, then the flags
    (`resolve`: see from_preset)."""
    if args.stop_at is not None and args.stop_at < 1:
        raise UserError(f"--stop-at must be a positive step, got {args.stop_at}")
    overrides = {k: v for k, v in vars(args).items() if k in field_types() and v is not None}
    return from_preset(args.preset, getattr(args, "recipe", None), presets=presets, resolve=resolve, **overrides)
