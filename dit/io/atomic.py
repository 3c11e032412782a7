"""Atomic file writes: a file is either its old self or complete, never half written.

Everything is written to a temporary name in the same directory and renamed over the target
(rename is atomic on POSIX); a write that fails removes the temporary file. The temporary name
is hidden (a leading dot: globs for the real files skip it), holds the process id (processes that
race to write the same cache file do not collide; the last rename wins, whole) and keeps the
target's suffix, for writers that insist on one (np.savez appends ".npz").
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path


def temporary_name(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on failure it is removed."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str, fsync: bool = False) -> None:
    with atomic_path(path, fsync) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj, indent: int | None = 1, fsync: bool = False) -> None:
    write_text(path, json.dumps(obj, indent=indent), fsync)
