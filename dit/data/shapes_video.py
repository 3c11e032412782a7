"""The built-in video dataset (`--data shapes-video`): the ten shape classes of shapes.py, in motion.

A clip is one shape of class `label` sliding in a straight line over a static background, so a
video model must learn what the image model learns (shape and colour) plus one thing more:
coherent motion. Everything a test or an evaluator needs to judge that is returned as ground
truth with the pixels (direction, speed, per-frame centroid, angle and exact coverage mask).

Per clip, drawn once: the background (shapes.draw_background, the image dataset's own), the
shape's radius (18-26% of the side: smaller than the images' 22-36% to leave room to move, and
at 16 px still ~6-8 px across, enough to tell a plus from an X), a direction (uniform over
DIRECTIONS), a speed (0.3-0.6 px per frame at 16 px, scaled with the size: 2.1-4.2 px net over
8 frames), a start position, a rotation and the colour (shapes.draw_color). Per frame: a little
independent pixel noise (std 0.01, like sensor noise; the background is otherwise static).

The centre stays in the allowed box [m, size - m] on both axes, m = 0.75 radius, so at most a
sliver of the shape leaves the frame (~7% of a disc at one wall, up to 14% of the long bar). The
start position is uniform in that box and the centre reflects at its walls: a clip that reaches
a wall reverses direction ("bounced"). Measured over 10,000 clips at 16 px x 8 frames (seed 0):
29.3% bounced (29% at 32 px too); 0.5-1.0 px/frame, the first choice, bounced ~50% in 16 px.
Classes whose shape survives any rotation (MAX_ROTATION == 180: triangle, half-disc) and the
rotation-invariant circle and ring spin at a constant rate, uniform in +-15 degrees per frame
(below the triangle's 60 degree ambiguity); the others keep the angle drawn once, within
+-MAX_ROTATION, so a square never turns into the diamond.

Ground truth `centroid` is the coverage-weighted centroid of the frame's mask in pixels, x right
and y down, pixel (row i, column j) centred at (j + 0.5, i + 0.5): what a tracker measures on a
generated clip, so real and generated clips are judged by the same estimator. `center` is the
shape's parametric centre (exactly linear, reflected at the walls); the two differ by the sliver
cut at a wall, the half-disc's off-centre centroid and antialiasing: at most 0.62 px over 3,000
clips (the bar at a wall); tests/test_video_data.py allows 0.75.

Clip i of a dataset with seed s is drawn from `np.random.default_rng([s, i])`, as in shapes.py.
Layout: a clip is float (F, 3, H, W) in [-1, 1] in the package and uint8 (N, F, H, W, 3) on disk.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from dit.autoencoders.pixels import from_uint8
from dit.data.shapes import CLASS_NAMES, MAX_ROTATION, draw_background, draw_color, draw_shape, read_cache
from dit.data.stream import flip_or_not
from dit.io.atomic import atomic_path

VERSION = "1"  # bump when the rendering or the draw order changes: cached clips are keyed by it
FRAMES = 8
DIRECTIONS = ("right", "left", "up", "down")  # direction classes; image y points down
STEPS = np.array([(1, 0), (-1, 0), (0, -1), (0, 1)])  # (dx, dy) per direction: "up" decreases y

RADIUS = (0.18, 0.26)  # fraction of the side
SPEED = (0.3, 0.6)  # px per frame at 16 px; scaled with the size
MARGIN = 0.75  # the centre stays this many radii from every wall
SPIN = 15.0  # degrees per frame, at most, for the classes in SPINNING
SPINNING = frozenset(k for k in range(len(CLASS_NAMES)) if MAX_ROTATION[k] == 180) | {0, 4}  # + circle, ring
FRAME_NOISE = 0.01


def reflect(p: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fold positions p into [lo, hi] as a ball bouncing between two walls would (any number of bounces)."""
    span = hi - lo
    q = np.mod(p - lo, 2 * span)
    return lo + np.where(q > span, 2 * span - q, q)


def render_clip(label: int, rng: np.random.Generator, size: int = 16, frames: int = FRAMES, speed: float = 1.0):
    """One clip of class `label`: (clip float32 (F, H, W, 3) in [0, 1], truth dict), all randomness from rng.
    `speed` multiplies SPEED (train.py --shapes-speed): the same draws, the shape moving that much faster.

    truth: direction int (index into DIRECTIONS, the initial direction), speed float (px/frame),
    centroid (F, 2) float32 (x, y) px of the mask, center (F, 2) float32 the shape's centre,
    radius float px, angle (F,) float32 degrees (counter-clockwise), mask (F, H, W) float32
    coverage in [0, 1], bounced bool (the centre hit a wall within the clip).
    """
    # Draw order is fixed (changing it changes every clip of this VERSION): background, radius,
    # direction, speed, start (x, y), angle, spin (drawn for every class), colour, frame noise.
    bg = draw_background(rng, size)  # (H, W, 3)
    radius = rng.uniform(*RADIUS) * size
    direction = int(rng.integers(len(DIRECTIONS)))
    speed = rng.uniform(*SPEED) * speed * size / 16
    lo, hi = MARGIN * radius, size - MARGIN * radius
    start = rng.uniform(lo, hi, size=2)
    angle0 = rng.uniform(-MAX_ROTATION[label], MAX_ROTATION[label])
    spin = rng.uniform(-SPIN, SPIN) * (label in SPINNING)
    color = draw_color(label, rng)
    noise = rng.normal(0, FRAME_NOISE, size=(frames, size, size, 3))

    t = np.arange(frames)
    free = start[None, :] + speed * t[:, None] * STEPS[direction][None, :]  # (F, 2) without walls
    center = reflect(free, lo, hi)
    bounced = bool(np.any((free < lo) | (free > hi)))
    angle = (angle0 + spin * t + 180) % 360 - 180
    alpha = np.stack([draw_shape(label, size, x / size, y / size, radius / size, a)
                      for (x, y), a in zip(center, angle)])  # (F, H, W, 1)  # fmt: skip
    clip = np.clip(bg[None] * (1 - alpha) + color * alpha + noise, 0, 1).astype(np.float32)
    mask = alpha[..., 0]
    truth = dict(direction=direction, speed=float(speed), centroid=mask_centroid(mask), radius=float(radius),
                 center=center.astype(np.float32), angle=angle.astype(np.float32), mask=mask, bounced=bounced)
    return clip, truth


def mask_centroid(mask: np.ndarray) -> np.ndarray:
    """Coverage-weighted centroid (x, y) in px of masks (..., H, W) -> (..., 2) float32; pixel centres at +0.5."""
    h, w = mask.shape[-2:]
    m = mask.astype(np.float64)
    total = np.maximum(m.sum(axis=(-2, -1)), 1e-12)  # an empty mask gives (0, 0), not NaN
    x = (m.sum(axis=-2) * (np.arange(w) + 0.5)).sum(-1) / total
    y = (m.sum(axis=-1) * (np.arange(h) + 0.5)).sum(-1) / total
    return np.stack([x, y], axis=-1).astype(np.float32)


def to_uint8_clip(clip: np.ndarray) -> np.ndarray:
    """float [0, 1] -> uint8, rounded (the on-disk layout keeps the trailing RGB axis)."""
    return np.round(np.clip(clip, 0, 1) * 255).astype(np.uint8)


class ShapesVideoDataset(torch.utils.data.Dataset):
    """`num_clips` clips, label of index i is i % 10 (balanced), rendered on demand.

    `clip(i)` and `__getitem__` give float32 (F, 3, H, W) in [-1, 1] (no flip: InMemoryClips or the
    training stream draws it); the same for a given (seed, index) forever.
    """

    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES

    def __init__(self, num_clips: int = 10000, image_size: int = 16, frames: int = FRAMES, seed: int = 0,
                 speed: float = 1.0):
        self.num_clips, self.image_size, self.frames, self.seed = num_clips, image_size, frames, seed
        self.speed = speed  # a multiple of SPEED

    def __len__(self) -> int:
        return self.num_clips

    def label(self, index: int) -> int:
        return index % self.num_classes

    def render(self, index: int):
        """(clip float32 (F, H, W, 3) in [0, 1], truth): see render_clip."""
        if not 0 <= index < self.num_clips:
            raise IndexError(f"index {index} out of range for {self.num_clips} clips")
        rng = np.random.default_rng([self.seed, index])
        return render_clip(self.label(index), rng, self.image_size, self.frames, self.speed)

    def clip(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.render(index)[0]).permute(0, 3, 1, 2).mul(2).sub(1).contiguous()

    def truth(self, index: int) -> dict:
        return self.render(index)[1]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.clip(index), self.label(index)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every clip, float32 (N, F, 3, H, W) in [-1, 1], and labels (N,). 10,000 clips of 16 px x 8
        frames take 250 MB as float: prefer cached_uint8_clips (62 MB) for training."""
        clips = torch.stack([self.clip(i) for i in range(self.num_clips)])
        return clips, torch.arange(self.num_clips) % self.num_classes


TRUTH_KEYS = ("direction", "speed", "centroid", "angle", "bounced")  # what the cache keeps (masks: re-render)


def speed_tag(speed: float) -> str:
    """What a cached file's name adds for clips of another speed (nothing at 1: old names stay valid)."""
    return "" if speed == 1 else f"-speed{speed:g}"


def cached_uint8_clips(num_clips: int, image_size: int, frames: int, seed: int,
                       cache_dir: str | os.PathLike | None, speed: float = 1.0):  # fmt: skip
    """(uint8 clips (N, F, 3, H, W), labels (N,) int64, truth) of ShapesVideoDataset, rendered once and
    kept in `cache_dir` as an npz (clips on disk in the (N, F, H, W, 3) layout).

    truth: numpy arrays direction (N,) int64, speed (N,) float32, centroid (N, F, 2) float32,
    angle (N, F) float32, bounced (N,) bool. 10,000 clips of 16 px x 8 frames: 7.4 s to render and
    save (one core of a busy 2-core machine), 0.1 s to load, 63 MB.
    """
    path = None
    if cache_dir is not None:
        name = f"shapes-video-v{VERSION}-{num_clips}x{frames}f-{image_size}px-seed{seed}{speed_tag(speed)}.npz"
        path = Path(cache_dir) / name
        data = read_cache(path, ("clips", "labels", *TRUTH_KEYS))
        if data is not None:
            truth = {k: data[k] for k in TRUTH_KEYS}
            return (torch.from_numpy(data["clips"]).permute(0, 1, 4, 2, 3).contiguous(),
                    torch.from_numpy(data["labels"]), truth)
    ds = ShapesVideoDataset(num_clips, image_size, frames, seed, speed)
    clips = np.empty((num_clips, frames, image_size, image_size, 3), np.uint8)
    truth = {"direction": np.empty(num_clips, np.int64), "speed": np.empty(num_clips, np.float32),
             "centroid": np.empty((num_clips, frames, 2), np.float32),
             "angle": np.empty((num_clips, frames), np.float32), "bounced": np.empty(num_clips, bool)}  # fmt: skip
    for i in range(num_clips):
        clip, tr = ds.render(i)
        clips[i] = to_uint8_clip(clip)
        for k in TRUTH_KEYS:
            truth[k][i] = tr[k]
    labels = np.arange(num_clips, dtype=np.int64) % ds.num_classes
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            np.savez(tmp, clips=clips, labels=labels, **truth)
    return torch.from_numpy(clips).permute(0, 1, 4, 2, 3).contiguous(), torch.from_numpy(labels), truth


class InMemoryClips:
    """Clips held as uint8 (N, F, 3, H, W) with labels: the base-dataset interface of InMemoryImages.

    `get(index, rng)` -> (clip float32 (F, 3, H, W) in [-1, 1], label, False). The flip is one
    decision per clip, applied to every frame (mirroring W of the whole clip), drawn by
    stream.flip_or_not itself: one rng draw either way. A flip turns "right" into "left": the
    labels here are shape classes, which survive it; a direction-conditioned model must not flip.
    """

    def __init__(self, clips_uint8: torch.Tensor, labels: torch.Tensor, flip: bool, num_classes: int,
                 class_names: list[str] | None = None):  # fmt: skip
        self.clips, self.labels, self.flip = clips_uint8, labels, flip
        self.num_classes, self.class_names = num_classes, class_names

    def __len__(self) -> int:
        return len(self.labels)

    def get(self, index: int, rng: np.random.Generator):
        x = from_uint8(self.clips[index])  # (F, 3, H, W) in [-1, 1]
        return flip_or_not(x, rng, self.flip), int(self.labels[index]), False
