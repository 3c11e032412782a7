"""The autoencoder catalog (a dit.registry.Registry of kinds): a name that travels (--vae, a checkpoint's "vae", a cache's settings) ->
the autoencoder it names.

Unlike an architecture or process key, a name is not looked up but recognised: "none", "ema", a
hub id, a diffusers directory, a train_vq.py run. Each kind registers how it recognises a name
(cheaply: the name itself, a file header at most; never weights, never the network) and how it
loads one; `load_autoencoder` asks the kinds in ascending `order` and loads with the first that
recognises the name. The built-in order (dit/autoencoders/__init__.py): pixel space "none" (0),
the SD VAEs "ema" / "mse" (10), a VQ tokenizer run, checkpoint or export (20), then code outside
the package (50 unless it says otherwise), and last (100) a diffusers AutoencoderKL as a hub id or
directory, which takes any name and says why one does not load.

A plugin (a module named in $DIT_PLUGINS, dit/registry.py) registers a kind on import:
    register_autoencoder(AutoencoderKind("toy", lambda name: name == "toy", lambda name, device, dtype: Toy()))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from dit.errors import UserError
from dit.registry import Registry, load_plugins

DEFAULT_VAE = "ema"  # what --vae and a checkpoint without a "vae" key mean (DiT's headline VAE)
PLUGIN_ORDER = 50


def _nothing(name: str) -> dict:
    return {}


@dataclass(frozen=True)
class AutoencoderKind:
    key: str
    recognises: Callable[[str], bool]  # a name -> is it one of ours (cheap: no weights, no network)
    load: Callable[[str, Any, Any], Any]  # (name, device, dtype) -> an Autoencoder (dit/autoencoders/base.py)
    order: int = PLUGIN_ORDER  # kinds are asked in ascending order (the module docstring lists the built-ins')
    # What a recognised name says before it is loaded (a file header at most): any of "data_kind",
    # "identity", "codebook_size" (train.py fills --codebook-size from it), "weights_file".
    peek: Callable[[str], dict] = _nothing


AUTOENCODERS: Registry[AutoencoderKind] = Registry("autoencoder kind")


def register_autoencoder(kind: AutoencoderKind, replace: bool = False) -> AutoencoderKind:
    return AUTOENCODERS.register(kind.key, kind, replace)


def autoencoder_kind(name: str) -> AutoencoderKind:
    """The first kind, in order, that recognises `name` (plugins in $DIT_PLUGINS are imported first)."""
    load_plugins()
    kinds = sorted((AUTOENCODERS.get(k) for k in AUTOENCODERS.keys()), key=lambda k: (k.order, k.key))
    for kind in kinds:
        if kind.recognises(str(name)):
            return kind
    raise UserError(f"--vae {name!r} is not a name any autoencoder kind recognises (kinds: "
                    f"{', '.join(k.key for k in kinds) or 'none'}; others register in a module named in $DIT_PLUGINS)")


def load_autoencoder(name: str, device="cpu", dtype=torch.float32):
    """The autoencoder `name` names, on `device` (old checkpoints' names: "ema", "mse", "none", a hub
    id, a diffusers directory, a train_vq.py run, all keep loading)."""
    return autoencoder_kind(name).load(str(name), device, dtype)


def peek_autoencoder(name: str) -> dict:
    """What `name` says without loading it (AutoencoderKind.peek): {} where its kind says nothing."""
    return autoencoder_kind(name).peek(str(name))
