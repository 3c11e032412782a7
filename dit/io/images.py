"""Image files: tile uint8 NHWC images into a grid and write PNGs atomically (pixel conventions:
dit/autoencoders/pixels.py)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image
from dit.io.atomic import atomic_path


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
    with atomic_path(path) as tmp:
        Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(tmp, format="PNG")
