"""Video files: clip arrays in .npz, animated GIF and MP4 grids to look at, and decoding for loaders.

Layout (as images in dit/io/images.py): clips are uint8 (N, F, H, W, 3) outside the package, in
files and in these functions' arguments; inside it they are float (F, C, H, W) in [-1, 1].
GIFs need only Pillow. MP4 (writing, and reading anything but GIFs) goes through PyAV (`pip
install av`; its wheels bundle FFmpeg with libx264 and mpeg4); without it those calls raise a
UserError and everything else works.

Every file is written atomically (dit/io/atomic.py): a killed run never leaves half a file.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from dit.errors import UserError
from dit.io.atomic import atomic_path
from dit.io.images import make_grid, save_png

NPZ_LAYOUT = "an .npz written by write_clip_npz: arr_0 uint8 clips (N, F, H, W, 3), optional arr_1 labels (N,)"
VIDEO_EXTENSIONS = (".mp4", ".gif", ".avi", ".webm", ".mov", ".mkv")  # .gif by Pillow, the rest by PyAV
MP4_CODECS = ("libx264", "mpeg4")  # in order of preference: H.264 plays everywhere; MPEG-4 part 2 is the fallback


def have_pyav() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------- clip arrays (.npz)


def _clip_problem(clips: np.ndarray, labels: np.ndarray | None) -> str | None:
    """What is wrong with (clips, labels) for the (N, F, H, W, 3) uint8 layout, or None."""
    if clips.dtype != np.uint8:
        return f"clips have dtype {clips.dtype}, need uint8 (0..255)"
    if clips.ndim != 5 or clips.shape[-1] != 3:
        return f"clips have shape {clips.shape}, need (N, F, H, W, 3) RGB"
    if labels is not None:
        if labels.ndim != 1 or len(labels) != len(clips):
            return f"labels have shape {labels.shape} for {len(clips)} clips, need ({len(clips)},)"
        if not np.issubdtype(labels.dtype, np.integer):
            return f"labels have dtype {labels.dtype}, need integers"
    return None


def write_clip_npz(path: str | os.PathLike, clips: np.ndarray, labels: np.ndarray | None = None) -> None:
    """Save uint8 clips (N, F, H, W, 3) as arr_0 and optional int labels (N,) as arr_1, atomically."""
    clips = np.asarray(clips)
    labels = None if labels is None else np.asarray(labels)
    problem = _clip_problem(clips, labels)
    if problem:
        raise ValueError(problem)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: np.savez appends no ".npz"
        np.savez(f, clips) if labels is None else np.savez(f, clips, labels)


def read_clip_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """(clips uint8 (N, F, H, W, 3), labels (N,) or None) from `write_clip_npz`'s layout; any other
    file raises a one-line UserError that says what to pass instead."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"clip file {path} does not exist: pass {NPZ_LAYOUT}")
    try:
        with np.load(path, allow_pickle=False) as data:  # a .npy gives an ndarray: no context manager
            if "arr_0" not in data.files:
                raise UserError(f"{path} has arrays {data.files} but no arr_0: pass {NPZ_LAYOUT}")
            clips = data["arr_0"]
            labels = data["arr_1"] if "arr_1" in data.files else None
    except UserError:
        raise
    # numpy reports a non-npz file, a damaged zip or a pickled array with many exception types
    except Exception as e:  # noqa: BLE001
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise UserError(f"{path} is not a readable .npz file ({reason}): pass {NPZ_LAYOUT}") from None
    problem = _clip_problem(clips, labels)
    if problem:
        raise UserError(f"{path}: {problem}: pass {NPZ_LAYOUT}")
    return clips, labels


# ---------------------------------------------------------------- grids, GIF, MP4


def clip_grid(clips: np.ndarray, ncols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile uint8 clips (N, F, H, W, 3) into one clip of grids (F, H', W', 3), cell i at row i // ncols
    (default near-square), `pad` black pixels between cells (dit.io.images.make_grid per frame)."""
    clips = np.asarray(clips)
    problem = _clip_problem(clips, None)
    if problem:
        raise ValueError(problem)
    return np.stack([make_grid(clips[:, t], ncols, pad) for t in range(clips.shape[1])])


def _default_scale(clips: np.ndarray) -> int:
    return max(1, math.ceil(64 / clips.shape[2]))  # nearest upscale to >= 64 px cells: 16 px clips x4


def write_gif(path: str | os.PathLike, clips: np.ndarray, ncols: int | None = None, scale: int | None = None,
              fps: float = 8, pad: int = 2) -> None:  # fmt: skip
    """An animated GIF (looping forever) of a grid of uint8 clips (N, F, H, W, 3), `scale`x nearest.

    One 256-colour palette for the whole animation (median cut over every frame, no dithering),
    so colours do not flicker between frames and flat colours survive exactly. Pillow merges
    identical consecutive frames into one longer frame: a static clip reads back with fewer frames.
    """
    grid = clip_grid(clips, ncols, pad)  # (F, H', W', 3)
    f, h, w, _ = grid.shape
    scale = scale or _default_scale(clips)
    # quantise before upscaling: the same palette indices, scale^2 times less work
    paletted = Image.fromarray(grid.reshape(f * h, w, 3)).quantize(
        256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)  # fmt: skip
    index = np.asarray(paletted).reshape(f, h, w).repeat(scale, axis=1).repeat(scale, axis=2)
    frames = []
    for k in range(f):
        frame = Image.fromarray(index[k], "P")
        frame.putpalette(paletted.getpalette())
        frames.append(frame)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], loop=0,
                       duration=round(1000 / fps), optimize=False)  # fmt: skip


def _pick_codec(av, codec: str | None) -> str:
    for name in (codec,) if codec else MP4_CODECS:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001  (UnknownCodecError; its module moved between PyAV versions)
            continue
    raise UserError(f"this PyAV/FFmpeg build has no {' or '.join((codec,) if codec else MP4_CODECS)} encoder: "
                    "MP4 needs one (install PyAV's wheel: pip install av); write_gif works without it")


def write_mp4(path: str | os.PathLike, clips: np.ndarray, ncols: int | None = None, scale: int | None = None,
              fps: float = 8, pad: int = 2, codec: str | None = None) -> None:  # fmt: skip
    """The same grid as write_gif, as an MP4 (H.264 at CRF 12, else MPEG-4 at a high bit rate) via PyAV.

    yuv420p (what players accept) stores colour at half resolution, so upscaling (`scale`, default
    to >= 64 px cells) keeps small shapes' colours; odd sizes are padded by one black row/column.
    """
    try:
        import av
    except ImportError:
        raise UserError("writing MP4 needs PyAV with libx264 or mpeg4: pip install av (write_gif works "
                        "without it)") from None  # fmt: skip
    codec = _pick_codec(av, codec)
    scale = scale or _default_scale(clips)
    grid = clip_grid(clips, ncols, pad).repeat(scale, axis=1).repeat(scale, axis=2)
    _, h, w, _ = grid.shape
    grid = np.pad(grid, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))  # yuv420p needs even sizes
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4") as out:
            # CRF 12: near-lossless H.264, so thin 16 px strokes survive; MPEG-4 has no CRF: a high rate
            options = {"crf": "12"} if codec == "libx264" else {}
            stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001), options=options)
            stream.width, stream.height, stream.pix_fmt = grid.shape[2], grid.shape[1], "yuv420p"
            if codec != "libx264":
                stream.bit_rate = 8_000_000
            for frame in grid:
                out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
            out.mux(stream.encode())  # flush the encoder's delayed frames


def check_grid_path(out: str, clips: bool) -> None:
    """Refuse, before any sampling, a grid file the samples cannot be written as: a GIF or MP4 of
    images, or an MP4 without PyAV."""
    suffix = Path(out).suffix.lower()
    if suffix in (".gif", ".mp4") and not clips:
        raise UserError(f"--out {out}: GIF and MP4 grids are for clips; this checkpoint makes images (use .png)")
    if suffix == ".mp4" and not have_pyav():
        raise UserError(f"--out {out}: writing MP4 needs PyAV (pip install av); a .gif works without it")


def write_grid(samples: np.ndarray, out: str, nrow: int | None = None) -> None:
    """Samples as a grid file: images (N, H, W, C) as a PNG; clips (N, F, H, W, C) as a PNG (a row of
    frames per clip), a GIF or an MP4 (`nrow` clips per row) by the suffix of `out`."""
    check_grid_path(out, samples.ndim == 5)
    suffix = Path(out).suffix.lower()
    if samples.ndim == 5 and suffix in (".gif", ".mp4"):
        (write_gif if suffix == ".gif" else write_mp4)(out, samples, ncols=nrow)
    elif samples.ndim == 5:
        save_png(make_grid(samples.reshape(-1, *samples.shape[2:]), nrow=samples.shape[1]), out)
    else:
        save_png(make_grid(samples, nrow=nrow), out)
