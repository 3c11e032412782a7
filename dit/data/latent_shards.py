"""A latent cache's chunks as WebDataset tar shards (`cache_latents.py --out-format webdataset`).

Each chunk is an uncompressed tar that any WebDataset reader can stream: per image one sample, keyed
by the image's index in its source (9 digits), with
    <key>.mean.npy, <key>.std.npy   the scaled posterior moments of the image and of its flip, (2, c, h, w)
    <key>.ids.npy                   instead, through a VQ tokenizer: the token ids of both, (2, h, w)
    <key>.cls                       the label, as text (the null label for an unlabelled source)
    <key>.txt                       the caption (a cache written with --captions), UTF-8
What the safetensors chunk keeps in its header (rows, skipped files, the stored shape) is a PAX global
header of the tar ("dit.rows", "dit.skipped", "dit.shape"): not a member, so stream readers never see it.

Training reads a shard like any chunk, by random access (dit/data/latent_cache.py LatentCache): the
members' offsets are read once per process when the shard is first opened, and a row is one seek.
So the stream (dit/data/stream.py) stays exact: resume at the sample level and the same global
batches on any number of processes or nodes, without a shuffle buffer. Arrays are .npy, read with
`allow_pickle=False`: nothing in a shard is unpickled.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import torch

from dit.io.atomic import atomic_path

KEY_DIGITS = 9
NUMPY_DTYPES = ("float16", "float32", "int16", "int32")  # what .npy stores as itself (numpy has no bfloat16)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def write_shard(path: Path, data: dict[str, torch.Tensor], labels: torch.Tensor, indices: torch.Tensor,
                skipped: list[str], dtype: torch.dtype, captions: list[str] | None = None) -> None:
    """One chunk as a tar shard, atomically. `data`: name -> (n, 2, ...) (mean and std, or ids); `captions`:
    one per row, or None."""
    name = str(dtype).removeprefix("torch.")
    if name not in NUMPY_DTYPES:
        raise ValueError(f"a WebDataset shard stores .npy arrays, which have no {name}")
    arrays = {k: v.to(dtype).contiguous().numpy() for k, v in data.items()}
    shape = next(iter(arrays.values())).shape
    header = {"dit.rows": str(len(labels)), "dit.skipped": json.dumps(skipped), "dit.shape": json.dumps(list(shape))}
    with atomic_path(path) as tmp, tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT, pax_headers=header) as tar:
        for row, (label, index) in enumerate(zip(labels.tolist(), indices.tolist())):
            key = f"{index:0{KEY_DIGITS}d}"
            for k, a in arrays.items():
                _add(tar, f"{key}.{k}.npy", _npy(a[row]))
            _add(tar, f"{key}.cls", str(label).encode())
            if captions is not None:
                _add(tar, f"{key}.txt", captions[row].encode())


def read_shard_header(path: Path) -> dict:
    """{"rows", "skipped", "shape"} of a shard, its members checked to be all there and complete;
    raises ValueError (or OSError, tarfile.TarError) for a damaged one, FileNotFoundError for a missing one."""
    with tarfile.open(path, "r:") as tar:
        members = tar.getmembers()  # reads every header: a cut-off archive fails here
        header = tar.pax_headers
    if "dit.rows" not in header:
        raise ValueError("not a shard written by cache_latents.py (no dit.rows header)")
    rows, shape = int(header["dit.rows"]), tuple(json.loads(header["dit.shape"]))
    keys = {m.name.split(".", 1)[0] for m in members}
    if len(keys) != rows:
        raise ValueError(f"{len(keys)} samples, but the header says {rows}")
    end = max((m.offset_data + m.size for m in members), default=0)
    if os.path.getsize(path) < end:
        raise ValueError("the file is shorter than its members (truncated)")
    texts = sum(m.name.endswith(".txt") for m in members)
    if texts not in (0, rows):
        raise ValueError(f"{texts} captions for {rows} samples")
    return {"rows": rows, "skipped": json.loads(header["dit.skipped"]), "shape": shape, "captions": texts == rows > 0}


class ShardChunk:
    """Random access to the rows of one shard: `get(name, row)` the (2, ...) tensor of the image and its flip
    (`get(name, row, v)` one of them), `label(row)`."""

    def __init__(self, path: Path):
        self.file = open(path, "rb")  # noqa: SIM115 - kept open for the process's lifetime, as a mmap would be
        self.members: list[dict[str, tuple[int, int]]] = []
        with tarfile.open(fileobj=self.file, mode="r:") as tar:
            for m in tar:  # written in row order: each key's members are contiguous
                key, ext = m.name.split(".", 1)
                if not self.members or self._key != key:
                    self.members.append({})
                    self._key = key
                self.members[-1][ext] = (m.offset_data, m.size)

    def _bytes(self, row: int, ext: str) -> bytes:
        offset, size = self.members[row][ext]
        self.file.seek(offset)
        return self.file.read(size)

    def get(self, name: str, row: int, v: int | None = None) -> torch.Tensor:
        both = torch.from_numpy(np.load(io.BytesIO(self._bytes(row, f"{name}.npy")), allow_pickle=False))
        return both if v is None else both[v]

    def label(self, row: int) -> int:
        return int(self._bytes(row, "cls").decode())

    def caption(self, row: int) -> str:
        return self._bytes(row, "txt").decode()
