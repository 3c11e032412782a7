"""The architecture catalog (a dit.registry.Registry): key -> how to configure, build and recognise a network.

The network contract, by role (generator, classifier, tokenizer), and the optional capabilities a
network declares are written as code in dit/networks/base.py. Scripts choose by `role`, never by key.

The key travels: it is a field of the training config (`--arch`), of every checkpoint and export
("arch" in the metadata) and of evaluation JSON. Files written before keys existed are "dit".

An architecture declares its training flags here too: `section`, a frozen dataclass of the
training-config fields only it reads (each a flag of train.py, refused with another --arch), and
`cpu_defaults`, what the CPU demo preset lacks for it to train (dit/training/config.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from dit.networks.base import GENERATOR, ROLES
from dit.registry import SECTIONS, Registry

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
    # The training-config fields only this architecture reads, as a frozen dataclass of defaulted,
    # commented fields (None: none). Each is a flag; changed with another --arch, it is refused. A field
    # another section declares too (a process's, another architecture's) must be declared identically.
    section: type | None = None
    # What the CPU demo preset lacks for this architecture to train on the built-in data: set between the
    # preset and the flags when --arch picks it over cpu-demo. Only what a command could not omit before,
    # or what a resumed run may change: config.json is compared on resume, and a default that changed
    # what a working command trains would refuse its old runs.
    cpu_defaults: Mapping[str, Any] = field(default_factory=dict)
    # Common (or its process's) training fields it does not read: refused unless at their default. With
    # "process" among them (a tokenizer has none), its process's section is refused as another's.
    ignores: tuple[str, ...] = ()
    # A run config recorded before some of its section's fields existed -> the values those fields had
    # then, where not the defaults (None: the defaults). Read on resume.
    saved_before: Callable[[dict], dict] | None = None
    # What it is for (dit/networks/base.py): GENERATOR (train.py), CLASSIFIER (train_classifier.py) or
    # TOKENIZER (train_vq.py); the scripts refuse the others' by role.
    role: str = GENERATOR
    # Takes inputs of any H x W its patch tiles, trained non-square or sampled at another size than
    # trained (its position encoding is a function of the token grid, not a learned table): --image-size H W.
    any_size: bool = False
    # Reads a second time, cond[SPAN] (dit/networks/conditioning.py), when its config asks for one: what the
    # few-step processes (MeanFlow, shortcut models) feed it. `config_for_run` sees data["span"] True then.
    takes_span: bool = False
    # Conditions on captions (dit/networks/base.py ReadsText), not labels: trained on captioned data only
    # (dit/training/captions.py), sampled from prompts (sample.py --prompt).
    reads_text: bool = False

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"architecture {self.key!r}: role must be one of {', '.join(ROLES)}, got {self.role!r}")


ARCHITECTURES: Registry[Architecture] = Registry("architecture")


def register_architecture(arch: Architecture, replace: bool = False) -> Architecture:
    """Register `arch` under its key; its section's fields must agree with every other registered section's."""
    owner = f"the {arch.key} architecture"
    SECTIONS.check(owner, arch.section)
    ARCHITECTURES.register(arch.key, arch, replace)
    SECTIONS.record(owner, arch.section)
    return arch


def get_architecture(key: str) -> Architecture:
    return ARCHITECTURES.get(key)


def role_of(key: str) -> str | None:
    """The role of a registered key; None for one nobody registered (its lookup fails later, with the list)."""
    return ARCHITECTURES.get(key).role if key in ARCHITECTURES else None


def keys_with_role(role: str) -> list[str]:
    return [k for k in ARCHITECTURES.keys() if ARCHITECTURES.get(k).role == role]
