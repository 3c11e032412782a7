"""The pixel convention at both ends of every autoencoder: images are float NCHW RGB in [-1, 1]
inside the package, uint8 NHWC outside (files, the ADM evaluator's .npz format)."""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8, rounding as the ADM/DiT sampling scripts do;
    clips (N, F, C, H, W) -> (N, F, H, W, C)."""
    x = torch.clamp(127.5 * images.float() + 128.0, 0, 255).to(torch.uint8)
    return rearrange(x, "... c h w -> ... h w c").cpu().numpy()


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 (..., C, H, W) -> float in [-1, 1] (x / 127.5 - 1)."""
    return images.float().div(127.5).sub(1)
