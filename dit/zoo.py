"""The model zoo: known pretrained checkpoints listed in models/manifest.json.

The manifest is data (source URL, sha256 when recorded, licence, the config each checkpoint
needs); weights are downloaded into models/weights/ (git-ignored) or $DIT_WEIGHTS_DIR.
Downloads are written to a temporary file and renamed only after the checksum passes, so an
interrupted download never leaves a file that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from dit.errors import UserError

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
MANIFEST = MODELS_DIR / "manifest.json"


def weights_dir() -> Path:
    return Path(os.environ.get("DIT_WEIGHTS_DIR", MODELS_DIR / "weights"))


def manifest(feature_extractors: bool = False) -> dict:
    """Manifest entries by name: DiT checkpoints, plus evaluation networks if asked for."""
    if not MANIFEST.is_file():
        return {}
    entries = json.loads(MANIFEST.read_text())["checkpoints"]
    return {k: v for k, v in entries.items() if feature_extractors or v.get("kind") != "feature-extractor"}


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _download(url: str, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".partial")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=30) as r, open(tmp, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                while block := r.read(1 << 20):
                    f.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        tmp.unlink(missing_ok=True)
        raise UserError(
            f"could not download {url} ({e}); without a network, fetch it elsewhere and place it at {dest}"
        ) from None
    tmp.replace(dest)


def resolve(name: str) -> tuple[Path, dict]:
    """Local path of manifest checkpoint `name` (downloaded and checksum-verified when needed)."""
    entry = manifest(feature_extractors=True)[name]
    path = weights_dir() / entry["file"]
    if not path.is_file():
        _download(entry["url"], path)
    expected, prefix = entry.get("sha256"), entry.get("sha256_prefix")
    if not expected and not prefix:
        print(f"note: the manifest records no sha256 for {name}; this file's is {sha256_of(path)}", file=sys.stderr)
    else:
        actual = sha256_of(path)
        if not actual.startswith(expected or prefix):
            raise UserError(
                f"{path} has sha256 {actual}, but the manifest records {expected or prefix + '...'}: the file is corrupt or "
                f"not the published one; delete it and run again to re-download"
            )
    return path, entry
