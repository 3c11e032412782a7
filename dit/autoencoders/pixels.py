"""The pixel convention at both ends of every autoencoder: images are float NCHW RGB in [-1, 1]
inside the package, uint8 NHWC outside (files, the ADM evaluator's .npz format). And pixel space
itself as an autoencoder (`--vae none`, the paper's pixel-space ablations): 3 channels, the identity."""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange

from dit.autoencoders.base import ChannelNorm, ContinuousAutoencoder
from dit.autoencoders.catalog import AutoencoderKind
from dit.layout import CONTINUOUS

PIXEL = "none"


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8, rounding as the ADM/DiT sampling scripts do;
    clips (N, F, C, H, W) -> (N, F, H, W, C)."""
    x = torch.clamp(127.5 * images.float() + 128.0, 0, 255).to(torch.uint8)
    return rearrange(x, "... c h w -> ... h w c").cpu().numpy()


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 (..., C, H, W) -> float in [-1, 1] (x / 127.5 - 1)."""
    return images.float().div(127.5).sub(1)


class PixelSpace(ContinuousAutoencoder):
    """The identity: latents are the images (a ChannelNorm, if given, still applies)."""

    identity = True

    def __init__(self, channel_norm: ChannelNorm | None = None):
        super().__init__(PIXEL)
        self.with_norm(channel_norm)

    @property
    def latent_channels(self) -> int:
        return 3

    @property
    def downsample(self) -> int:
        return 1

    def encode_image_moments(self, images):
        return images, torch.zeros_like(images)

    def decode_image(self, latents):
        return latents.float()


KIND = AutoencoderKind("pixels", lambda name: name == PIXEL, lambda name, device, dtype: PixelSpace(), order=0,
                       peek=lambda name: {"data_kind": CONTINUOUS, "identity": True})
