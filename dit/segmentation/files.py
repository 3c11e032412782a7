"""Images in and label maps out for segment.py: reading a folder, writing label PNGs and overlays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from dit.errors import UserError
from dit.io.images import save_png

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# Distinct colours for up to 12 regions (then repeated): the overlay paints each label with one.
PALETTE = np.array([
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180), (70, 240, 240),
    (245, 130, 48), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40),
], dtype=np.float32)  # fmt: skip
OVERLAY_ALPHA = 0.5


def list_images(folder: str | Path) -> list[Path]:
    """The image files directly in `folder`, sorted by name; checked readable, with distinct stems
    (each names its outputs), before any work is done."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--images {folder}: no such directory")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"--images {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    stems = {}
    for p in files:
        if p.stem in stems:
            raise UserError(f"{stems[p.stem].name} and {p.name} would write the same outputs ({p.stem}.png): rename one")
        stems[p.stem] = p
        try:
            with Image.open(p) as im:
                im.verify()
        except (UnidentifiedImageError, OSError) as e:
            raise UserError(f"{p} is not a readable image ({type(e).__name__})") from None
    return files


def read_image(path: Path, side: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(image (3, side, side) in [-1, 1], its original (H, W)): RGB, resized to the model's square input."""
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    size = (rgb.height, rgb.width)
    if size != (side, side):
        rgb = rgb.resize((side, side), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
    return x, size


def read_original(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def labels_at(scores: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Region scores (K, h, w) -> uint8 labels (H, W) at an image's own size (scores interpolated bilinearly)."""
    if tuple(scores.shape[-2:]) != size:
        scores = F.interpolate(scores[None], size=size, mode="bilinear", align_corners=False)[0]
    return scores.argmax(0).to(torch.uint8).cpu().numpy()


def overlay(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) image with each label's colour blended over it."""
    colours = PALETTE[labels % len(PALETTE)]
    return (image.astype(np.float32) * (1 - OVERLAY_ALPHA) + colours * OVERLAY_ALPHA).round().astype(np.uint8)


def write_outputs(out: Path, stem: str, image: np.ndarray, labels: np.ndarray) -> None:
    """<stem>.png: the label map (one channel, values 0..K-1); <stem>_overlay.png: the colour overlay."""
    save_png(labels[..., None], out / f"{stem}.png")
    save_png(overlay(image, labels), out / f"{stem}_overlay.png")
