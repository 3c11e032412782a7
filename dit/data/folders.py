"""ImageNet-style class folders -> (image in [-1, 1], label), preprocessed as the public DiT does.

The DiT training script reads ImageNet with torchvision's ImageFolder, the ADM centre crop, a
random horizontal flip and normalisation to [-1, 1]. This module does the same without
torchvision and is robust to what real folders contain: corrupt or empty files, greyscale,
CMYK, palette, alpha and 16-bit images, and images smaller than the target size.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from dit.errors import UserError
from dit.networks.conditioning import UNLABELLED

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
LAYOUT = ("<root>/<class_name>/<image>.jpg (one sub-directory per class), or <root>/<image>.jpg (a flat folder: "
          "no classes, an unconditional model)")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def center_crop_arr(pil_image: Image.Image, image_size: int) -> Image.Image:
    """ADM's centre crop (Dhariwal & Nichol 2021, used by the public DiT): square `image_size` image.

    Halving with a box filter while the short side is at least twice the target avoids the
    aliasing of one large bicubic downscale; then one bicubic resize brings the short side to
    exactly `image_size` (upscaling small images), and the centre square is kept.
    """
    while min(pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(s // 2 for s in pil_image.size), resample=Image.BOX)
    scale = image_size / min(pil_image.size)
    # max(..., image_size) guards the short side against float round-down (e.g. 31.9999 -> 31).
    new_size = tuple(max(round(s * scale), image_size) for s in pil_image.size)
    pil_image = pil_image.resize(new_size, resample=Image.BICUBIC)
    left = (pil_image.width - image_size) // 2
    top = (pil_image.height - image_size) // 2
    return pil_image.crop((left, top, left + image_size, top + image_size))


def center_crop_hw(pil_image: Image.Image, height: int, width: int) -> Image.Image:
    """ADM's centre crop to a height x width image (any aspect ratio; square sizes: `center_crop_arr`,
    to the bit): box-halve while both sides stay at least twice the target, one bicubic resize so the
    image covers the target (the tighter side exactly), then the centre height x width window."""
    if height == width:
        return center_crop_arr(pil_image, height)
    while pil_image.width >= 2 * width and pil_image.height >= 2 * height:
        pil_image = pil_image.resize(tuple(s // 2 for s in pil_image.size), resample=Image.BOX)
    scale = max(width / pil_image.width, height / pil_image.height)
    new_size = (max(round(pil_image.width * scale), width), max(round(pil_image.height * scale), height))
    pil_image = pil_image.resize(new_size, resample=Image.BICUBIC)
    left, top = (pil_image.width - width) // 2, (pil_image.height - height) // 2
    return pil_image.crop((left, top, left + width, top + height))


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB with the colours a viewer would show."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit greyscale (PNG/TIFF): Pillow's convert("RGB") clips at 255, so mid-grey 32768
        # would become white. Scale 0..65535 to 0..255 instead; mode "I" is what older Pillow
        # versions give for the same files.
        arr = np.asarray(img, dtype=np.float64) / 257.0
        return Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":  # 32-bit float TIFF: assume [0, 1] if it fits there, else [0, 255]
        arr = np.asarray(img, dtype=np.float64)
        arr = arr * 255.0 if arr.max(initial=0.0) <= 1.0 else arr
        return Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), "L").convert("RGB")
    if (img.mode == "P" and "transparency" in img.info) or img.mode in ("PA", "LA", "La", "RGBa"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        # Transparent pixels have no defined colour (often black); show them over white, as
        # browsers and image viewers do, rather than letting the hidden RGB leak through.
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, img).convert("RGB")
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, RGB: Pillow converts these correctly


def load_image(path) -> Image.Image:
    """Open (a path or a file object), fully decode, apply the EXIF orientation and convert to RGB;
    raises on a bad file."""
    with Image.open(path) as img:
        return upright_rgb(img)


def upright_rgb(img: Image.Image) -> Image.Image:
    """A PIL image decoded now (a truncated file fails here, not later in a worker), turned by its EXIF
    orientation and converted to RGB: what every source of images trains on."""
    img.load()
    try:  # phones store the rotation as an EXIF tag; a broken tag should not lose the image
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001
        pass
    return to_rgb(img)


def first_readable(index: int, n: int, read, what: str):
    """(image, k): the first of samples index, index + 1, ... (mod n) that `read` decodes (None: unreadable,
    counted by `read`), k how many were passed over; every sample unreadable is one line naming `what`."""
    for k in range(n):
        img = read((index + k) % n)
        if img is not None:
            return img, k
    raise UserError(f"no readable images in {what}: all {n} failed to decode")


def to_tensor(img: Image.Image, height: int, width: int) -> torch.Tensor:
    """Centre-cropped to height x width (`center_crop_hw`), as float32 (3, H, W) in [-1, 1]."""
    arr = np.asarray(center_crop_hw(img, height, width))  # (H, W, 3) uint8
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(127.5).sub(1)


class ImageFolderDataset(torch.utils.data.Dataset):
    """`root/<class_name>/**/<image>`: sorted class names -> labels 0..K-1, as torchvision's ImageFolder;
    or `root/<image>`, a flat folder: no classes (num_classes 0), every label the null label.

    A source of images (dit/data/sources.py: image, label, header_size by index), and a torch Dataset:
    `__getitem__` returns (image float32 (3, H, W) in [-1, 1], label) at image_size x width (default
    square). A file that cannot be read is recorded in `self.skipped` (in this process; DataLoader
    workers each keep their own copy) and the next readable index is returned instead, so one bad file
    never stops a long run. `scan()` checks every file up front and drops the bad ones. Hidden files
    and directories (".DS_Store", ".ipynb_checkpoints", "._x.jpg") are ignored.
    With `flip`, images are mirrored with probability 1/2 using `generator` (torch's global RNG
    if None, which DataLoader seeds per worker).
    """

    def __init__(self, root: str | os.PathLike, image_size: int = 256, flip: bool = False,
                 generator: torch.Generator | None = None, scan: bool = False, width: int | None = None):
        self.root, self.image_size, self.flip, self.generator = Path(root), image_size, flip, generator
        self.width = width or image_size  # image_size is the height
        self.where = str(self.root)
        if not self.root.is_dir():
            raise UserError(f"image folder {self.root} does not exist or is not a directory: expected {LAYOUT}")
        dirs = [p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        top = sorted(f.name for f in self.root.iterdir() if _is_image(f.name) and f.is_file())
        if top and dirs:
            raise UserError(f"image folder {self.root} mixes images at its top level ({top[0]}, ...) with sub-directories "
                            f"({sorted(p.name for p in dirs)[:3]}): move every image into a class sub-directory, or keep "
                            "a flat folder of images only (unconditional)")
        self.class_names = sorted(p.name for p in dirs)
        if not self.class_names and not top:
            raise UserError(f"image folder {self.root} has no images and no class sub-directories: expected {LAYOUT}")
        # A flat folder has no classes: every image carries the null label (dit/networks/conditioning.py).
        self.num_classes = len(self.class_names)
        self.samples: list[tuple[str, int]] = [(str(self.root / f), UNLABELLED) for f in top]
        for label, name in enumerate(self.class_names):
            for dirpath, dirnames, filenames in os.walk(self.root / name, followlinks=True):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # sorted: stable order
                self.samples += [(os.path.join(dirpath, f), label) for f in sorted(filenames) if _is_image(f)]
        if not self.samples:
            raise UserError(
                f"image folder {self.root} has no images ({' '.join(IMAGE_EXTENSIONS)}): expected {LAYOUT}"
            )
        self.skipped: set[str] = set()
        if scan:
            self.scan()
        self.read(0)  # at least one file decodes (else one line), checked before a run writes anything

    def __len__(self) -> int:
        return len(self.samples)

    def scan(self, drop: bool = True) -> list[str]:
        """Try to decode every file; return the unreadable paths (and drop them from the dataset)."""
        bad = [path for path, _ in self.samples if self._read(path) is None]
        if drop and bad:
            bad_set = set(bad)
            self.samples = [s for s in self.samples if s[0] not in bad_set]
            if not self.samples:
                raise UserError(f"no readable images in {self.root}: all {len(bad)} files failed to decode")
        return bad

    def _read(self, path: str) -> Image.Image | None:
        try:
            return load_image(path)
        # Pillow reports corrupt data with many exception types (OSError, SyntaxError,
        # ValueError, struct.error, DecompressionBombError, ...), so anything from decoding
        # counts as a bad file; the error is kept in a warning for the user.
        except Exception as e:  # noqa: BLE001
            if path not in self.skipped:
                warnings.warn(f"skipping unreadable image {path}: {type(e).__name__}: {e}", stacklevel=3)
            self.skipped.add(path)
            return None

    def image(self, index: int) -> Image.Image | None:
        return self._read(self.samples[index][0])

    def label(self, index: int) -> int:
        return self.samples[index][1]

    def name(self, index: int) -> str:
        return f"image {self.samples[index][0]}"

    def header_size(self, index: int) -> tuple[int, int] | None:
        from dit.data.buckets import header_size

        return header_size(self.samples[index][0])

    def read(self, index: int) -> tuple[torch.Tensor, int, bool]:
        """(image (3, H, W) in [-1, 1] unflipped, label, whether file `index` was unreadable and replaced by
        the next readable one)."""
        img, k = first_readable(index, len(self.samples), self.image, str(self.root))
        return to_tensor(img, self.image_size, self.width), self.label((index + k) % len(self.samples)), k > 0

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x, label, _ = self.read(index)
        if self.flip and torch.rand((), generator=self.generator) < 0.5:
            x = x.flip(-1)
        return x, label
