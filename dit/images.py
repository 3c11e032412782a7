"""Pixel conventions for outputs: [-1, 1] float NCHW in, uint8 NHWC out (the ADM evaluator's format)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8, rounding as the ADM/DiT sampling scripts do."""
    x = torch.clamp(127.5 * images.float() + 128.0, 0, 255).to(torch.uint8)
    return rearrange(x, "n c h w -> n h w c").cpu().numpy()


def make_grid(images: np.ndarray, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile uint8 NHWC images into one HWC image, `nrow` per row (default: near-square)."""
    n, h, w, c = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = np.zeros((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), dtype=np.uint8)
    for i, img in enumerate(images):
        r, k = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + k * (w + pad)
        grid[y : y + h, x : x + w] = img
    return grid


def save_png(array: np.ndarray, path: str | os.PathLike) -> None:
    """Write an HWC uint8 image atomically (a killed run never leaves half a PNG)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(tmp, format="PNG")
    os.replace(tmp, path)
