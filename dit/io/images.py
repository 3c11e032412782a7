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


def check_grid_path(out: str, clips: bool) -> None:
    """Refuse, before any sampling, a grid file the samples cannot be written as: a GIF or MP4 of
    images, or an MP4 without PyAV."""
    from dit.errors import UserError
    from dit.io.video import have_pyav

    suffix = Path(out).suffix.lower()
    if suffix in (".gif", ".mp4") and not clips:
        raise UserError(f"--out {out}: GIF and MP4 grids are for clips; this checkpoint makes images (use .png)")
    if suffix == ".mp4" and not have_pyav():
        raise UserError(f"--out {out}: writing MP4 needs PyAV (pip install av); a .gif works without it")


def write_grid(samples: np.ndarray, out: str, nrow: int | None = None) -> None:
    """Samples as a grid file: images (N, H, W, C) as a PNG; clips (N, F, H, W, C) as a PNG (a row of
    frames per clip), a GIF or an MP4 (`nrow` clips per row) by the suffix of `out`."""
    from dit.io.video import write_gif, write_mp4

    check_grid_path(out, samples.ndim == 5)
    suffix = Path(out).suffix.lower()
    if samples.ndim == 5 and suffix in (".gif", ".mp4"):
        (write_gif if suffix == ".gif" else write_mp4)(out, samples, ncols=nrow)
    elif samples.ndim == 5:
        save_png(make_grid(samples.reshape(-1, *samples.shape[2:]), nrow=samples.shape[1]), out)
    else:
        save_png(make_grid(samples, nrow=nrow), out)
