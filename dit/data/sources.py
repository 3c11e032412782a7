"""Images from any source `--data` names, as the training stream and the latent cache read them.

A source is a folder of images (dit/data/folders.py ImageFolderDataset), a Hugging Face dataset
(dit/data/hf.py HFImages) or WebDataset shards of images (dit/data/webdataset.py ShardImages). Each
gives, by index 0..len-1 (a fixed order: the same list on every process):
    image(i)        the decoded, EXIF-rotated RGB PIL image; None when it does not decode (warned once
                    and kept in `skipped`: counted, never fatal)
    label(i)        0..K-1, or the null label of an unlabelled source (dit/networks/conditioning.py)
    header_size(i)  (height, width) as image(i) shows it, from the file's header (no decoding); None
                    when the header does not read
    name(i)         the sample, for messages ("image <path>", "sample 3 of <dataset>")
and `num_classes`, `class_names`, `skipped` and `where` (what to name in messages).

`Images` turns a source into the stream's base (dit/data/stream.py: get(index, rng) -> (x, label,
unreadable)): each image centre-cropped to one size (folders.center_crop_hw), or with aspect-ratio
buckets (dit/data/buckets.py) to its bucket's size. A sample that does not decode is replaced by the
next one that does (of the same bucket, so a batch keeps one size) and flagged, so the run counts it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dit.errors import UserError


class Images:
    """The stream's base over any source (module docstring): float32 (3, H, W) images in [-1, 1], the flip
    drawn from the sample's keyed rng. With `buckets` ((height, width) sizes), `bucket_of[i]` is image i's."""

    def __init__(self, source, height: int, width: int | None, flip: bool,
                 buckets: list[tuple[int, int]] | None = None):
        self.source, self.size, self.flip = source, (height, width or height), flip
        self.num_classes, self.class_names = source.num_classes, source.class_names
        self.buckets = buckets
        self.bucket_of = None
        self._stand_in: dict[int, int] = {}  # index -> the readable sample read in its place
        if buckets:
            from dit.data.buckets import assign_buckets

            self.bucket_of = assign_buckets(source, buckets, self.size)
            self._members = [[i for i, b in enumerate(self.bucket_of) if b == k] for k in range(len(buckets))]
            self._rank = [0] * len(self.bucket_of)  # index -> its place among its bucket's members
            for members in self._members:
                for r, i in enumerate(members):
                    self._rank[i] = r
        self.read(0)  # at least one sample decodes (else one line), checked before a run writes anything

    def __len__(self) -> int:
        return len(self.source)

    def size_of(self, index: int) -> tuple[int, int]:
        """(height, width) sample `index` is read at: its bucket's, else the one size."""
        return self.buckets[self.bucket_of[index]] if self.bucket_of is not None else self.size

    def read(self, index: int) -> tuple[torch.Tensor, int, bool]:
        """(image (3, H, W) in [-1, 1] unflipped, label, whether sample `index` did not decode and the next
        readable one, of the same bucket, stands in)."""
        from dit.data.folders import first_readable, to_tensor

        ring = range(len(self.source)) if self.bucket_of is None else self._members[self.bucket_of[index]]
        start = index if self.bucket_of is None else self._rank[index]
        img, k = first_readable(start, len(ring), lambda i: self.source.image(ring[i]), self.source.where)
        used = ring[(start + k) % len(ring)]
        if k:  # its caption stands in too (caption() is asked right after, in the same process)
            self._stand_in[index] = used
        return to_tensor(img, *self.size_of(index)), self.source.label(used), k > 0

    def get(self, index: int, rng: np.random.Generator):
        from dit.data.stream import flip_or_not

        x, y, replaced = self.read(index)
        return flip_or_not(x, rng, self.flip), y, replaced

    def caption(self, index: int, rng: np.random.Generator | None = None) -> str:
        """Sample `index`'s caption (the stand-in's where its image did not decode): the source's --caption-column,
        a shard's .txt or json "caption"."""
        text = self.source.caption(self._stand_in.get(index, index))
        if text is None:
            raise UserError(f"{self.source.name(index)} has no caption; every sample of a text-to-image run needs one")
        return str(text)

    def captions(self) -> list[str]:
        """Every caption, in index order (the word tokenizer's vocabulary is built from them)."""
        every = getattr(self.source, "captions", None)
        return [str(c) for c in every()] if every else [self.caption(i) for i in range(len(self))]

    @property
    def skipped(self):
        return self.source.skipped


def open_source(data: str, cache_dir: Path | None = None, split: str = "train", image_column: str = "image",
                label_column: str = "", caption_column: str = ""):
    """The source --data names: WebDataset shards, a Hugging Face dataset, or a folder of images (a latent
    cache and the built-in shapes are the callers' to recognise first)."""
    from dit.data.hf import HFImages, hf_kind, load_hf
    from dit.data.webdataset import ShardImages, shard_paths

    shards = shard_paths(data)
    if shards:
        return ShardImages(shards, cache_dir)
    kind = hf_kind(data)
    if kind is not None:
        ds = load_hf(data, kind, split, None if cache_dir is None else str(cache_dir / "hf"))
        return HFImages(ds, image_column, label_column, caption_column, data)
    from dit.data.folders import ImageFolderDataset

    if caption_column:
        raise UserError(f"--caption-column {caption_column}: --data {data} is a folder of images without captions; add a "
                        "metadata.jsonl (file_name, text per line: a Hugging Face imagefolder) or use shards with .txt")
    return ImageFolderDataset(data)


def check_data_path(data: str) -> None:
    """--data names something that exists (a hub id excepted): one line before anything is loaded."""
    from dit.data.hf import hf_kind
    from dit.data.webdataset import shard_paths

    if not Path(data).exists() and shard_paths(data) is None and hf_kind(data) is None:
        raise UserError(f"--data {data} does not exist: give a folder of images, a Hugging Face dataset "
                        "(metadata.jsonl folder, save_to_disk folder, parquet, or a hub id) or WebDataset shards")
