"""WebDataset tar shards as training data (`--data`): read by random access, so the stream stays exact.

A shard is a plain tar whose members are grouped into samples by key (the name up to its first dot):
`000042.jpg` (or .png, .webp, ...) the image, `000042.cls` its label as text (an integer), `000042.txt`
its caption, `000042.json` a dict that may hold "label" and "caption". `--data` names a folder of
shards (every *.tar in it, sorted), one .tar, or a brace pattern `shards/train-{000..127}.tar`.

Each shard's member offsets are read once from its headers (the index, kept under --results-dir's
.cache, keyed by each shard's path, size and modification time). A sample is then read by seeking
to its bytes, so the training stream (dit/data/stream.py) is what it is for a folder: sample i is
decoded by whichever process's position needs it, every process opening only the shards its
positions hit. Hence:
- exact on resume, at the sample level: resuming at step s re-reads the positions from s on, every
  process count sees the same global batches, and within an epoch no sample is seen twice;
- no shuffle buffer: the epoch's permutation covers all shards (the usual streaming reader's buffer
  shuffle, approximate by design, is not used). What this needs is shards on a file system that
  can seek (local disk, NFS, a mounted bucket), not an HTTP stream.
Unreadable images are replaced by the next readable sample and counted, as in a folder; a shard
that is not a readable tar is refused in one line.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import warnings
from pathlib import Path

import numpy as np

from dit.data.folders import IMAGE_EXTENSIONS
from dit.errors import UserError
from dit.io.atomic import write_text
from dit.networks.conditioning import UNLABELLED

INDEX_VERSION = 1


def shard_paths(data: str) -> list[Path] | None:
    """The shards `data` names (a folder of .tar, a .tar, or a brace pattern), or None if it names none."""
    brace = re.fullmatch(r"(.*)\{(\d+)\.\.(\d+)\}(.*)", data)
    if brace:
        head, a, b, tail = brace.groups()
        paths = [Path(f"{head}{i:0{len(a)}d}{tail}") for i in range(int(a), int(b) + 1)]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise UserError(f"--data {data}: shard {missing[0]} does not exist ({len(missing)} of {len(paths)} missing)")
        return paths
    path = Path(data)
    if path.is_file() and path.suffix == ".tar":
        return [path]
    if path.is_dir():
        tars = sorted(path.glob("*.tar"))
        others = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix != ".tar"]
        return tars if tars and not others else None
    return None


def index_shards(paths: list[Path], cache_dir: Path | None = None) -> list[dict]:
    """[{"shard": i, "key": key, "members": {ext: [offset, size]}}] over all shards, in shard and key order."""
    stamp = [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in paths]
    name = hashlib.sha256(json.dumps([INDEX_VERSION, stamp]).encode()).hexdigest()[:16]
    cached = cache_dir / f"wds-{name}.json" if cache_dir else None
    if cached is not None and cached.is_file():
        return json.loads(cached.read_text())
    samples = []
    for i, path in enumerate(paths):
        grouped: dict[str, dict] = {}
        try:
            with tarfile.open(path, "r:") as tar:  # uncompressed: the members' offsets are file offsets
                for m in tar:
                    if not m.isfile() or m.name.startswith(".") or "/." in m.name:
                        continue
                    base = m.name.rsplit("/", 1)[-1]
                    key, _, ext = base.partition(".")
                    grouped.setdefault(m.name[: len(m.name) - len(base)] + key, {})[ext.lower()] = [m.offset_data, m.size]
        except (tarfile.TarError, OSError) as e:
            raise UserError(f"shard {path} is not a readable tar ({type(e).__name__}: {e}); replace or remove it") from None
        samples += [{"shard": i, "key": k, "members": v} for k, v in sorted(grouped.items()) if _image_ext(v)]
    if not samples:
        raise UserError(f"the shards ({paths[0]}, ...) hold no samples with an image ({' '.join(IMAGE_EXTENSIONS)})")
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        write_text(cached, json.dumps(samples))  # atomic, a temporary per process: every process may write it
    return samples


def _image_ext(members: dict) -> str | None:
    return next((e for e in members if "." + e in IMAGE_EXTENSIONS), None)


class ShardImages:
    """WebDataset shards as a source of images (dit/data/sources.py: image, label, header_size by index).
    Labels from .cls or json "label" (integers 0..K-1); shards without labels are unlabelled (an
    unconditional model)."""

    def __init__(self, paths: list[Path], cache_dir: Path | None = None):
        self.paths = [str(p) for p in paths]
        self.where = f"the shards ({self.paths[0]}, ...)"
        self.samples = index_shards(paths, cache_dir)
        self._files: dict[int, object] = {}
        labels = [self._label(s) for s in self.samples]
        if any(v is not None for v in labels):
            if any(v is None for v in labels):
                missing = next(s["key"] for s, v in zip(self.samples, labels) if v is None)
                raise UserError(f"sample {missing} of the shards has no label (.cls or json \"label\"), others have: "
                                "label every sample, or none (unconditional)")
            self.labels = np.asarray(labels, dtype=np.int64)
            self.class_names = [str(k) for k in range(int(self.labels.max()) + 1)]
        else:
            self.labels, self.class_names = np.full(len(self.samples), UNLABELLED, dtype=np.int64), []
        self.num_classes = len(self.class_names)
        self.skipped: set[str] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def __getstate__(self):  # open files stay with the process that opened them (loader workers reopen)
        return {**self.__dict__, "_files": {}}

    def _bytes(self, sample: dict, ext: str) -> bytes:
        f = self._files.get(sample["shard"])
        if f is None:
            f = self._files[sample["shard"]] = open(self.paths[sample["shard"]], "rb")  # noqa: SIM115 - kept open
        offset, size = sample["members"][ext]
        f.seek(offset)
        return f.read(size)

    def _label(self, sample: dict) -> int | None:
        members = sample["members"]
        try:
            if "cls" in members:
                return int(self._bytes(sample, "cls").decode().strip())
            if "json" in members:
                value = json.loads(self._bytes(sample, "json")).get("label")
                return None if value is None else int(value)
        except (ValueError, UnicodeDecodeError) as e:
            raise UserError(f"sample {sample['key']} of {self.paths[sample['shard']]} has a label that is not an "
                            f"integer ({e}); labels are 0..K-1") from None
        return None

    def caption(self, index: int) -> str | None:
        sample = self.samples[index]
        if "txt" in sample["members"]:
            return self._bytes(sample, "txt").decode()
        if "json" in sample["members"]:
            return json.loads(self._bytes(sample, "json")).get("caption")
        return None

    def label(self, index: int) -> int:
        return int(self.labels[index])

    def name(self, index: int) -> str:
        sample = self.samples[index]
        return f"sample {sample['key']} of {self.paths[sample['shard']]}"

    def header_size(self, index: int) -> tuple[int, int] | None:
        from dit.data.buckets import header_size

        sample = self.samples[index]
        return header_size(io.BytesIO(self._bytes(sample, _image_ext(sample["members"]))))

    def image(self, index: int):
        from dit.data.folders import load_image

        sample = self.samples[index]
        try:
            return load_image(io.BytesIO(self._bytes(sample, _image_ext(sample["members"]))))
        except Exception as e:  # noqa: BLE001 - a corrupt image: skipped and counted
            where = f"{self.paths[sample['shard']]}:{sample['key']}"
            if where not in self.skipped:
                warnings.warn(f"skipping unreadable image {where}: {type(e).__name__}: {e}", stacklevel=3)
            self.skipped.add(where)
            return None
