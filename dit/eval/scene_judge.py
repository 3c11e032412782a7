"""The compositional judge of text-to-image samples on the captioned scenes (dit/data/shapes_captions.py):
GenEval-style (Ghosh et al. 2023), each attribute checked separately, then all of them jointly.

For each image:
1. **Objects.** The background is dark (max channel below ~0.3) and every object colour bright (a channel
   above ~0.75), so the foreground is where the max channel exceeds FOREGROUND; its 8-connected components
   of at least MIN_AREA pixels are the objects, largest first. This is the mask.
2. **Colour** is the mean colour of the mask's core (pixels above CORE), named by the nearest of the
   scenes' six colours.
3. **Position** is the mask's centroid: its cell of the 3 x 3 grid; a relation between two objects compares
   their cells' columns (left of, right of) or rows (above, below), as the training scenes define it.
4. **Shape** is read by a small CNN from a CROP x CROP window of the foreground intensity around the
   centroid, scaled to its peak: a colourless input. It is trained on single objects painted in random
   colours (the scenes' ten colours and random hues), so it cannot judge shape by colour.

`judge(expected, found)` scores one image against the scene its prompt asks for (shapes_captions.parse_
canonical): shape, colour and position right for every object asked for (a pair: the assignment of the
two largest objects to the two asked for that gets the most right), joint when all three are, and count
when exactly as many objects were found.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from dit.data import shapes_captions as sc
from dit.data.shapes import COLORS, draw_color
from dit.eval.shapes_judge import cached_judge, cross_entropy_step

VERSION = "1"  # bump when the segmentation, the crops or the classifier's training change
FOREGROUND, CORE, MIN_AREA, CROP = 0.42, 0.6, 4, 16
TRAIN_STEPS, TRAIN_IMAGES = 600, 12_000


@dataclass(frozen=True)
class Found:
    """One object the judge found: its pixel count, centroid (image units, y down), cell, colour and shape."""

    area: int
    cx: float
    cy: float
    cell: int
    colour: int
    shape: int = -1  # filled in by the classifier


def _components(image: np.ndarray) -> list[tuple[np.ndarray, float, float]]:
    """(mask, cx, cy) of the foreground's components of image float (H, W, 3) in [0, 1], largest first."""
    fg = image.max(axis=2) > FOREGROUND
    labels, n = ndimage.label(fg, structure=np.ones((3, 3)))
    out = []
    for k in range(1, n + 1):
        mask = labels == k
        if mask.sum() >= MIN_AREA:
            ys, xs = np.nonzero(mask)
            out.append((mask, (xs.mean() + 0.5) / image.shape[1], (ys.mean() + 0.5) / image.shape[0]))
    return sorted(out, key=lambda c: -c[0].sum())


def _crop(image: np.ndarray, mask: np.ndarray, cx: float, cy: float) -> np.ndarray:
    """The CROP x CROP colourless window around an object: its foreground intensity (the max channel, inside
    the mask grown by a pixel for the anti-aliased rim) over its peak, zero outside the image."""
    size = image.shape[0]
    value = image.max(axis=2) * ndimage.binary_dilation(mask)
    value = value / max(float(value.max()), 1e-6)
    out = np.zeros((CROP, CROP), np.float32)
    x0, y0 = int(round(cx * size)) - CROP // 2, int(round(cy * size)) - CROP // 2
    xs, ys = slice(max(x0, 0), min(x0 + CROP, size)), slice(max(y0, 0), min(y0 + CROP, size))
    out[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0] = value[ys, xs]
    return out


def find_objects(image_uint8: np.ndarray, max_objects: int = 3) -> tuple[list[Found], list[np.ndarray]]:
    """(the objects of one uint8 (H, W, 3) image without their shapes, their crops), largest first."""
    image = image_uint8.astype(np.float32) / 255
    found, crops = [], []
    for mask, cx, cy in _components(image)[:max_objects]:
        core = mask & (image.max(axis=2) > CORE)
        mean = image[core if core.any() else mask].mean(axis=0)
        colour = int(np.argmin(np.abs(sc.PALETTE - mean).sum(axis=1)))
        cell = min(int(cy * 3), 2) * 3 + min(int(cx * 3), 2)
        found.append(Found(int(mask.sum()), float(cx), float(cy), cell, colour))
        crops.append(_crop(image, mask, cx, cy))
    return found, crops


class ShapeReader(nn.Module):
    """Crops (B, 1, CROP, CROP) -> logits over the scenes' four shapes: three conv blocks, pooled, linear."""

    def __init__(self, width: int = 24):
        super().__init__()
        chans = [1, width, 2 * width, 2 * width]
        self.body = nn.Sequential(*[nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
                                    for a, b in zip(chans, chans[1:])])
        self.head = nn.Linear(2 * width * (CROP // 8) ** 2, len(sc.SHAPE_NAMES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(1))


def training_crops(n: int, image_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops of n single objects (any shape, cell and size, in one of the ten shapes.py colours or a random
    hue), segmented as samples are, and their shapes."""
    rng = np.random.default_rng([seed, 35])
    crops, labels = [], []
    while len(crops) < n:
        shape, cell, size = int(rng.integers(4)), int(rng.integers(9)), int(rng.integers(2))
        thing = sc.place(rng, shape, 0, cell, size)
        image, _ = sc.render_scene([thing], rng, image_size, colours=[_random_colour(rng)])
        found, cut = find_objects(np.round(image * 255).astype(np.uint8), 1)
        if found:
            crops.append(cut[0])
            labels.append(shape)
    return torch.from_numpy(np.stack(crops)[:, None]), torch.tensor(labels)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.5:
        return draw_color(0, rng, int(rng.integers(len(COLORS))))
    c = rng.uniform(0.0, 1.0, 3)  # a random hue, bright enough to stand out
    return c / c.max() * rng.uniform(0.8, 1.0)


def train_reader(image_size: int, seed: int = 0, steps: int = TRAIN_STEPS, device="cpu", verbose=False) -> ShapeReader:
    """The shape reader trained on TRAIN_IMAGES crops (AdamW, cosine, batch 128), its accuracy on 2,000 others
    kept as `heldout_accuracy`."""
    torch.manual_seed(seed)
    x, y = training_crops(TRAIN_IMAGES, image_size, seed)
    model = ShapeReader().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g, t0 = torch.Generator().manual_seed(seed), time.time()
    for step in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=g)
        cross_entropy_step(model, opt, sched, x[idx], y[idx], device, "shape reader", step, steps, t0, verbose)
    model.eval()
    tx, ty = training_crops(2000, image_size, seed + 10_000)
    with torch.no_grad():
        model.heldout_accuracy = float((model(tx.to(device)).argmax(1).cpu() == ty).float().mean())
    return model


def load_reader(cache_dir: str | os.PathLike, image_size: int, seed: int = 0, steps: int = TRAIN_STEPS,
                device="cpu") -> ShapeReader:
    """The cached shape reader for scenes of `image_size` px (trained and cached first if needed)."""
    name = f"scene-shapes-v{VERSION}-data{sc.VERSION}-{image_size}px-seed{seed}-steps{steps}.safetensors"
    return cached_judge(Path(cache_dir) / name, ShapeReader(), lambda: train_reader(image_size, seed, steps, device),
                        ("heldout_accuracy",), device)


def read_images(images: np.ndarray, reader: ShapeReader, max_objects: int = 3) -> list[list[Found]]:
    """The objects of each uint8 (N, H, W, 3) image, shapes read by `reader`."""
    out = []
    for image in images:
        found, crops = find_objects(image, max_objects)
        if found:
            with torch.no_grad():
                x = torch.from_numpy(np.stack(crops)[:, None]).to(next(reader.parameters()).device)
                shapes = reader(x).argmax(1).tolist()
            found = [Found(f.area, f.cx, f.cy, f.cell, f.colour, s) for f, s in zip(found, shapes)]
        out.append(found)
    return out


def judge(expected: tuple[list[sc.Thing], int | None], found: list[Found]) -> dict[str, bool]:
    """shape / colour / position / joint / count of one image against the scene its prompt asks for."""
    things, relation = expected
    count = len(found) == len(things)
    if len(found) < len(things):
        return dict(shape=False, colour=False, position=False, joint=False, count=False)
    if relation is None:
        t, f = things[0], found[0]
        scores = dict(shape=f.shape == t.shape, colour=f.colour == t.colour, position=f.cell == t.cell)
    else:
        best = None
        for a, b in ((found[0], found[1]), (found[1], found[0])):
            pos = sc.relation_holds(_at(a), _at(b), relation)
            s = dict(shape=a.shape == things[0].shape and b.shape == things[1].shape,
                     colour=a.colour == things[0].colour and b.colour == things[1].colour, position=pos)
            if best is None or sum(s.values()) > sum(best.values()):
                best = s
        scores = best
    return {**scores, "joint": all(scores.values()), "count": count}


def _at(f: Found) -> sc.Thing:
    """A found object as a Thing whose cell compares by centroid (relations compare rows and columns)."""
    return sc.Thing(f.shape, f.colour, f.cell, 1, f.cx, f.cy, 0.0, 0.0)
