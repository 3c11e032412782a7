"""The architecture registry: key -> how to configure, build and recognise a network.

The network contract (every registered architecture keeps it):
- `forward(x, t, cond)`: x an image or latent (B, C, H, W) (H != W allowed), a clip
  (B, F, C, H, W) or token ids (B, L); t one time value per sample (B,) or one per token; cond a
  dict of per-sample tensors (dit/networks/conditioning.py: "y" labels, optional "drop", and
  whatever else a system needs). It returns what its process trains it to predict and knows
  nothing of the process (time direction, schedule, prediction type live there).
- attributes `input_shape` (one sample's shape, what the process draws its prior in),
  `num_classes` and `null_class` (conditioning.null_class), and a `config` with `to_dict()`.

The key travels: it is a field of the training config (`--arch`), of every checkpoint and export
("arch" in the metadata) and of evaluation JSON. Files written before keys existed are "dit".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

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


ARCHITECTURES: Registry[Architecture] = Registry("architecture")


def register_architecture(arch: Architecture, replace: bool = False) -> Architecture:
    return ARCHITECTURES.register(arch.key, arch, replace)


def get_architecture(key: str) -> Architecture:
    return ARCHITECTURES.get(key)
