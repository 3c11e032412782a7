"""The architecture registry: key -> how to configure, build and recognise a network.

The network contract, by role (generator, classifier, tokenizer), and the optional capabilities a
network declares are written as code in dit/networks/base.py. Scripts choose by `role`, never by key.

The key travels: it is a field of the training config (`--arch`), of every checkpoint and export
("arch" in the metadata) and of evaluation JSON. Files written before keys existed are "dit".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from dit.networks.base import GENERATOR, ROLES
from dit.registry import Registry

DEFAULT_ARCH = "dit"  # what a checkpoint without an "arch" key (public weights, older exports) holds


@dataclass(frozen=True)
class Architecture:
    key: str
    config_from_dict: Callable[[dict], Any]  # the config stored in checkpoints -> a config object
    build: Callable[[Any], torch.nn.Module]  # config -> a freshly initialised network
    # (training config, data) -> config. `data`: in_channels, input_size, num_classes, image_size,
    # downsample (the autoencoder's factor). The training config is read, never imported here.
    config_for_run: Callable[[Any, dict], Any]
    # Early check of a training config's network flags, before any data is read (None: none).
    check_run: Callable[[Any], None] | None = None
    # A state dict without a config (public .pt files) -> its config (None: such files are refused).
    infer_config: Callable[[dict], Any] | None = None
    describe: Callable[[Any], str] = repr
    # What one sample of its data is: "image" (C, H, W) or "clip" (F, C, H, W) (dit/layout.py).
    data_kind: str = "image"
    # Training-config fields only this architecture reads: given with another one, they are refused.
    run_fields: tuple[str, ...] = ()
    # What it is for (dit/networks/base.py): GENERATOR (train.py), CLASSIFIER (train_classifier.py) or
    # TOKENIZER (train_vq.py); the scripts refuse the others' by role.
    role: str = GENERATOR

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"architecture {self.key!r}: role must be one of {', '.join(ROLES)}, got {self.role!r}")


ARCHITECTURES: Registry[Architecture] = Registry("architecture")


def register_architecture(arch: Architecture, replace: bool = False) -> Architecture:
    return ARCHITECTURES.register(arch.key, arch, replace)


def get_architecture(key: str) -> Architecture:
    return ARCHITECTURES.get(key)


def role_of(key: str) -> str | None:
    """The role of a registered key; None for one nobody registered (its lookup fails later, with the list)."""
    return ARCHITECTURES.get(key).role if key in ARCHITECTURES else None


def keys_with_role(role: str) -> list[str]:
    return [k for k in ARCHITECTURES.keys() if ARCHITECTURES.get(k).role == role]
