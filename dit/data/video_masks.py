"""Which positions of a training clip are given: VDT's unified spatial-temporal mask modelling.

VDT (Lu et al., ICLR 2024, §3.3) trains ONE model for unconditional generation, prediction,
backward prediction, interpolation, animation and in-painting by drawing, per clip, which
positions are given clean. The mix follows VDT's released training code (REFERENCE_FAMILY.md):
with probability 0.2 a spatial block mask (a rectangle generated in every frame, the rest
given); else one of six temporal tasks, uniformly:
    prediction     the first half of the frames given
    backward       the second half given
    interpolation  every 4th frame given (0, 4, ...)
    unconditional  nothing given
    animation      one random frame given
    random-frames  each frame given with probability 0.2 (VDT: masked with p = 0.8)
Mixes (TrainConfig.video_masks): "vdt" is the mix above; "vdt-uncond:S" draws a share S of the clips
with nothing given and the rest from VDT's mix ("vdt-uncond" is S = 0.5); "prediction:S" a share S
with nothing given and the rest prediction (the first half given): the two jobs only, for a model
that generates and predicts. VDT's own share of clips
with nothing given is about 16%, and on the CPU budget its class-conditional generation, which only
those clips teach, lags far behind (benchmarks/RESULTS.md, "Video"); "none" gives nothing ever
(Latte: generation only).
Masks are float32 (F, 1, H, W), 1 = given (dit/layout.py's GIVEN; VDT writes m = 1 to generate),
aligned to the network's patches so that a token is either given or not. Every draw comes from
the data stream's per-sample generator (dit/data/stream.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dit.errors import UserError

TEMPORAL_TASKS = ("prediction", "backward", "interpolation", "unconditional", "animation", "random-frames")
SPATIAL_SHARE = 0.2
MASK_MIXES = ("vdt", "vdt-uncond", "vdt-uncond:S", "prediction", "prediction:S", "none")  # module docstring
DEFAULT_UNCONDITIONAL_SHARE = 0.5  # "vdt-uncond" without ":S"


def unconditional_share(mix: str) -> float:
    """The share of clips drawn with nothing given before VDT's mix; a UserError for an unknown mix."""
    name, sep, value = mix.partition(":")
    if mix == "vdt" or mix == "none":
        return 0.0
    if name in ("vdt-uncond", "prediction"):
        try:
            share = float(value) if sep else DEFAULT_UNCONDITIONAL_SHARE
        except ValueError:
            share = -1.0
        if 0.0 <= share < 1.0:
            return share
        raise UserError(f"--video-masks {mix!r}: the share after '{name}:' must be a number in [0, 1), "
                        f"e.g. {name}:0.75")
    raise UserError(f"--video-masks must be one of {', '.join(MASK_MIXES)}, got {mix!r}")


def temporal_mask(task: str, frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """(F,) 1.0 for the frames given in `task`."""
    given = np.zeros(frames, np.float32)
    if task == "prediction":
        given[: frames // 2] = 1
    elif task == "backward":
        given[frames - frames // 2:] = 1
    elif task == "interpolation":
        given[::4] = 1
    elif task == "animation":
        given[int(rng.integers(frames))] = 1
    elif task == "random-frames":
        given[:] = rng.random(frames) < 0.2
    elif task != "unconditional":
        raise ValueError(f"unknown task {task!r}; one of {', '.join(TEMPORAL_TASKS)}")
    return given


def draw_mask(rng: np.random.Generator, frames: int, size: int, patch: int, images: int = 0,
              mix: str = "vdt") -> np.ndarray:
    """One training clip's GIVEN mask (F, 1, size, size) from `mix` (module docstring); with
    `images` joint-training images after the clip, (F + images, ...) with those never given."""
    share = unconditional_share(mix)
    if share and rng.random() < share:  # no draw at all for "vdt": its runs stay as they were
        mask = np.zeros((frames, 1, size, size), np.float32)
    elif mix.partition(":")[0] == "prediction":
        mask = np.broadcast_to(temporal_mask("prediction", frames)[:, None, None, None], (frames, 1, size, size)).copy()
    else:
        mask = _draw_mask(rng, frames, size, patch)
    return np.concatenate([mask, np.zeros((images, *mask.shape[1:]), np.float32)]) if images else mask


def _draw_mask(rng: np.random.Generator, frames: int, size: int, patch: int) -> np.ndarray:
    grid = size // patch
    if rng.random() < SPATIAL_SHARE:
        # a rectangle of 1/4 to 3/4 of each side (in tokens) is generated in every frame
        h, w = (int(rng.integers(max(1, grid // 4), max(1, 3 * grid // 4) + 1)) for _ in range(2))
        top, left = int(rng.integers(grid - h + 1)), int(rng.integers(grid - w + 1))
        tokens = np.ones((grid, grid), np.float32)
        tokens[top:top + h, left:left + w] = 0
        pixels = np.kron(tokens, np.ones((patch, patch), np.float32))
        return np.broadcast_to(pixels, (frames, 1, size, size)).copy()
    task = TEMPORAL_TASKS[int(rng.integers(len(TEMPORAL_TASKS)))]
    given = temporal_mask(task, frames, rng)
    return np.broadcast_to(given[:, None, None, None], (frames, 1, size, size)).copy()


def parse_frames(spec: str, frames: int) -> list[int]:
    """'0-3' or '0,2,4-5' -> sorted frame indices, each in [0, frames); anything else a UserError."""
    out: set[int] = set()
    try:
        for part in spec.split(","):
            a, sep, b = part.strip().partition("-")
            lo, hi = int(a), int(b) if sep else int(a)
            if lo > hi:
                raise ValueError
            out.update(range(lo, hi + 1))
    except ValueError:
        raise UserError(f"--given-frames {spec!r} is not a list of frames like 0-3 or 0,2,4-5") from None
    bad = sorted(i for i in out if not 0 <= i < frames)
    if bad:
        raise UserError(f"--given-frames {spec!r} names frame {bad[0]}, but clips have frames 0..{frames - 1}")
    return sorted(out)


def frames_mask(given: list[int], frames: int, size: int) -> np.ndarray:
    """GIVEN (F, 1, size, size) with the listed frames given entirely."""
    mask = np.zeros((frames, 1, size, size), np.float32)
    mask[given] = 1
    return mask


def parse_box(spec: str, size: int, unit: int = 1) -> tuple[int, int, int, int]:
    """'TOP,LEFT,HEIGHT,WIDTH' in pixels -> ints: a non-empty box inside a size x size frame, on a grid
    of `unit` pixels (a VAE's downsampling factor); anything else a UserError."""
    try:
        top, left, h, w = (int(v) for v in spec.split(","))
    except ValueError:
        raise UserError(f"--inpaint-box {spec!r} is not TOP,LEFT,HEIGHT,WIDTH in pixels, e.g. 4,4,8,8") from None
    if min(top, left) < 0 or min(h, w) < 1 or top + h > size or left + w > size:
        raise UserError(f"--inpaint-box {spec!r} must be a non-empty box inside the {size}x{size} frame")
    if any(v % unit for v in (top, left, h, w)):
        raise UserError(f"--inpaint-box {spec!r}: the model works on {unit}x{unit}-pixel latent cells; give "
                        f"multiples of {unit}")
    return top, left, h, w


def box_mask(box: tuple[int, int, int, int], frames: int, size: int) -> np.ndarray:
    """GIVEN (F, 1, size, size): everything given but the box (top, left, height, width), in every frame."""
    top, left, h, w = box
    mask = np.ones((frames, 1, size, size), np.float32)
    mask[:, :, top:top + h, left:left + w] = 0
    return mask


@dataclass
class Completion:
    """The given positions of a clip to complete (sample.py --video-in): `mask` float32 (F, 1, side,
    side) in the network's input space (1 = given), `keep` a boolean array that broadcasts over the
    (F, H, W, 3) pixels the output copies from the input, `what` the words for the log."""

    mask: np.ndarray
    keep: np.ndarray
    what: str


def completion(given_frames: str | None, inpaint_box: str | None, frames: int, height: int, side: int,
               downsample: int = 1) -> Completion:
    """--given-frames SPEC (whole frames given) or --inpaint-box TOP,LEFT,HEIGHT,WIDTH (the box
    generated in every frame, the rest given) for clips of `frames` frames of `height` px whose
    network input is `side` = height / downsample (the VAE's) positions a side."""
    if inpaint_box:
        top, left, bh, bw = parse_box(inpaint_box, height, downsample)
        d = downsample  # the box in latent positions
        keep = np.ones((height, height, 1), bool)
        keep[top:top + bh, left:left + bw] = False
        return Completion(box_mask((top // d, left // d, bh // d, bw // d), frames, side), keep,
                          f"the box {inpaint_box} generated")
    given = parse_frames(given_frames, frames)
    keep = np.zeros((frames, 1, 1, 1), bool)
    keep[given] = True
    return Completion(frames_mask(given, frames, side), keep, f"{', '.join(map(str, given))} given")
