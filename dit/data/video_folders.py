"""Class folders of video clips -> (clip in [-1, 1], label): the video counterpart of folders.py.

Layout: `root/<class_name>/<clip>/` holding the clip's frames as images (taken in sorted name
order, so name them 000.png, 001.png, ...), or `root/<class_name>/<clip>.mp4` (also .gif, .avi,
.webm, .mov, .mkv). Class names are sorted into labels 0..K-1, as ImageFolder does. Every frame
gets the image loader's treatment (folders.load_image's RGB conversion for frame images, and
folders.center_crop_arr, the ADM centre crop), so a clip and an image dataset at the same size
agree pixel for pixel on a still frame.

A clip is `frames` frames `stride` apart, from the first frame or (random_offset) from an offset
drawn uniformly among those that fit. Clips too short for that are skipped, with a count, not
refused: one short clip should not stop a long run, and real collections often hold a few.
Frame folders are counted at construction (cheap: a directory listing) and the short ones
dropped with one warning (`too_short` lists them). Video files are only decoded when read, so a
short or corrupt one is found then: it is recorded in `skipped` with the reason and the next
usable clip stands in (flagged `unreadable`, as folders.ImageFolderDataset does for images);
`scan()` decodes everything up front and drops those instead.

GIFs are decoded by Pillow; other video formats need PyAV (`pip install av`): without it a
folder holding them is refused at construction with a UserError that says so.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageSequence

from dit.autoencoders.pixels import from_uint8
from dit.data.folders import IMAGE_EXTENSIONS, center_crop_arr, load_image, to_rgb
from dit.data.stream import flip_or_not
from dit.errors import UserError
from dit.io.video import VIDEO_EXTENSIONS, have_pyav

LAYOUT = "<root>/<class_name>/<clip>/<frame>.png (a folder of frames per clip) or <root>/<class_name>/<clip>.mp4"


class VideoFolderDataset:
    """Clips under `root` as float32 (F, 3, S, S) in [-1, 1]; the base-dataset interface of stream.py.

    `get(index, rng)` -> (clip, label, unreadable) draws, in order, the start offset (one draw, used
    only with `random_offset`) and the flip (stream.flip_or_not: one draw, the whole clip mirrored).
    """

    def __init__(self, root: str | os.PathLike, image_size: int = 16, frames: int = 8, stride: int = 1,
                 random_offset: bool = False, flip: bool = False):  # fmt: skip
        if frames < 1 or stride < 1:
            raise UserError(f"frames ({frames}) and stride ({stride}) must be at least 1")
        self.root, self.image_size, self.frames, self.stride = Path(root), image_size, frames, stride
        self.random_offset, self.flip = random_offset, flip
        self.needed = (frames - 1) * stride + 1  # frames a clip must have
        if not self.root.is_dir():
            raise UserError(f"video folder {self.root} does not exist or is not a directory: expected {LAYOUT}")
        self.class_names = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not self.class_names:
            raise UserError(f"video folder {self.root} has no class sub-directories: expected {LAYOUT}")
        self.num_classes = len(self.class_names)
        # (path, label, frame files of a frame folder or None for a video file), in sorted order
        self.samples: list[tuple[str, int, list[str] | None]] = []
        self.too_short: list[str] = []
        for label, name in enumerate(self.class_names):
            for entry in sorted(os.scandir(self.root / name), key=lambda e: e.name):
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    files = sorted(f.name for f in os.scandir(entry.path) if not f.name.startswith(".")
                                   and f.name.lower().endswith(IMAGE_EXTENSIONS))  # fmt: skip
                    if len(files) < self.needed:
                        self.too_short.append(entry.path)
                        continue
                    self.samples.append((entry.path, label, [os.path.join(entry.path, f) for f in files]))
                elif entry.name.lower().endswith(VIDEO_EXTENSIONS):
                    self.samples.append((entry.path, label, None))
        if self.too_short:
            warnings.warn(f"skipped {len(self.too_short)} frame folders with fewer than {self.needed} frames "
                          f"({frames} frames, stride {stride}), e.g. {self.too_short[0]}", stacklevel=2)  # fmt: skip
        if not self.samples:
            hint = "; lower --frames or --frame-stride" if self.too_short else f": expected {LAYOUT}"
            raise UserError(f"video folder {self.root} has no clips of at least {self.needed} frames ({frames} "
                            f"frames, stride {stride}; {len(self.too_short)} too short){hint}")  # fmt: skip
        needs_av = [p for p, _, files in self.samples if files is None and not p.lower().endswith(".gif")]
        if needs_av and not have_pyav():
            raise UserError(f"{len(needs_av)} clips in {self.root} (e.g. {needs_av[0]}) need PyAV to decode: "
                            "pip install av, or convert them to frame folders or .gif")  # fmt: skip
        self.skipped: dict[str, str] = {}  # path -> why it was unusable (in this process)

    def __len__(self) -> int:
        return len(self.samples)

    def _frames(self, index: int, u: float) -> list | str:
        """The clip's `frames` Pillow frames (start offset from u in [0, 1)), or why it is unusable."""
        path, _, files = self.samples[index]
        try:
            if files is not None:
                n = len(files)
            else:  # a random offset needs the length; otherwise decode only what is used
                decoded = read_frames(path, None if self.random_offset else self.needed)
                n = len(decoded)
            if n < self.needed:
                return f"{n} frames, fewer than the {self.needed} needed ({self.frames} frames, stride {self.stride})"
            start = min(int(u * (n - self.needed + 1)), n - self.needed) if self.random_offset else 0
            keep = range(start, start + self.needed, self.stride)
            return [load_image(files[k]) for k in keep] if files is not None else [decoded[k] for k in keep]
        except UserError:
            raise
        # Pillow and FFmpeg report damaged data with many exception types: any counts as a bad clip
        except Exception as e:  # noqa: BLE001
            return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"

    def _usable(self, index: int, u: float) -> list | None:
        path = self.samples[index][0]
        if path in self.skipped:
            return None
        got = self._frames(index, u)
        if isinstance(got, str):
            warnings.warn(f"skipping clip {path}: {got}", stacklevel=3)
            self.skipped[path] = got
            return None
        return got

    def scan(self, drop: bool = True) -> list[str]:
        """Decode every clip; return the unusable paths (and drop them from the dataset)."""
        bad = [self.samples[i][0] for i in range(len(self.samples)) if self._usable(i, 0.0) is None]
        if drop and bad:
            bad_set = set(bad)
            self.samples = [s for s in self.samples if s[0] not in bad_set]
            if not self.samples:
                raise UserError(f"no usable clips in {self.root}: all {len(bad)} failed to decode or are too short")
        return bad

    def read(self, index: int, u: float = 0.0) -> tuple[torch.Tensor, int, bool]:
        """(clip float32 (F, 3, S, S) in [-1, 1] unflipped, label, whether clip `index` was unusable and
        replaced by the next usable one). `u` in [0, 1) picks the start offset when random_offset."""
        n = len(self.samples)
        for k in range(n):  # deterministic replacement: the next usable clip
            frames = self._usable((index + k) % n, u)
            if frames is not None:
                break
        else:
            raise UserError(f"no usable clips in {self.root}: all {n} failed to decode or are too short")
        arr = np.stack([np.asarray(center_crop_arr(f, self.image_size)) for f in frames])  # (F, S, S, 3) uint8
        x = from_uint8(torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous())  # (F, 3, S, S)
        return x, self.samples[(index + k) % n][1], k > 0

    def get(self, index: int, rng: np.random.Generator):
        u = rng.random()  # drawn even without random_offset: the draw count never depends on options
        x, label, replaced = self.read(index, u)
        return flip_or_not(x, rng, self.flip), label, replaced


def read_frames(path: str | os.PathLike, limit: int | None = None) -> list[Image.Image]:
    """The first `limit` (default all) frames of a video file as RGB Pillow images, in order.

    GIFs are decoded by Pillow (composited frame by frame, transparency over white as
    dit.data.folders.to_rgb shows it); other formats by PyAV. Decoding errors propagate: the
    caller decides whether a bad file is fatal.
    """
    path = Path(path)
    frames: list[Image.Image] = []
    if path.suffix.lower() == ".gif":
        with Image.open(path) as img:
            for frame in ImageSequence.Iterator(img):
                if limit is not None and len(frames) >= limit:
                    break
                frames.append(to_rgb(frame.copy()))
        return frames
    try:
        import av
    except ImportError:
        raise UserError(f"reading {path.name} needs PyAV: pip install av (or store the clip as a folder of "
                        "frame images, or as a .gif)") from None  # fmt: skip
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        for frame in container.decode(container.streams.video[0]):
            if limit is not None and len(frames) >= limit:
                break
            frames.append(frame.to_image())  # RGB
    return frames
