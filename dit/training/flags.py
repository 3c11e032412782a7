"""The command line of the training scripts: a preset, then every training field as a flag.

The flags are generated from the field table (dit/training/sections.py): TrainConfig's common fields,
then one group per registered architecture and process with its section's fields. Plugins ($DIT_PLUGINS)
are imported first, so a plugin's section adds its flags. Each help shows the field's default, read
from the code. train.py (generators), train_classifier.py (noise-aware classifiers) and train_vq.py
(tokenizers) read the same flags, so a classifier is trained on exactly the data, size and optimisation
options its generator was.
"""

from __future__ import annotations

import argparse

from dit.cli import ArgumentParser, add_switch, image_hw, image_size_token, typed
from dit.errors import UserError
from dit.networks import DEFAULT_ARCH, get_architecture
from dit.registry import load_plugins
from dit.training.config import RECIPES, TrainConfig, field_types, from_preset
from dit.training.sections import ARCHITECTURE, field_table


def training_parser(description: str, presets: dict, default_preset: str, recipes: bool = True) -> ArgumentParser:
    load_plugins()  # modules in $DIT_PLUGINS register their architectures, processes and sections first
    p = ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=f"presets: {', '.join(presets)} (default {default_preset}); every training field is a "
                              "flag: the common ones (dit/training/config.py:TrainConfig), and each architecture's "
                              "and process's section (declared beside its registration)")
    p.add_argument("preset", nargs="?", default=default_preset, help="named preset")
    if recipes:
        p.add_argument("--recipe", help=f"how to train: {', '.join(RECIPES)} (process, time sampling, loss, block "
                                        "options; flags win); the run is then named <preset>-<recipe>")
    p.add_argument("--resume", metavar="PATH", help="checkpoint (.../checkpoints/step_*) or run directory to resume")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is visible")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--stop-at", type=typed(int), metavar="STEP",
                   help="save and stop at this step (the schedule still runs to --max-steps); re-run to go on")
    groups = {(): p.add_argument_group("common training options (dit/training/config.py)")}
    for f in field_table(TrainConfig).values():
        owner = f.owners[:1]  # a shared field is listed under its first owner, naming the others
        if owner not in groups:
            kind, key = owner[0]
            groups[owner] = p.add_argument_group(f"the {key} {kind} (--{'arch' if kind == ARCHITECTURE else kind} {key})")
        also = f"; also {', '.join(k for _, k in f.owners[1:])}" if len(f.owners) > 1 else ""
        help_ = f"(code default: {f.default!r}{also})"
        if f.kind is bool:  # --flag, --no-flag, --flag true|false
            add_switch(groups[owner], f.flag[2:], dest=f.name, help=help_)
        elif f.name == "image_size":  # H, HxW or H W: the height, and the width where it differs
            groups[owner].add_argument(f.flag, dest=f.name, type=image_size_token, nargs="+", metavar="H[xW]",
                                       help=f"image height x width: 256, 256x384 or 256 384 {help_}")
        else:
            groups[owner].add_argument(f.flag, dest=f.name, type=typed(f.kind), metavar=f.kind.__name__.upper(),
                                       help=help_)
    return p


def arch_of(args: argparse.Namespace, presets: dict) -> str:
    """The architecture a command asks for (--arch, else its preset's), for the scripts' role checks
    before the config is built; an unknown preset or key is a UserError."""
    if args.preset not in presets:
        raise UserError(f"unknown preset '{args.preset}'; choose one of {', '.join(presets)}")
    arch = args.arch or presets[args.preset].get("arch", DEFAULT_ARCH)
    get_architecture(arch)  # an unknown key: the list of known ones
    return arch


def config_from_args(args: argparse.Namespace, presets: dict | None = None, resolve=None) -> TrainConfig:
    """The run's config: the preset (from `presets`, default the generators'), a recipe, then the flags
    (`resolve`: see from_preset)."""
    if args.stop_at is not None and args.stop_at < 1:
        raise UserError(f"--stop-at must be a positive step, got {args.stop_at}")
    overrides = {k: v for k, v in vars(args).items() if k in field_types() and v is not None}
    if "image_size" in overrides:  # --image-size H [W]: --image-width only where it differs from the height
        h, w = image_hw(overrides["image_size"])
        overrides.update(image_size=h, **({"image_width": w} if w != h else {}))
    return from_preset(args.preset, getattr(args, "recipe", None), presets=presets, resolve=resolve, **overrides)
