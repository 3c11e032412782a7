"""A built-in, procedurally generated dataset: ten coloured shapes a person can name at a glance.

It exists so that `python train.py` can train a class-conditional DiT on two CPU cores with no
download, and so that samples can be judged by eye ("is row 3 a yellow plus?") and by a small
classifier trained on the same distribution (dit/eval/shapes_judge.py). Each class is a (shape, colour)
pair; within a class, position, size, rotation, colour and background vary, so the model has a
real (if easy) distribution to learn.

Images are rendered with numpy only: a shape is a predicate on local coordinates, evaluated on
a supersampled grid (4x4 per pixel at 32 px) and box-averaged down, which antialiases edges.
Image i of a dataset with seed s is drawn from `np.random.default_rng([s, i])`, so it never
depends on batch size, worker count or the order of access (the per-sample seeding of EDM2).
"""

from __future__ import annotations

import math
import os
import sys
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dit.autoencoders.pixels import to_uint8
from dit.io.atomic import atomic_path

VERSION = "1"  # bump when the rendering changes: cached classifiers are keyed by it

CLASS_NAMES = [
    "red_circle", "green_square", "blue_triangle", "yellow_plus", "magenta_ring",
    "cyan_diamond", "orange_bar", "white_star", "purple_half_disc", "pink_x",
]  # fmt: skip

# sRGB in [0, 1]. Hues spread round the colour wheel (plus white and a light pink), and bright
# enough to stand out on the dark background.
COLORS = np.array([
    (0.90, 0.12, 0.10), (0.10, 0.75, 0.20), (0.20, 0.35, 1.00), (0.95, 0.90, 0.10),
    (0.90, 0.10, 0.90), (0.10, 0.90, 0.90), (1.00, 0.55, 0.05), (0.95, 0.95, 0.95),
    (0.55, 0.20, 0.85), (1.00, 0.60, 0.72),
])  # fmt: skip

# Rotation range in degrees per class. Square, bar, plus and X stay near axis-aligned so that a
# rotated square never looks like the diamond and the plus never looks like the X.
MAX_ROTATION = (0, 15, 180, 10, 0, 8, 10, 36, 180, 10)


# Unit normals of the pentagram's five lines (tip k to tip k+2 lies at distance cos 72 degrees
# from the centre, perpendicular to the direction of tip k+1); tips point at 90 + 72k degrees.
_STAR_NORMALS = [(math.cos(math.radians(90 + 72 * k)), math.sin(math.radians(90 + 72 * k))) for k in range(5)]


def _in_star(u, v):
    """Filled pentagram {5/2} of outer radius 1: the centre pentagon lies inside all five lines,
    each spike outside exactly one, and the gaps between spikes outside two or more."""
    outside = sum((nu * u + nv * v > math.cos(math.radians(72))).astype(np.uint8) for nu, nv in _STAR_NORMALS)
    return outside <= 1


def _mask(label: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean coverage of class `label` at local coordinates (u right, v up, radius ~1)."""
    au, av = np.abs(u), np.abs(v)
    if label == 0:
        return u * u + v * v <= 1.0
    if label == 1:
        return np.maximum(au, av) <= 0.8  # side 1.6: about the circle's area
    if label == 2:  # equilateral, circumradius 1.1: outward edge normals at -90, 30, 150 degrees
        r_in = 0.55
        return (-v <= r_in) & (0.866 * u + 0.5 * v <= r_in) & (-0.866 * u + 0.5 * v <= r_in)
    if label == 3 or label == 9:  # plus; the X is the plus turned 45 degrees
        if label == 9:
            u, v = (u - v) * 0.7071, (u + v) * 0.7071
            au, av = np.abs(u), np.abs(v)
        arm = 0.28
        return ((au <= arm) & (av <= 1.0)) | ((av <= arm) & (au <= 1.0))
    if label == 4:
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.55**2)
    if label == 5:
        return au / 0.75 + av / 1.05 <= 1.0  # taller than wide: unlike a turned square
    if label == 6:
        return (au <= 1.05) & (av <= 0.3)
    if label == 7:
        return _in_star(u / 1.1, v / 1.1)  # a slim star: a little larger to match the others
    if label == 8:
        v = v + 0.4  # centre the flat half-disc on its centroid (4/(3 pi) ~ 0.42)
        return (u * u + v * v <= 1.1) & (v >= 0)
    raise ValueError(f"label must be in [0, {len(CLASS_NAMES)}), got {label}")


def _supersample(size: int) -> int:
    """Samples per pixel side: 4 up to 32 px (17 coverage levels), then fewer, so cost stays ~128^2."""
    return max(2, min(4, 128 // size))


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Supersample centres in image units [0, 1], y pointing down: (S, S) each, S = size * supersample."""
    n = size * _supersample(size)
    c = (np.arange(n, dtype=np.float32) + 0.5) / n
    return np.meshgrid(c, c, indexing="xy")


def draw_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Dark, slightly tinted background with a gentle linear gradient and mild pixel noise: float64
    (H, W, 3), not clipped. Draws, in order: level, tint (3), gradient angle, gradient strength,
    noise (H, W, 3)."""
    base = rng.uniform(0.03, 0.16) + rng.uniform(-0.03, 0.03, size=3)
    angle = rng.uniform(0, 2 * math.pi)
    c = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    ramp = np.cos(angle) * c[None, :] + np.sin(angle) * c[:, None]  # (H, W)
    bg = base[None, None, :] + rng.uniform(0, 0.12) * ramp[..., None]
    return bg + rng.normal(0, 0.015, size=(size, size, 3))


def draw_shape(label: int, size: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """Coverage alpha float32 (H, W, 1) in [0, 1] of class `label`, deterministic (no rng).

    cx, cy, radius are in image units (fractions of the side, y pointing down); `angle` is the
    counter-clockwise rotation in degrees. Parts outside the image are cut off.
    """
    gx, gy = _grid(size)
    theta = math.radians(angle)
    # Evaluate the predicate only inside the shape's bounding box (every shape lies within
    # 1.15 radii of its centre): this halves the rendering time on average.
    lo = np.clip(np.floor((np.array([cx, cy]) - 1.15 * radius) * size), 0, size).astype(int)
    hi = np.clip(np.ceil((np.array([cx, cy]) + 1.15 * radius) * size), 0, size).astype(int)
    ss = _supersample(size)
    box = np.s_[lo[1] * ss : hi[1] * ss, lo[0] * ss : hi[0] * ss]
    dx, dy = (gx[box] - cx) / radius, (cy - gy[box]) / radius  # local units, v up
    cos, sin = math.cos(theta), math.sin(theta)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy  # rotate the sample points by -theta
    cover = _mask(label, u, v).astype(np.float32)
    h, w = hi[1] - lo[1], hi[0] - lo[0]
    alpha = np.zeros((size, size, 1), np.float32)
    alpha[lo[1] : hi[1], lo[0] : hi[0], 0] = cover.reshape(h, ss, w, ss).mean(axis=(1, 3))
    return alpha


def draw_color(label: int, rng: np.random.Generator, color: int | None = None) -> np.ndarray:
    """The shape's RGB (3,) in [0, 1]: the class colour (or class `color`'s), brightness and hue jittered."""
    c = COLORS[label if color is None else color] * rng.uniform(0.85, 1.05) + rng.normal(0, 0.04, size=3)
    return np.clip(c, 0, 1)


def composite(bg: np.ndarray, alpha: np.ndarray, color: np.ndarray) -> np.ndarray:
    """Paint `color` over `bg` (H, W, 3) with coverage `alpha` (H, W, 1): float32 (H, W, 3) in [0, 1]."""
    img = bg * (1 - alpha) + color[None, None, :] * alpha
    return np.clip(img, 0, 1).astype(np.float32)


def render_with_mask(
    label: int, rng: np.random.Generator, size: int = 32, color: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 (H, W, 3) in [0, 1], mask float32 (H, W) coverage in [0, 1]) of class `label`.

    The image is exactly `render`'s for the same rng; the mask is the shape's antialiased
    coverage (the fraction of each pixel's supersamples inside the shape).
    """
    # Draw order (changing it changes every image of VERSION "1"): background, radius, centre
    # (x, y), rotation, colour.
    bg = draw_background(rng, size)
    radius = rng.uniform(0.22, 0.36)  # 22-36% of the side, centre kept so the shape stays (nearly) inside
    cx, cy = rng.uniform(radius, 1 - radius, size=2)
    alpha = draw_shape(label, size, cx, cy, radius, rng.uniform(-MAX_ROTATION[label], MAX_ROTATION[label]))
    return composite(bg, alpha, draw_color(label, rng, color)), alpha[..., 0]


def render(label: int, rng: np.random.Generator, size: int = 32, color: int | None = None) -> np.ndarray:
    """One image of class `label` as float32 HWC RGB in [0, 1], all randomness drawn from `rng`.

    `color` paints the shape in another class's colour: negatives for the classifier, so that
    it has to look at the shape and not only at the colour.
    """
    return render_with_mask(label, rng, size, color)[0]


class ShapesDataset(torch.utils.data.Dataset):
    """`num_images` images, label of index i is i % 10 (balanced), rendered on demand.

    Returns (image, label): image float32 (3, H, W) in [-1, 1]. With `flip`, a random horizontal
    flip (the DiT paper's only augmentation) is drawn from torch's global RNG, which DataLoader
    seeds per worker; every class is mirror-symmetric as a class, so labels stay valid.
    """

    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES

    def __init__(self, num_images: int = 10000, image_size: int = 32, seed: int = 0, flip: bool = False):
        self.num_images, self.image_size, self.seed, self.flip = num_images, image_size, seed, flip

    def __len__(self) -> int:
        return self.num_images

    def label(self, index: int) -> int:
        return index % self.num_classes

    def image(self, index: int) -> torch.Tensor:
        """Unflipped image `index`, (3, H, W) in [-1, 1]; the same for a given (seed, index) forever."""
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        rng = np.random.default_rng([self.seed, index])
        hwc = render(self.label(index), rng, self.image_size)
        return torch.from_numpy(hwc).permute(2, 0, 1).mul(2).sub(1).contiguous()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self.image(index)
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, self.label(index)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every image unflipped, (N, 3, H, W), and labels (N,): for training loops that index in memory."""
        images = torch.stack([self.image(i) for i in range(self.num_images)])
        labels = torch.arange(self.num_images) % self.num_classes
        return images, labels


def read_cache(path: Path, keys) -> dict | None:
    """The arrays `keys` of a rendered-data cache, or None when it is absent or unreadable (a damaged
    disk, a copy cut short): the data is rendered again and the file replaced, with a note."""
    if not path.exists():
        return None
    try:
        with np.load(path) as data:
            return {k: data[k] for k in keys}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        print(f"note: the cache {path} is unreadable ({type(e).__name__}); rendering it again", file=sys.stderr)
        return None


def cached_uint8(num_images: int, image_size: int, seed: int, cache_dir: str | os.PathLike | None):
    """(uint8 images (N, 3, H, W), labels (N,)) of ShapesDataset(num_images, image_size, seed), rendered
    once and kept in `cache_dir` (rendering 10,000 images takes seconds; sweeps start many runs)."""
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"shapes-v{VERSION}-{num_images}x{image_size}px-seed{seed}.npz"
        data = read_cache(path, ("images", "labels"))
        if data is not None:
            return torch.from_numpy(data["images"]), torch.from_numpy(data["labels"])
    images, labels = ShapesDataset(num_images, image_size, seed).tensors()
    images = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            np.savez(tmp, images=images.numpy(), labels=labels.numpy())
    return images, labels


def folder_names() -> list[str]:
    """Class directory names "00_red_circle", ...: sorted (as ImageFolder sorts) in label order."""
    return [f"{k:02d}_{name}" for k, name in enumerate(CLASS_NAMES)]


def write_image_folder(
    root: str | os.PathLike, images_per_class: int, image_size: int = 32, seed: int = 0
) -> Path:
    """Write PNGs as root/<k>_<class_name>/<i>.png (the ImageFolder layout); returns root.

    The index prefix makes the folder's sorted-name labels equal ShapesDataset's labels, so a
    model trained from the folder can be judged by the same classifier.
    """
    root = Path(root)
    ds = ShapesDataset(images_per_class * len(CLASS_NAMES), image_size, seed)
    dirs = [root / name for name in folder_names()]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    for i in range(len(ds)):
        Image.fromarray(to_uint8(ds.image(i)[None])[0]).save(dirs[ds.label(i)] / f"{i:06d}.png")
    return root
