"""The built-in captioned data (`--data shapes-captions`, text_config.SHAPES_CAPTIONS): scenes of one or two shapes, each caption drawn
from the scene's ground truth, and combinations held out of training to measure composition.

A scene is one object, or two objects and a relation between them. Each object has:
    shape      circle, square, triangle, plus (dit/data/shapes.py's first four, told apart at ~6 px)
    colour     red, green, blue, yellow, magenta, cyan (shapes.py's colours, so any shape takes any colour)
    position   a cell of a 3 x 3 grid (centre jittered within it)
    size       small or large
Two-object scenes place the objects in different cells with a relation that holds ("left of", "right
of", "above", "below": compared by cell column or row). Attributes are drawn independently, except that
a training scene never contains a HELD_OUT pair: some colour-shape pairs and some shape-position pairs
are never rendered for training, so a model that draws "a green circle" has composed the words rather
than memorised the picture (the benchmark's held-out prompts, benchmarks/text_to_image/).

Captions are drawn per use (the stream's rng at each position) from several templates and synonyms,
and the size word is sometimes left out, so the model must read the words rather than memorise strings.
The ground truth (each object's mask, colour and centre) comes with every image for the judge.

Scene i of a dataset with seed s is drawn from `np.random.default_rng([s, i])`, like shapes.py, so it
never depends on the batch, the worker count or the order of access. Coordinates are image units
(fractions of the side, y down).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dit.autoencoders.pixels import from_uint8
from dit.data.shapes import COLORS, MAX_ROTATION, composite, draw_background, draw_color, draw_shape, read_cache
from dit.io.atomic import atomic_path
from dit.networks.conditioning import NO_CLASSES, UNLABELLED
from dit.networks.text_tokenizer import build_vocabulary

VERSION = "1"  # bump when scenes, rendering or captions change: caches and judges are keyed by it
IMAGE_SIZE = 32  # the size scenes are made for: a 3 x 3 grid of ~11 px cells

SHAPE_NAMES = ("circle", "square", "triangle", "plus")  # shapes.py's labels 0-3
COLOUR_NAMES = ("red", "green", "blue", "yellow", "magenta", "cyan")  # shapes.py's COLORS rows 0-5
PALETTE = COLORS[: len(COLOUR_NAMES)]  # their RGB, in [0, 1]
CELL_NAMES = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
SIZE_NAMES = ("small", "large")
RELATIONS = ("left of", "right of", "above", "below")

# Never rendered for training (shape, colour) and (shape, cell): one of each per shape, so every shape,
# colour and cell still appears, only not in these pairs.
HELD_OUT_COLOURS = ((0, 1), (1, 2), (2, 0), (3, 3))  # green circle, blue square, red triangle, yellow plus
HELD_OUT_CELLS = ((0, 8), (1, 0), (2, 4), (3, 6))  # circle bottom right, square top left, triangle center, plus bottom left

RADIUS = ((0.085, 0.10), (0.12, 0.14))  # small, large, in image units (a cell is 1/3 wide)
JITTER = 0.02  # the centre's offset from its cell's centre, at most
PAIR_SHARE = 0.3  # share of two-object scenes
MAX_OBJECTS = 2

# Synonyms and templates: what a caption may say for each attribute.
SHAPE_WORDS = (("circle", "disc", "round dot"), ("square", "box"), ("triangle",), ("plus", "cross", "plus sign"))
CELL_WORDS = (
    ("at the top left", "in the upper left", "in the top left corner"), ("at the top", "at the top middle"),
    ("at the top right", "in the upper right", "in the top right corner"), ("on the left", "at the middle left"),
    ("in the center", "in the middle", "at the centre"), ("on the right", "at the middle right"),
    ("at the bottom left", "in the lower left", "in the bottom left corner"), ("at the bottom", "at the bottom middle"),
    ("at the bottom right", "in the lower right", "in the bottom right corner"),
)
SIZE_WORDS = (("small", "little", "tiny"), ("large", "big"))
RELATION_WORDS = (("left of", "to the left of"), ("right of", "to the right of"), ("above", "over"),
                  ("below", "under", "beneath"))
ONE = ("a {obj} {pos}", "there is a {obj} {pos}", "{pos}, a {obj}", "a {sz}{shape} in {colour} {pos}")
TWO = ("a {a} {rel} a {b}", "there is a {a} {rel} a {b}")
SIZE_SAID = 0.7  # the share of captions that name an object's size


@dataclass(frozen=True)
class Thing:
    """One object of a scene: its attributes (indices into the *_NAMES tuples) and where it was drawn."""

    shape: int
    colour: int
    cell: int
    size: int
    cx: float
    cy: float
    radius: float
    angle: float

    def row_col(self) -> tuple[int, int]:
        return divmod(self.cell, 3)


def held_out(shape: int, colour: int, cell: int) -> bool:
    """Whether an object pairs its shape with a held-out colour or cell (never in a training scene)."""
    return (shape, colour) in HELD_OUT_COLOURS or (shape, cell) in HELD_OUT_CELLS


def relation_holds(a: Thing, b: Thing, relation: int) -> bool:
    """Whether "a RELATION b" is true of the two objects' cells (column for left/right, row for above/below)."""
    (ra, ca), (rb, cb) = a.row_col(), b.row_col()
    return (ca < cb, ca > cb, ra < rb, ra > rb)[relation]


def place(rng: np.random.Generator, shape: int, colour: int, cell: int, size: int) -> Thing:
    """Where an object of these attributes is drawn: radius, centre in its cell, rotation. Draws, in order:
    radius, centre (x, y), rotation."""
    radius = rng.uniform(*RADIUS[size])
    row, col = divmod(cell, 3)
    cx, cy = (np.array([col, row]) + 0.5) / 3 + rng.uniform(-JITTER, JITTER, size=2)
    angle = rng.uniform(-MAX_ROTATION[shape], MAX_ROTATION[shape])
    return Thing(shape, colour, cell, size, float(cx), float(cy), float(radius), float(angle))


def draw_scene(rng: np.random.Generator, allow_held_out: bool = False) -> tuple[list[Thing], int | None]:
    """(objects, relation index or None) of one training scene: attributes drawn uniformly, held-out pairs
    redrawn (unless allowed). Draws, in order: pair or not, the relation, each object's attributes
    (redrawn until allowed and, for a pair, until the relation holds), then each object's placement."""
    pair = rng.random() < PAIR_SHARE
    relation = int(rng.integers(len(RELATIONS))) if pair else None
    while True:
        attrs = [tuple(int(v) for v in (rng.integers(len(SHAPE_NAMES)), rng.integers(len(COLOUR_NAMES)),
                                        rng.integers(9), rng.integers(2))) for _ in range(2 if pair else 1)]
        if not allow_held_out and any(held_out(*a[:3]) for a in attrs):
            continue
        if pair:
            cells = [divmod(a[2], 3) for a in attrs]
            (ra, ca), (rb, cb) = cells
            if not (ca < cb, ca > cb, ra < rb, ra > rb)[relation]:
                continue
        break
    return [place(rng, *a) for a in attrs], relation


def render_scene(things: list[Thing], rng: np.random.Generator, size: int = IMAGE_SIZE,
                 colours: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 (H, W, 3) in [0, 1], masks float32 (n, H, W) coverage of each object). Draws, in
    order: the background, then each object's colour jitter. `colours`: each object's RGB instead of its
    colour's (the judge's shape reader trains on any colour), nothing drawn for it."""
    image = draw_background(rng, size)
    masks = []
    for k, thing in enumerate(things):
        alpha = draw_shape(thing.shape, size, thing.cx, thing.cy, thing.radius, thing.angle)
        colour = colours[k] if colours is not None else draw_color(thing.shape, rng, thing.colour)
        image = composite(image, alpha, colour)
        masks.append(alpha[..., 0])
    return image.astype(np.float32), np.stack(masks)


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def describe_object(thing: Thing, rng: np.random.Generator, with_position: bool) -> dict[str, str]:
    """The words of one object: size (maybe empty), colour, shape, position."""
    sz = _pick(rng, SIZE_WORDS[thing.size]) + " " if rng.random() < SIZE_SAID else ""
    return dict(sz=sz, colour=COLOUR_NAMES[thing.colour], shape=_pick(rng, SHAPE_WORDS[thing.shape]),
                pos=_pick(rng, CELL_WORDS[thing.cell]) if with_position else "")


def caption(things: list[Thing], relation: int | None, rng: np.random.Generator) -> str:
    """One caption of a scene, drawn from the templates and synonyms."""
    if relation is None:
        w = describe_object(things[0], rng, with_position=True)
        template = _pick(rng, ONE)
        return template.format(obj=f"{w['sz']}{w['colour']} {w['shape']}", **w)
    a, b = (describe_object(t, rng, with_position=False) for t in things)
    return _pick(rng, TWO).format(a=f"{a['sz']}{a['colour']} {a['shape']}", b=f"{b['sz']}{b['colour']} {b['shape']}",
                                  rel=_pick(rng, RELATION_WORDS[relation]))


def canonical_caption(things: list[Thing], relation: int | None, size_said: bool = True) -> str:
    """The first template with the first synonyms: the benchmark's prompts."""
    def obj(t: Thing) -> str:
        return (f"{SIZE_NAMES[t.size]} " if size_said else "") + f"{COLOUR_NAMES[t.colour]} {SHAPE_NAMES[t.shape]}"
    if relation is None:
        return f"a {obj(things[0])} {CELL_WORDS[things[0].cell][0]}"
    return f"a {obj(things[0])} {RELATIONS[relation]} a {obj(things[1])}"


def parse_canonical(prompt: str) -> tuple[list[Thing], int | None]:
    """The scene a canonical caption asks for (the inverse of `canonical_caption`, size said or not): its
    objects (placed at their cells' centres) and relation. A prompt of another form is a ValueError."""
    def obj(words: str) -> Thing:
        parts = words.split()
        size = SIZE_NAMES.index(parts.pop(0)) if parts and parts[0] in SIZE_NAMES else 1
        if len(parts) != 2 or parts[0] not in COLOUR_NAMES or parts[1] not in SHAPE_NAMES:
            raise ValueError(f"not a canonical object: {words!r}")
        return Thing(SHAPE_NAMES.index(parts[1]), COLOUR_NAMES.index(parts[0]), 4, size, 0.5, 0.5, 0.1, 0.0)

    text = prompt.strip()
    if not text.startswith("a "):
        raise ValueError(f"not a canonical prompt: {prompt!r}")
    for r, rel in enumerate(RELATIONS):
        if f" {rel} a " in text:
            a, b = text[2:].split(f" {rel} a ")
            return [obj(a), obj(b)], r
    for cell, phrases in enumerate(CELL_WORDS):
        if text.endswith(" " + phrases[0]):
            thing = obj(text[2: -len(phrases[0]) - 1])
            row, col = divmod(cell, 3)
            return [Thing(thing.shape, thing.colour, cell, thing.size, (col + 0.5) / 3, (row + 0.5) / 3, 0.1, 0.0)], None
    raise ValueError(f"not a canonical prompt: {prompt!r}")


def preview_prompts() -> list[str]:
    """Eight prompts a training preview draws: seen single objects, held-out pairs, two-object scenes."""
    one = [(0, 0, 0, 1), (1, 3, 4, 1), (3, 5, 2, 0), (2, 4, 6, 1),  # seen: shape, colour, cell, size
           (0, 1, 4, 1), (1, 2, 4, 1)]  # held out: a green circle, a blue square
    prompts = [canonical_caption([Thing(*a, 0, 0, 0, 0)], None) for a in one]
    two = [((1, 0, 3, 1), (0, 2, 5, 1), 0), ((2, 3, 1, 1), (3, 5, 7, 1), 2)]  # left of, above
    prompts += [canonical_caption([Thing(*a, 0, 0, 0, 0), Thing(*b, 0, 0, 0, 0)], r) for a, b, r in two]
    return prompts


def vocabulary() -> list[str]:
    """Every word a caption of this data may hold, sorted: the word tokenizer's vocabulary for it."""
    phrases = [*ONE, *TWO, *COLOUR_NAMES, *(w for ws in (*SHAPE_WORDS, *CELL_WORDS, *SIZE_WORDS, *RELATION_WORDS)
                                          for w in ws)]
    return build_vocabulary(re.sub(r"\{\w+\}", " ", p) for p in phrases)


# --- the dataset -----------------------------------------------------------------------------------

SCENE_FIELDS = ("shape", "colour", "cell", "size", "cx", "cy", "radius", "angle")


class ShapesCaptions:
    """`num_images` captioned scenes rendered once (kept in memory as uint8), with their ground truth.

    The training stream's base (dit/data/stream.py): `get(index, rng)` -> (image (3, H, W) in [-1, 1],
    the null label, False); `caption(index, rng)` draws a caption of scene `index` with the stream's rng.
    No flips: they would turn "left of" into "right of".
    """

    num_classes = NO_CLASSES  # conditioned on captions, not labels
    class_names: list[str] = []

    def __init__(self, images_uint8: torch.Tensor, scenes: np.ndarray, relations: np.ndarray):
        self.images, self.scenes, self.relations = images_uint8, scenes, relations

    def __len__(self) -> int:
        return len(self.images)

    def get(self, index: int, rng: np.random.Generator):
        return from_uint8(self.images[index]), UNLABELLED, False

    def things(self, index: int) -> list[Thing]:
        rows = self.scenes[index]
        return [Thing(*(int(v) for v in r[:4]), *(float(v) for v in r[4:])) for r in rows if r[0] >= 0]

    def relation(self, index: int) -> int | None:
        r = int(self.relations[index])
        return None if r < 0 else r

    def caption(self, index: int, rng: np.random.Generator) -> str:
        return caption(self.things(index), self.relation(index), rng)


def render_dataset(num_images: int, image_size: int = IMAGE_SIZE, seed: int = 0, allow_held_out: bool = False
                   ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(uint8 images (N, 3, H, W), scenes float64 (N, MAX_OBJECTS, 8) rows of SCENE_FIELDS, -1 where no
    object, relations (N,) int, -1 for one object): scene i from rng [seed, i]."""
    images = np.empty((num_images, 3, image_size, image_size), np.uint8)
    scenes = np.full((num_images, MAX_OBJECTS, len(SCENE_FIELDS)), -1.0)
    relations = np.full(num_images, -1, np.int64)
    for i in range(num_images):
        rng = np.random.default_rng([seed, i])
        things, relation = draw_scene(rng, allow_held_out)
        image, _ = render_scene(things, rng, image_size)
        images[i] = np.round(image * 255).astype(np.uint8).transpose(2, 0, 1)
        for k, t in enumerate(things):
            scenes[i, k] = [getattr(t, f) for f in SCENE_FIELDS]
        relations[i] = -1 if relation is None else relation
    return torch.from_numpy(images), scenes, relations


def cached_dataset(num_images: int, image_size: int, seed: int, cache_dir: str | os.PathLike | None) -> ShapesCaptions:
    """The training scenes of `seed`, rendered once and kept in `cache_dir` (shapes.py's cache convention)."""
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"shapes-captions-v{VERSION}-{num_images}x{image_size}px-seed{seed}.npz"
        data = read_cache(path, ("images", "scenes", "relations"))
        if data is not None:
            return ShapesCaptions(torch.from_numpy(data["images"]), data["scenes"], data["relations"])
    images, scenes, relations = render_dataset(num_images, image_size, seed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            np.savez(tmp, images=images.numpy(), scenes=scenes, relations=relations)
    return ShapesCaptions(images, scenes, relations)
