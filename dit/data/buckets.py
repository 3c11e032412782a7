"""Aspect-ratio buckets (SDXL §2.3, PixArt-α): images of any shape trained at a few sizes of about the
same pixel count, each image resized and centre-cropped to the bucket nearest its aspect ratio, each
global batch drawn from one bucket.

`--buckets auto` makes BUCKET_RATIOS' sizes around --image-size's pixel count; `--buckets 16x24,24x16`
names them. Sizes are multiples of `step` (the autoencoder's factor x the patch: every bucket tiles
into whole tokens).

The stream stays a function of the step (dit/data/stream.py): epoch e permutes each bucket's images
with (seed, e, bucket) and cuts them into global batches (the few left over wait for another epoch's
permutation), then orders all those batches with (seed, e). Step s is batch s of that order; its B
positions keep their keys, so everything random about a sample is still drawn from (seed, position),
resume needs only s, and 1, 2 or 8 processes slice the same global batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dit.data.stream import StreamBatches
from dit.errors import UserError

# Aspect ratios (width / height) of --buckets auto: square, 4:3, 3:2 and 2:1 both ways.
BUCKET_RATIOS = (1 / 2, 2 / 3, 3 / 4, 1.0, 4 / 3, 3 / 2, 2.0)


def parse_buckets(spec: str, image_hw: tuple[int, int], step: int) -> list[tuple[int, int]]:
    """The (height, width) buckets of --buckets `spec` ("auto" or "HxW,HxW,..."), sorted by aspect ratio."""
    if spec == "auto":
        pixels = image_hw[0] * image_hw[1]
        sizes = set()
        for ratio in BUCKET_RATIOS:  # h * w ~ pixels with w / h = ratio, each rounded to the step
            h = max(step, round(math.sqrt(pixels / ratio) / step) * step)
            w = max(step, round(h * ratio / step) * step)
            sizes.add((h, w))
    else:
        try:
            sizes = {tuple(int(v) for v in part.lower().split("x")) for part in spec.split(",") if part.strip()}
        except ValueError:
            sizes = set()
        if not sizes or any(len(s) != 2 or min(s) < 1 for s in sizes):
            raise UserError(f"--buckets takes auto or sizes HxW separated by commas (e.g. 16x24,24x16), got {spec!r}")
    bad = sorted(s for s in sizes if s[0] % step or s[1] % step)
    if bad:
        raise UserError(f"bucket {bad[0][0]}x{bad[0][1]} is not a multiple of {step} (the autoencoder's factor x the "
                        "patch) on both sides; choose sizes that are")
    return sorted(sizes, key=lambda s: (s[1] / s[0], s))


def header_size(path) -> tuple[int, int] | None:
    """(height, width) as load_image will show it (EXIF rotations 5-8 swap the sides), from the file's
    header only; None when the header does not read (the file is then skipped as unreadable)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            w, h = img.size
            rotated = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except Exception:  # noqa: BLE001 - any decoding problem: an unreadable file
        return None
    return (w, h) if rotated else (h, w)


def nearest_bucket(height: int, width: int, buckets: list[tuple[int, int]]) -> int:
    """The bucket whose aspect ratio is nearest the image's (in log ratio: 1:2 and 2:1 are as far from 1:1)."""
    r = math.log(width / height)
    return min(range(len(buckets)), key=lambda k: (abs(math.log(buckets[k][1] / buckets[k][0]) - r), k))


def assign_buckets(source, buckets: list[tuple[int, int]], size: tuple[int, int]) -> list[int]:
    """Each sample's bucket (dit/data/sources.py's source), from its header: the nearest aspect ratio. A
    sample whose header does not read goes to the bucket nearest `size`; it will not decode either and
    is then replaced and counted as any unreadable sample is. An image smaller than its bucket is
    refused in one line (buckets crop, never enlarge)."""
    fallback = nearest_bucket(*size, buckets)
    bucket_of = []
    for i in range(len(source)):
        hw = source.header_size(i)
        k = fallback if hw is None else nearest_bucket(*hw, buckets)
        if hw is not None and (hw[0] < buckets[k][0] or hw[1] < buckets[k][1]):
            raise UserError(f"{source.name(i)} is {hw[0]}x{hw[1]}, smaller than its bucket {buckets[k][0]}x"
                            f"{buckets[k][1]} (buckets only crop, never enlarge): remove it, or choose smaller buckets "
                            "(--image-size, --buckets)")
        bucket_of.append(k)
    return bucket_of


def batches_per_epoch(bucket_of: list[int], global_batch: int) -> int:
    """Whole global batches an epoch gives (each bucket's count // B), refused in one line when none."""
    counts = np.bincount(np.asarray(bucket_of, dtype=np.int64))
    n = int((counts // global_batch).sum())
    if n == 0:
        raise UserError(f"no bucket holds a global batch of {global_batch} images (bucket sizes "
                        f"{', '.join(map(str, counts.tolist()))}): lower --global-batch-size, or use fewer buckets")
    return n


class BucketedBatches(StreamBatches):
    """StreamBatches whose every global batch holds one bucket's images (module docstring)."""

    def __init__(self, bucket_of: list[int], global_batch: int, num_processes: int, rank: int, accum: int,
                 seed: int, start_step: int = 0):
        super().__init__(len(bucket_of), global_batch, num_processes, rank, accum, seed, start_step)
        self.members = [[] for _ in range(max(bucket_of) + 1)]
        for index, k in enumerate(bucket_of):
            self.members[k].append(index)
        self.batches_per_epoch = batches_per_epoch(bucket_of, global_batch)
        self._epoch, self._batches = -1, None

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        if epoch != self._epoch:
            batches = []
            for k, members in enumerate(self.members):
                g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 1_009 + k)
                perm = [members[i] for i in torch.randperm(len(members), generator=g).tolist()]
                batches += [perm[a:a + self.B] for a in range(0, len(perm) - self.B + 1, self.B)]
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
            self._epoch = epoch
        return self._batches

    def _index(self, position: int) -> int:
        step, j = divmod(position, self.B)
        epoch, c = divmod(step, self.batches_per_epoch)
        return self._epoch_batches(epoch)[c][j]
