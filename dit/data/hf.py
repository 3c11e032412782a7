"""Hugging Face datasets as training data (`--data`), read as diffusers' training scripts read them.

`--data` is one of (`hf_kind` tells which):
    imagefolder  a local folder with metadata.jsonl (or .csv): `file_name` beside a `label` or `text` column
    disk         a dataset written by `Dataset.save_to_disk` (dataset_info.json / state.json inside)
    parquet      a .parquet file, or a folder holding only .parquet files
    hub          a hub id (`owner/name`) that is not a local path: downloaded (and cached) by `datasets`
Columns: `--image-column` (default image), `--label-column` (default label, where present: a ClassLabel's
names, integers 0..K-1, or strings, sorted into classes), `--caption-column` (default text). Without a
label column the data is unlabelled: an unconditional model (dit/networks/conditioning.py).

Images are decoded, EXIF-rotated and converted as image folders' are (dit/data/folders.py); a sample
that does not decode is warned about and counted, and dit/data/sources.py's `Images` puts the next one
in its place.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

from dit.errors import UserError
from dit.networks.conditioning import UNLABELLED

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
METADATA = ("metadata.jsonl", "metadata.csv")


def hf_kind(data: str) -> str | None:
    """What kind of Hugging Face dataset `data` names (module docstring), or None for anything else
    (an image folder, a latent cache, the built-in shapes, a missing path)."""
    path = Path(data)
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "state.json").is_file():
            return "disk"
        if any((path / m).is_file() for m in METADATA):
            return "imagefolder"
        files = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
        if files and all(p.suffix == ".parquet" for p in files):
            return "parquet"
        return None
    if path.suffix == ".parquet" and path.is_file():
        return "parquet"
    if not path.exists() and "/" in data and HUB_ID.match(data) and not data.startswith((".", "/")):
        return "hub"
    return None


def load_hf(data: str, kind: str, split: str = "train", cache_dir: str | None = None):
    """The `datasets.Dataset` of --data (one split); a missing or unreadable one is one line."""
    try:
        import datasets
    except ImportError:  # a dependency of this package (pyproject.toml): only a broken install lacks it
        raise UserError("--data names a Hugging Face dataset, which needs the `datasets` package: pip install datasets") from None
    datasets.disable_progress_bars()
    try:
        if kind == "disk":
            ds = datasets.load_from_disk(data)
            if isinstance(ds, datasets.DatasetDict):
                ds = _split(ds, split, data)
            return ds
        if kind == "imagefolder":
            return datasets.load_dataset("imagefolder", data_dir=data, split=split, cache_dir=cache_dir)
        if kind == "parquet":
            files = data if Path(data).is_file() else sorted(str(p) for p in Path(data).glob("*.parquet"))
            return datasets.load_dataset("parquet", data_files=files, split=split, cache_dir=cache_dir)
        return datasets.load_dataset(data, split=split, cache_dir=cache_dir)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - datasets raises many types (no network, no such split, bad files)
        hint = " (not a local path, so read as a hub id)" if kind == "hub" else ""
        raise UserError(f"could not read the Hugging Face dataset --data {data}{hint} ({kind}, split {split!r}): "
                        f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}") from None


def _split(ds, split: str, data: str):
    if split not in ds:
        raise UserError(f"--data {data} has splits {sorted(ds)}, not {split!r}: pass --dataset-split")
    return ds[split]


class HFImages:
    """A Hugging Face dataset as a source of images (dit/data/sources.py: image, label, header_size by
    index); `caption(index)` reads the caption column."""

    def __init__(self, ds, image_column: str = "image", label_column: str = "", caption_column: str = "",
                 source: str = ""):
        self.ds, self.where = ds, f"--data {source}"
        columns = list(ds.column_names)
        label_column = label_column or ("label" if "label" in columns else "")
        for flag, name in (("--image-column", image_column), ("--label-column", label_column),
                           ("--caption-column", caption_column)):
            if name and name not in columns:
                raise UserError(f"{flag} {name}: --data {source} has no such column; its columns are {columns}")
        self.image_column, self.label_column, self.caption_column = image_column, label_column, caption_column
        self.labels, self.class_names = self._labels()
        self.num_classes = len(self.class_names)
        self.skipped: set[int] = set()
        self._undecoded = None  # the image column as bytes or paths (header_size), made when first needed
        self._captions = None  # the caption column's view (caption), made when first needed

    def _labels(self) -> tuple[np.ndarray, list[str]]:
        """Per-sample labels 0..K-1 and the class names (none: the null label, K = 0)."""
        if not self.label_column:
            return np.full(len(self.ds), UNLABELLED, dtype=np.int64), []
        from datasets import ClassLabel

        feature = self.ds.features[self.label_column]
        values = self.ds[self.label_column]
        if isinstance(feature, ClassLabel):  # carries its names
            return np.asarray(values, dtype=np.int64), list(feature.names)
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            if min(values) < 0:
                raise UserError(f"--label-column {self.label_column}: labels must be >= 0, found {min(values)}")
            return np.asarray(values, dtype=np.int64), [str(k) for k in range(max(values) + 1)]
        names = sorted({str(v) for v in values})  # strings: sorted, as class folders are
        lookup = {n: k for k, n in enumerate(names)}
        return np.asarray([lookup[str(v)] for v in values], dtype=np.int64), names

    def __len__(self) -> int:
        return len(self.ds)

    def caption(self, index: int) -> str:
        if not self.caption_column:
            raise UserError(f"{self.where}: no --caption-column given")
        if self._captions is None:  # the caption column alone: reading a row of ds would decode its image too
            self._captions = self.ds.select_columns([self.caption_column])
        return str(self._captions[int(index)][self.caption_column])

    def captions(self) -> list[str]:
        """The whole caption column, read without decoding any image."""
        if not self.caption_column:
            raise UserError(f"{self.where}: no --caption-column given")
        return [str(c) for c in self.ds[self.caption_column]]

    def label(self, index: int) -> int:
        return int(self.labels[index])

    def name(self, index: int) -> str:
        return f"sample {index} of {self.where}"

    def header_size(self, index: int) -> tuple[int, int] | None:
        """From the encoded bytes (or the file) of the image column, not the decoded image."""
        import io

        from datasets import Image

        from dit.data.buckets import header_size

        if self._undecoded is None:
            feature = self.ds.features[self.image_column]
            self._undecoded = self.ds.cast_column(self.image_column, Image(decode=False)) \
                if isinstance(feature, Image) else self.ds
        raw = self._undecoded[int(index)][self.image_column]
        if isinstance(raw, dict):
            raw = io.BytesIO(raw["bytes"]) if raw.get("bytes") is not None else raw.get("path")
        if isinstance(raw, (str, os.PathLike, io.BytesIO)):
            return header_size(raw)
        return None if raw is None else header_size(_as_file(raw))

    def image(self, index: int):
        from dit.data.folders import load_image, upright_rgb

        try:
            raw = self.ds[int(index)][self.image_column]
            if isinstance(raw, dict) and raw.get("bytes") is None and raw.get("path"):  # an undecoded path
                return load_image(raw["path"])
            if isinstance(raw, (str, os.PathLike)):
                return load_image(raw)
            return upright_rgb(raw)
        except Exception as e:  # noqa: BLE001 - a bad image: skipped and counted, as in a folder
            if index not in self.skipped:
                warnings.warn(f"skipping unreadable sample {index} of {self.where}: {type(e).__name__}: {e}",
                              stacklevel=3)
            self.skipped.add(index)
            return None


def _as_file(img):
    """A decoded PIL image (a dataset whose column is not an Image feature) as PNG bytes, for header_size."""
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    buf.seek(0)
    return buf
