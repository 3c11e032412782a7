"""The one file digest every part uses: sha256 of a file, read in 1 MiB blocks (downloads, recorded weights,
a frozen text encoder, the I3D file).

A process asks for the same file's digest several times (a frozen text encoder's weights: when its flags are
checked, when the network is configured, when it is loaded, when a latent cache's features are matched), and
a T5 encoder is gigabytes: each digest is kept per process, keyed by the file's identity and state (device,
inode, size, modification time in ns), so a file replaced or rewritten is read again."""

from __future__ import annotations

import hashlib
import os

_DIGESTS: dict[tuple, str] = {}


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]
