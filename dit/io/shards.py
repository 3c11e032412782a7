"""Evaluation batches on disk: shards that record what drew them, and the .npz assembled from them.

`sample.py --npz` writes one shard per batch: its images, labels and a record of the settings that
drew it (checkpoint sha256, sampler, seeds, ...) with its sample range. A rerun keeps a shard only if
it loads and its record matches, so a damaged, foreign or differently batched shard is redone
whatever its file name. The .npz (arr_0: uint8 NHWC images, arr_1: labels, the ADM evaluator's
format) is assembled one shard at a time: one file open, never all images in memory twice.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from dit.errors import UserError
from dit.io.atomic import atomic_path


def shard_path(parts: Path, a: int) -> Path:
    return parts / f"{a:08d}.npz"  # where shard a..b lives; whether it counts is read from inside it


def read_shard(path: Path, settings: dict, a: int, b: int, labels: np.ndarray):
    """(images, labels) if `path` loads and holds samples a..b-1 drawn with `settings`, else None."""
    try:
        with np.load(path) as z:
            record = json.loads(str(z["meta"][()]))
            if record != {"settings": settings, "start": a, "stop": b}:
                return None
            images, shard_labels = z["images"], z["labels"]
    except Exception:  # noqa: BLE001 - missing, truncated, not a zip, no record: in every case, redo it
        return None
    if images.dtype != np.uint8 or images.ndim not in (4, 5) or len(images) != b - a:
        return None
    if not np.array_equal(shard_labels, labels[a:b]):
        return None
    return images, shard_labels


def write_shard(path: Path, images: np.ndarray, settings: dict, a: int, b: int, labels: np.ndarray) -> None:
    record = json.dumps({"settings": settings, "start": a, "stop": b})
    with atomic_path(path) as tmp:  # a shard exists only once complete
        np.savez(tmp, images=images, labels=labels[a:b], meta=np.array(record))


def assemble_npz(out: Path, parts: Path, shards, settings: dict, labels: np.ndarray) -> tuple[int, ...]:
    """Write `out` (arr_0: uint8 NHWC images or NFHWC clips, arr_1: labels) from the shards, one shard open and in
    memory at a time: arr_0.npy is streamed into the zip (an .npy header, then each shard's bytes)."""
    shape = None
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("arr_0.npy", "w", force_zip64=True) as f:
            for a, b in shards:
                shard = read_shard(shard_path(parts, a), settings, a, b, labels)
                if shard is None:
                    raise UserError(f"shard {shard_path(parts, a)} (samples {a}..{b - 1}) is missing or damaged; "
                                    "rerun the same command to redo it")
                images = np.ascontiguousarray(shard[0])
                if shape is None:
                    shape = (len(labels), *images.shape[1:])
                    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(images.dtype),
                                                             "fortran_order": False, "shape": shape})
                elif images.shape[1:] != shape[1:]:
                    raise UserError(f"shard {shard_path(parts, a)} holds {images.shape[1:]} images, others "
                                    f"{shape[1:]}; delete {parts} and rerun")
                f.write(images.reshape(-1))
        with zf.open("arr_1.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, np.asarray(labels), allow_pickle=False)
    return shape


def sample_to_npz(out: Path, labels: np.ndarray, batch_size: int, settings: dict,
                  draw: Callable[[int, int], np.ndarray], state, show: bool = True) -> tuple[int, ...] | None:
    """Resumable mass sampling into `out`: shards of `batch_size` split over the processes of
    `state` (accelerate's PartialState), draw(a, b) giving samples a..b-1 as uint8. A shard on disk
    is kept only if it loads and records these `settings` and range; damaged, foreign or differently
    batched ones are redone. The main process then assembles the .npz shard by shard and removes
    the shards; it returns the array's shape (None on the other processes)."""
    parts = out.with_name(out.name + ".parts")
    if state.is_main_process:
        parts.mkdir(parents=True, exist_ok=True)
    state.wait_for_everyone()
    n = len(labels)
    shards = [(a, min(a + batch_size, n)) for a in range(0, n, batch_size)]
    mine = shards[state.process_index :: state.num_processes]
    todo = [(a, b) for a, b in mine if read_shard(shard_path(parts, a), settings, a, b, labels) is None]
    for a, b in tqdm(todo, desc=f"sampling (keeping {len(mine) - len(todo)} finished shards)", disable=not show):
        write_shard(shard_path(parts, a), draw(a, b), settings, a, b, labels)
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    shape = assemble_npz(out, parts, shards, settings, labels)
    shutil.rmtree(parts)
    return shape
