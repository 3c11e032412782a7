"""Latent cache: a dataset encoded once through the VAE, read by many training processes.

Why: the public DiT training re-encodes every image through the VAE at every step, which costs
about as much as the DiT forward pass for XL/2 and more for smaller models.

What is stored (per image): the scaled mean and std of the VAE posterior q(z|x) for the image
AND its horizontal flip, so training can still draw a fresh latent z = mean + std * eps every
epoch and still flip (as the paper trains), instead of freezing one sample as fast-DiT does.
Through an autoencoder without posterior moments (`has_moments` False: a VQ tokenizer,
dit/autoencoders/vq.py, VQ-Diffusion) a chunk holds the token ids of the image and of its flip
instead ("ids" (n, 2, h, w), int16 when K <= 32767): the ids of a flipped image are not the
flipped ids (a code need not be mirror-symmetric), so both are encoded. settings.json then records
the tokenizer (name, file, codebook_size, scale 1, shift 0).

Layout of a cache directory:
    settings.json              what was encoded (data, image size, buckets, the VAE: name, source, scale and
                               shift; dtype, chunk size, format)
    chunk_00000.safetensors    up to C images of one size, in the source's order: "mean", "std" (n, 2, c, h, w)
    ...                        ([:, 0] the image, [:, 1] its flip), or "ids" (n, 2, h, w) for a tokenizer;
                               "labels" (n,), "indices" (n,: each row's index in the source); with
                               `cache_latents.py --captions`, each row's caption (the header's "captions",
                               a JSON list: text for a text-to-image DiT, encoded by it at every use), and
                               with --text-encoder DIR a frozen encoder's "text_ids", "text_mask" (n, S)
                               and "text_features" (n, S, D) of each caption (settings.json records the
                               encoder's sha256 and S: a run with that encoder reads them, PixArt-α's T5 cache)
    (or shard-00000.tar ...)   the same rows as WebDataset samples (--out-format webdataset: latent_shards.py)
    index.json                 written last: chunk names, row counts and buckets, classes, skipped files
    stats.json                 per-channel mean and std of the latents (for --latent-norm channel), and the
                               chunks they were measured over; written after index.json (`write_stats`)
With aspect-ratio buckets (dit/data/buckets.py, `cache_latents.py --buckets`) each chunk holds one
bucket's images, index.json records each chunk's bucket and the buckets' sizes, and `bucket_of` gives
each row's bucket: training then draws every global batch from one bucket, as from images.
Chunks are written to a temporary name and renamed, so a chunk either exists whole or not at all.
Chunk k is encoded by process k mod P, so processes never write the same file; a re-run skips the
chunks already present and checks them, so a killed or damaged cache is repaired by re-running the
same command. safetensors files are memory-mapped: many processes share one page cache.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from dit.autoencoders.base import NORM_KEYS, ChannelNorm
from dit.errors import UserError
from dit.io.atomic import atomic_path, write_json

INDEX, SETTINGS, STATS = "index.json", "settings.json", "stats.json"
STATS_ROWS = 1024  # images read at a time while measuring the statistics: bounded memory at any image size
DTYPES = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}
MOMENTS, IDS = ("mean", "std"), ("ids",)  # what a chunk stores: a VAE's posterior moments, or a tokenizer's ids
TEXT_KEYS = ("text_ids", "text_mask", "text_features")  # a frozen encoder's reading of the captions (optional)


def ids_dtype(codebook_size: int) -> str:
    """The smallest signed type that holds ids 0..K-1 (safetensors and torch have no uint16 to rely on)."""
    return "int16" if codebook_size <= torch.iinfo(torch.int16).max else "int32"


FORMATS = {"safetensors": "chunk_{:05d}.safetensors", "webdataset": "shard-{:05d}.tar"}  # chunk file per format


def chunk_name(k: int, fmt: str = "safetensors") -> str:
    return FORMATS[fmt].format(k)


def is_cache(path: str | os.PathLike) -> bool:
    return (Path(path) / SETTINGS).is_file()


def write_chunk(path: Path, mean: torch.Tensor | None, std: torch.Tensor | None, labels: torch.Tensor,
                indices: torch.Tensor, skipped: list[str], dtype: torch.dtype, ids: torch.Tensor | None = None,
                captions: list[str] | None = None, text: dict[str, torch.Tensor] | None = None) -> None:
    """One chunk, atomically: the final name appears only once the whole file is on disk. A
    tokenizer's chunk passes `ids` (and None moments); everything but labels and indices is stored as `dtype`.
    `captions`: one per row, kept in the header; `text`: TEXT_KEYS' tensors, stored as they are. A .tar path
    is written as a WebDataset shard (latent_shards.py)."""
    data = {"ids": ids} if ids is not None else {"mean": mean, "std": std}
    if path.suffix == ".tar":
        from dit.data.latent_shards import write_shard

        return write_shard(path, data, labels, indices, skipped, dtype, captions)
    tensors = {**{k: v.to(dtype).contiguous() for k, v in data.items()},
               "labels": labels.long().contiguous(), "indices": indices.long().contiguous(),
               **{k: v.contiguous() for k, v in (text or {}).items()}}
    meta = {"rows": str(len(labels)), "skipped": json.dumps(skipped)}
    if captions is not None:
        meta["captions"] = json.dumps(list(captions))
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def read_chunk_header(path: Path) -> dict:
    """Rows, skipped files and stored shape of a chunk; raises UserError when it is unreadable (and
    FileNotFoundError when it is missing)."""
    import tarfile

    try:
        if path.suffix == ".tar":
            from dit.data.latent_shards import read_shard_header

            return read_shard_header(path)
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            kind = IDS if "ids" in f.keys() else MOMENTS
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in (*kind, "labels", "indices")}
        rows = int(meta["rows"])
        if any(s[0] != rows for s in shapes.values()):
            raise ValueError(f"row counts {shapes} disagree with the header's {rows}")
        captions = json.loads(meta["captions"]) if "captions" in meta else None
        if captions is not None and len(captions) != rows:
            raise ValueError(f"{len(captions)} captions for {rows} rows")
        # A truncated file can still have a readable header: check the data actually reaches the end.
        with open(path, "rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(header_len))
        end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
        if os.path.getsize(path) < 8 + header_len + end:
            raise ValueError("the file is shorter than its header says (truncated)")
        return {"rows": rows, "skipped": json.loads(meta.get("skipped", "[]")), "shape": shapes[kind[0]][1:],
                "captions": captions is not None}
    except FileNotFoundError:
        raise
    except (SafetensorError, OSError, ValueError, KeyError, json.JSONDecodeError, tarfile.TarError) as e:
        raise UserError(f"latent cache chunk {path} is damaged ({e}); delete it and re-run cache_latents.py with the "
                        "same arguments to re-encode it") from None


class LatentCache:
    """A finished cache: `get(index, rng)` draws a latent of image `index` (flipped or not) from q(z|x),
    or, in a cache of token ids (`tokens`), returns the ids of the image or of its flip."""

    def __init__(self, root: str | os.PathLike, flip: bool = True):
        self.root, self.flip = Path(root), flip
        if not (self.root / INDEX).is_file():
            if is_cache(self.root):
                raise UserError(f"latent cache {self.root} is incomplete (no {INDEX}: the encoding was interrupted); "
                                "re-run cache_latents.py with the same arguments to finish it")
            raise UserError(f"{self.root} is not a latent cache (no {INDEX}); write one with cache_latents.py")
        self.index = json.loads((self.root / INDEX).read_text())
        self.settings = self.index["settings"]
        self.class_names = self.index["class_names"]
        self.num_classes = len(self.class_names)
        self.rows = [c["rows"] for c in self.index["chunks"]]
        self.offsets = np.cumsum([0] + self.rows)
        for c in self.index["chunks"]:  # detect missing or truncated chunks now, not mid-epoch
            path = self.root / c["name"]
            if not path.is_file():
                raise UserError(f"latent cache {self.root} is missing {c['name']}; re-run cache_latents.py with the "
                                "same arguments to re-encode it")
            header = read_chunk_header(path)
            if header["rows"] != c["rows"] or header["captions"] != bool(self.index["settings"].get("captions")):
                raise UserError(f"latent cache chunk {path} does not match {INDEX}; delete it and re-run "
                                "cache_latents.py with the same arguments")
        self.latent_shape = tuple(self.index["latent_shape"])  # at the cache's image size
        # Aspect-ratio buckets: their (height, width) sizes, latent shapes, and each row's bucket (None without).
        self.buckets = [tuple(s) for s in self.index["buckets"]] if "buckets" in self.index else None
        self.bucket_shapes = [tuple(s) for s in self.index["bucket_shapes"]] if self.buckets else None
        self.bucket_of = np.repeat([c["bucket"] for c in self.index["chunks"]], self.rows).tolist() \
            if self.buckets else None
        self.tokens = "codebook_size" in self.settings  # written through a VQ tokenizer: ids, not moments
        self.captioned = bool(self.settings.get("captions"))  # written with --captions: a caption per row
        # written with --text-encoder: {"text_encoder", "text_encoder_sha256", "text_length"} of the stored features
        self.text_encoder = {k: self.settings[k] for k in ("text_encoder", "text_encoder_sha256", "text_length")
                             } if "text_encoder_sha256" in self.settings else None
        self.norm: ChannelNorm | None = None  # set (read_channel_norm) for --latent-norm channel: get() applies it
        self._handles: dict[int, object] = {}  # opened lazily, per process (DataLoader workers fork)

    def read_channel_norm(self) -> ChannelNorm:
        """The cache's per-channel statistics (stats.json); a UserError naming the fix when absent or stale."""
        fix = f"compute them with `python cache_latents.py --stats-only --out {self.root}`"
        path = self.root / STATS
        if not path.is_file():
            raise UserError(f"latent cache {self.root} has no per-channel statistics ({STATS}); {fix}")
        try:
            stats = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"latent cache statistics {path} are unreadable ({e}); {fix}") from None
        if stats.get("chunks") != self.index["chunks"] or any(k not in stats for k in NORM_KEYS):
            raise UserError(f"latent cache statistics {path} were measured over other chunks than the cache now "
                            f"holds; {fix}")
        return ChannelNorm.from_meta(stats)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _row(self, index: int):
        """(the chunk holding row `index`, opened once per process, and the row within it)."""
        k = int(np.searchsorted(self.offsets, index, side="right") - 1)
        if k not in self._handles:
            path = self.root / self.index["chunks"][k]["name"]
            if path.suffix == ".tar":
                from dit.data.latent_shards import ShardChunk

                self._handles[k] = ShardChunk(path)
            else:
                self._handles[k] = _SafetensorsChunk(path)
        return self._handles[k], index - int(self.offsets[k])

    def moments(self, index: int, flipped: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
        f, row = self._row(index)
        v = int(flipped)
        return f.get("mean", row, v).float(), f.get("std", row, v).float(), f.label(row)

    def ids(self, index: int, flipped: bool) -> tuple[torch.Tensor, int]:
        """Token ids (h, w) long of image `index` or of its flip, and its label (a cache of `tokens`)."""
        f, row = self._row(index)
        return f.get("ids", row, int(flipped)).long(), f.label(row)

    def caption(self, index: int, rng: np.random.Generator | None = None) -> str:
        """Row `index`'s caption (a cache written with --captions)."""
        if not self.captioned:
            raise UserError(f"latent cache {self.root} holds no captions; re-encode it with cache_latents.py --captions")
        f, row = self._row(index)
        return f.caption(row)

    def captions(self) -> list[str]:
        """Every caption, in row order (the word tokenizer's vocabulary is built from them)."""
        return [self.caption(i) for i in range(len(self))]

    def text_features(self, index: int) -> dict[str, torch.Tensor]:
        """Row `index`'s caption as the frozen encoder read it: the cond entries of the text DiT (TEXT_IDS long,
        TEXT_MASK bool, TEXT float32 features), from a cache written with --text-encoder."""
        from dit.networks.conditioning import TEXT, TEXT_IDS, TEXT_MASK

        f, row = self._row(index)
        ids, mask, features = (f.f.get_slice(k)[row : row + 1][0] for k in TEXT_KEYS)
        return {TEXT_IDS: ids.long(), TEXT_MASK: mask.bool(), TEXT: features.float()}

    def get(self, index: int, rng: np.random.Generator) -> tuple[torch.Tensor, int, bool]:
        flipped = bool(rng.random() < 0.5) and self.flip
        if self.tokens:  # the encoding of the flipped image, stored beside the image's: nothing more is drawn
            ids, label = self.ids(index, flipped)
            return ids, label, False
        mean, std, label = self.moments(index, flipped)
        eps = torch.from_numpy(rng.standard_normal(tuple(mean.shape), dtype=np.float32))
        z = mean + std * eps  # a fresh draw from q(z|x) every time (scaled, see dit/autoencoders/vae.py)
        return (z if self.norm is None else self.norm.normalize(z)), label, False

    def __getstate__(self):  # file handles do not cross process boundaries
        return {**self.__dict__, "_handles": {}}


class _SafetensorsChunk:
    """Rows of a safetensors chunk, memory-mapped: `get(name, row, v)` the image's (v 0) or its flip's (v 1)
    tensor (only those bytes are read), `label(row)`."""

    def __init__(self, path: Path):
        self.f = safe_open(str(path), "pt")
        self._captions = None

    def caption(self, row: int) -> str:
        if self._captions is None:  # the header's list, parsed once
            self._captions = json.loads((self.f.metadata() or {})["captions"])
        return self._captions[row]

    def get(self, name: str, row: int, v: int) -> torch.Tensor:
        return self.f.get_slice(name)[row : row + 1, v : v + 1][0, 0]

    def label(self, row: int) -> int:
        return int(self.f.get_slice("labels")[row : row + 1][0])


def measure_channels(root: str | os.PathLike) -> dict:
    """Per-channel mean and std of the latents training draws from the cache at `root`.

    Of the draws z = mean + std * eps (over every image and its flip), not of the posterior means:
    the draws are what the network sees, and their variance is Var[mean] + E[std^2]. Both moments
    follow exactly from the stored moments (eps has zero mean and unit variance), so no noise is
    drawn. float64 throughout, STATS_ROWS images at a time, merged with Chan et al.'s parallel update
    (a streaming two-moment Welford), so ImageNet at 512 px fits in memory and loses no precision."""
    root = Path(root)
    index = json.loads((root / INDEX).read_text())
    channels = index["latent_shape"][0]
    count = 0
    mu, m2, sq_std = (torch.zeros(channels, dtype=torch.float64) for _ in range(3))
    for means, stds in _moment_blocks(root, index):  # (n, 2, C, h, w) each; h, w may differ between chunks
        m = means.double().movedim(2, 0).reshape(channels, -1)
        sq_std += stds.double().movedim(2, 0).reshape(channels, -1).square().sum(1)
        k, mu_k = m.shape[1], m.mean(1)
        delta, total = mu_k - mu, count + k
        m2 += (m - mu_k[:, None]).square().sum(1) + delta.square() * (count * k / total)
        mu += delta * (k / total)
        count = total
    std = ((m2 + sq_std) / count).sqrt()
    return {NORM_KEYS[0]: mu.tolist(), NORM_KEYS[1]: std.tolist(), "values_per_channel": count,
            "of": "draws z = mean + std * eps of q(z|x), every image and its flip, as training reads them"}


def _moment_blocks(root: Path, index: dict):
    """(means, stds) of at most STATS_ROWS rows at a time, chunk by chunk."""
    for c in index["chunks"]:
        path = root / c["name"]
        if path.suffix == ".tar":
            from dit.data.latent_shards import ShardChunk

            shard = ShardChunk(path)
            for a in range(0, c["rows"], STATS_ROWS):
                rows = range(a, min(a + STATS_ROWS, c["rows"]))
                yield tuple(torch.stack([shard.get(n, r) for r in rows]) for n in MOMENTS)  # (n, 2, C, h, w)
            continue
        with safe_open(str(path), "pt") as f:
            means, stds = f.get_slice("mean"), f.get_slice("std")
            for a in range(0, c["rows"], STATS_ROWS):
                yield means[a : a + STATS_ROWS], stds[a : a + STATS_ROWS]


def write_stats(root: str | os.PathLike) -> dict:
    """Measure the statistics of a finished cache and write them to stats.json (atomically); returns them."""
    root = Path(root)
    if LatentCache(root).tokens:  # refuses an unfinished or damaged cache before reading it all
        raise UserError(f"{root} is a cache of token ids (a VQ tokenizer's): ids have no per-channel statistics")
    stats = {**measure_channels(root), "chunks": json.loads((root / INDEX).read_text())["chunks"]}
    ChannelNorm.from_meta(stats)  # a channel with zero spread cannot be normalised: say so now, not at training
    write_json(root / STATS, stats)
    return stats


def stats_current(root: str | os.PathLike) -> bool:
    try:
        LatentCache(root).read_channel_norm()
        return True
    except UserError:
        return False
