"""The model zoo: known pretrained checkpoints listed in models/manifest.json.

The manifest is data (source URL, sha256 when recorded, licence, the config each checkpoint
needs). It ships inside the package as dit/io/manifest.json (in the source tree a link to
models/manifest.json), so a wheel or a non-editable install knows the zoo too. Weights are
downloaded into $DIT_WEIGHTS_DIR, else models/weights/ of a source checkout (git-ignored), else
~/.cache/dit/weights for an installed copy.
Downloads are written to a temporary file and renamed only after the checksum passes, so an
interrupted download never leaves a file that looks complete.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from dit.digest import sha256_of
from dit.errors import UserError
from dit.io.atomic import atomic_path

MANIFEST = Path(__file__).resolve().with_name("manifest.json")  # package data
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"  # exists in a source checkout only


def weights_dir() -> Path:
    if "DIT_WEIGHTS_DIR" in os.environ:
        return Path(os.environ["DIT_WEIGHTS_DIR"])
    return MODELS_DIR / "weights" if MODELS_DIR.is_dir() else Path.home() / ".cache" / "dit" / "weights"


def manifest(feature_extractors: bool = False) -> dict:
    """Manifest entries by name: DiT checkpoints, plus evaluation networks if asked for."""
    if not MANIFEST.is_file():
        return {}
    entries = json.loads(MANIFEST.read_text())["checkpoints"]
    return {k: v for k, v in entries.items() if feature_extractors or v.get("kind") != "feature-extractor"}


def _download(url: str, dest: Path, expected: str | None) -> None:
    """Download into a temporary file; rename it to `dest` only once complete and checksum-verified."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(dest) as tmp:
            with urllib.request.urlopen(url, timeout=30) as r, open(tmp, "wb") as f:
                total = int(r.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                    while block := r.read(1 << 20):
                        f.write(block)
                        bar.update(len(block))
            _check_sha(tmp, expected, url)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise UserError(
            f"could not download {url} ({e}); without a network, fetch it elsewhere and place it at {dest}"
        ) from None


def _check_sha(path: Path, expected: str | None, what) -> None:
    actual = sha256_of(path)
    if expected and not actual.startswith(expected):
        raise UserError(
            f"{what} has sha256 {actual}, but the manifest records {expected}{'...' if len(expected) < 64 else ''}: the "
            f"file is corrupt or not the published one; delete it and run again to re-download"
        )


def resolve(name: str) -> tuple[Path, dict]:
    """Local path of manifest checkpoint `name` (downloaded and checksum-verified when needed)."""
    entry = manifest(feature_extractors=True)[name]
    path = weights_dir() / entry["file"]
    expected = entry.get("sha256") or entry.get("sha256_prefix")
    if not path.is_file():
        _download(entry["url"], path, expected)
    if not expected:
        print(f"note: the manifest records no sha256 for {name}; this file's is {sha256_of(path)}", file=sys.stderr)
    else:
        _check_sha(path, expected, path)
    return path, entry
