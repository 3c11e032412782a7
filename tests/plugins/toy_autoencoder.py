"""A toy autoencoder kind that lives outside the package, registered on import.

tests/test_autoencoder_plugin.py trains, resumes, samples and evaluates through it with train.py,
sample.py and evaluate.py, DIT_PLUGINS pointing here, without any library file naming it: the proof
that the contract in dit/autoencoders/base.py and the registry are enough to add a latent space.

"toy-s2d" (or "toy-s2d:P"): space-to-depth, each P x P patch of pixels (P = 2 unless given) becomes
one latent of 3 P^2 channels, (B, 3, H, W) -> (B, 3 P^2, H / P, W / P). A fixed, invertible and
deterministic map (a permutation of the pixels): decode(encode(x)) is x exactly.
"""

from __future__ import annotations

import torch
from einops import rearrange

from dit.autoencoders import AutoencoderKind, ContinuousAutoencoder, register_autoencoder
from dit.errors import UserError
from dit.layout import CONTINUOUS

PREFIX = "toy-s2d"


class SpaceToDepth(ContinuousAutoencoder):
    def __init__(self, name: str, patch: int):
        super().__init__(name)
        self.patch = patch

    @property
    def latent_channels(self) -> int:
        return 3 * self.patch**2

    @property
    def downsample(self) -> int:
        return self.patch

    def encode_image_moments(self, images):
        z = rearrange(images.float(), "b c (h p1) (w p2) -> b (p1 p2 c) h w", p1=self.patch, p2=self.patch)
        return z, torch.zeros_like(z)  # deterministic: no spread

    def decode_image(self, latents):
        return rearrange(latents.float(), "b (p1 p2 c) h w -> b c (h p1) (w p2)", p1=self.patch, p2=self.patch)


def recognises(name: str) -> bool:
    return name == PREFIX or name.startswith(PREFIX + ":")


def load(name: str, device, dtype) -> SpaceToDepth:
    _, _, patch = name.partition(":")
    if patch and (not patch.isdigit() or int(patch) < 1):
        raise UserError(f"--vae {name}: the patch after '{PREFIX}:' must be a positive integer")
    return SpaceToDepth(name, int(patch or 2))


register_autoencoder(AutoencoderKind("toy-space-to-depth", recognises, load,
                                     peek=lambda name: {"data_kind": CONTINUOUS}), replace=True)
