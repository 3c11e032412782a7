"""The one file digest every part uses: sha256 of a file, read in 1 MiB blocks (downloads, recorded weights,
a frozen text encoder, the I3D file)."""

from __future__ import annotations

import hashlib
import os


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
