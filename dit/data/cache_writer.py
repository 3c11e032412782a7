"""Writing a latent cache (dit/data/latent_cache.py): any source of images (dit/data/sources.py: a folder,
a Hugging Face dataset, WebDataset shards) encoded once through the autoencoder, in chunks.

The chunks are planned the same way on every process: the source's order, grouped by bucket when
there are buckets (each image's from its header, dit/data/buckets.py), each group cut into chunks of
at most `chunk_size` images of one size. Chunk k is encoded by process k mod P, so processes never
write the same file; a re-run skips the chunks already present and checks them, so a killed or
damaged cache is repaired by re-running the same command.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from dit.data.latent_cache import (DTYPES, INDEX, SETTINGS, chunk_name, ids_dtype, read_chunk_header,
                                   stats_current, write_chunk, write_stats)
from dit.errors import UserError
from dit.io.atomic import write_json


class _Rows(torch.utils.data.Dataset):
    """Images `indices` of a source at one size, for encoding: (image or None if unreadable, label, index, name,
    caption or None: read only with `captions`)."""

    def __init__(self, source, indices: list[int], size: tuple[int, int], captions: bool = False):
        self.source, self.indices, self.size, self.captions = source, indices, size, captions

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        from dit.data.folders import to_tensor

        index = self.indices[i]
        img = self.source.image(index)  # None for a corrupt or unreadable file (counted, not fatal)
        label = self.source.label(index)
        text = self.source.caption(index) if self.captions else None
        if self.captions and text is None:
            raise UserError(f"{self.source.name(index)} has no caption; --captions stores one per image")
        if img is None:
            return None, label, index, self.source.name(index), text
        return to_tensor(img, *self.size), label, index, self.source.name(index), text


def _collate(items):
    good = [it for it in items if it[0] is not None]
    bad = [it[3] for it in items if it[0] is None]
    if not good:
        return None, None, None, bad, []
    return (torch.stack([it[0] for it in good]), torch.tensor([it[1] for it in good]),
            torch.tensor([it[2] for it in good]), bad, [it[4] for it in good])


def plan_chunks(source, size: tuple[int, int], buckets: list[tuple[int, int]] | None,
                chunk_size: int) -> list[tuple[int | None, list[int]]]:
    """[(bucket or None, source indices)] per chunk, the same on every process."""
    if not buckets:
        groups = [(None, list(range(len(source))))]
    else:
        from dit.data.buckets import assign_buckets

        bucket_of = assign_buckets(source, buckets, size)
        groups = [(k, [i for i, b in enumerate(bucket_of) if b == k]) for k in range(len(buckets))]
    return [(k, rows[a:a + chunk_size]) for k, rows in groups for a in range(0, len(rows), chunk_size)]


def build_cache(source, data: str, out: str, size: tuple[int, int], vae, state, batch_size: int = 64,
                chunk_size: int = 10_000, dtype: str = "float16", num_workers: int = 4, progress: bool = True,
                buckets: list[tuple[int, int]] | None = None, fmt: str = "safetensors", captions: bool = False,
                text_encoder: str = "", text_length: int = 0) -> dict:
    """Encode `source` (what --data `data` names) into cache `out` at `size` (height, width), or each
    image at its bucket's size; chunk k by process k mod P. Returns the index. `captions`: keep each image's
    caption (the source's `caption(index)`) in its chunk, for a text-to-image DiT; `text_encoder` (a local
    transformers encoder directory, dit/networks/frozen_text.py): also its features of each caption over
    `text_length` tokens, as PixArt-α caches T5's (`text_features`).

    `vae` is a loaded dit.autoencoders.base.Autoencoder (not the identity); `state` an accelerate PartialState.
    """
    import warnings

    from tqdm import tqdm

    if vae.identity:
        raise UserError(f"--vae {vae.name}: pixel-space training reads the image folder directly, there is nothing to "
                        "cache")
    if dtype not in DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    tokens = not vae.has_moments  # the ids of encode() are stored instead (a tokenizer's codes have no posterior)
    if tokens:  # ids are integers: --dtype (of the moments) does not apply
        dtype = ids_dtype(vae.codebook_size)
    if fmt == "webdataset" and text_encoder:
        raise UserError("--text-encoder: its features are stored in safetensors chunks; drop --out-format webdataset")
    if text_encoder and not captions:
        raise UserError("--text-encoder encodes the captions: add --captions")
    if fmt == "webdataset" and dtype == "bfloat16":
        raise UserError("--out-format webdataset stores .npy arrays, which have no bfloat16: pass --dtype float16")
    store = getattr(torch, dtype) if tokens else DTYPES[dtype]
    out = Path(out)
    local = Path(data).exists()
    # Keys only where they differ from a cache written before they existed: re-running its command resumes it.
    settings = {"data": str(Path(data).resolve()) if local else data, "files": len(source), "image_size": size[0],
                **({"image_width": size[1]} if size[1] != size[0] else {}),
                **({"buckets": [list(b) for b in buckets]} if buckets else {}), **vae.describe(),
                "dtype": dtype, "chunk_size": chunk_size, **({"format": fmt} if fmt != "safetensors" else {}),
                **({"captions": True} if captions else {}), **_encoder_settings(text_encoder, text_length)}
    if state.is_main_process:
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} exists and is not a directory")
        if (out / SETTINGS).is_file():
            old = json.loads((out / SETTINGS).read_text())
            if old != settings:
                diff = sorted(k for k in {*settings, *old} if old.get(k) != settings.get(k))
                raise UserError(f"{out} holds a cache made with other settings ({', '.join(diff)}); use another --out "
                                "or the same arguments")
        elif out.is_dir() and any(out.iterdir()):
            raise UserError(f"--out {out} is a non-empty directory that is not a latent cache; choose a new directory")
    plan = plan_chunks(source, size, buckets, chunk_size)  # before anything is written: a bucket refusal writes nothing
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / SETTINGS, settings)
    state.wait_for_everyone()

    todo = []
    for k in range(state.process_index, len(plan), state.num_processes):
        try:
            if read_chunk_header(out / chunk_name(k, fmt))["captions"] != captions:
                todo.append(k)
        except (FileNotFoundError, UserError):  # missing or damaged: encode it (again)
            todo.append(k)
    for k in tqdm(todo, desc=f"encoding chunks (process {state.process_index})", disable=not progress):
        bucket, rows = plan[k]
        loader = torch.utils.data.DataLoader(_Rows(source, rows, size if bucket is None else buckets[bucket], captions),
                                             batch_size=batch_size, num_workers=num_workers, collate_fn=_collate)
        parts, labels, indices, skipped, texts = {}, [], [], [], []  # name -> per-batch (b, 2, ...): image and flip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unreadable files are counted and listed instead
            for x, y, idx, bad, text in loader:
                skipped += bad
                texts += text
                if x is None:
                    continue
                x = x.to(state.device)
                if tokens:  # the nearest codes of the image and of the flipped image
                    encoded = {"ids": [vae.encode(x), vae.encode(x.flip(-1))]}
                else:
                    (m0, s0), (m1, s1) = vae.encode_moments(x), vae.encode_moments(x.flip(-1))
                    encoded = {"mean": [m0, m1], "std": [s0, s1]}
                for name, pair in encoded.items():
                    parts.setdefault(name, []).append(torch.stack(pair, 1).cpu())
                labels.append(y)
                indices.append(idx)
        if not labels:
            raise UserError(f"none of the {len(rows)} images of chunk {k} could be read")
        data = {name: torch.cat(v) for name, v in parts.items()}
        write_chunk(out / chunk_name(k, fmt), data.get("mean"), data.get("std"), torch.cat(labels),
                    torch.cat(indices), skipped, store, ids=data.get("ids"), captions=texts if captions else None,
                    text=text_features(text_encoder, text_length, texts, store) if text_encoder else None)
    state.wait_for_everyone()

    index = None
    if state.is_main_process:
        index = _write_index(out, source, plan, size, buckets, vae, fmt, settings)
    state.wait_for_everyone()
    # After the last barrier: the other processes may finish while the main one reads the whole cache.
    if state.is_main_process and not tokens and not stats_current(out):
        write_stats(out)
    return index


def _encoder_settings(text_encoder: str, text_length: int) -> dict:
    """settings.json's record of the frozen encoder whose features the chunks hold (nothing without one)."""
    if not text_encoder:
        return {}
    from dit.networks.frozen_text import describe_encoder

    return {"text_encoder": text_encoder, "text_encoder_sha256": describe_encoder(text_encoder)["text_encoder_sha256"],
            "text_length": text_length}


def text_features(text_encoder: str, text_length: int, texts: list[str], dtype: torch.dtype,
                  batch: int = 256) -> dict[str, torch.Tensor]:
    """A chunk's captions through the frozen encoder: token ids (n, S) int32, mask (n, S) uint8 and features
    (n, S, D) as `dtype`, zero at padding (latent_cache.TEXT_KEYS)."""
    from dit.networks.frozen_text import frozen_encoder

    encoder = frozen_encoder(text_encoder, text_length)
    ids, mask = encoder.encode(texts)
    features = torch.cat([encoder.features(ids[a:a + batch], mask[a:a + batch]) for a in range(0, len(texts), batch)])
    return {"text_ids": ids.int(), "text_mask": mask.to(torch.uint8), "text_features": features.to(dtype)}


def _write_index(out: Path, source, plan, size, buckets, vae, fmt: str, settings: dict) -> dict:
    """index.json, written last: the cache is complete once it exists."""
    chunks, skipped = [], []
    for k, (bucket, _) in enumerate(plan):
        header = read_chunk_header(out / chunk_name(k, fmt))
        chunks.append({"name": chunk_name(k, fmt), "rows": header["rows"],
                       **({"bucket": bucket} if bucket is not None else {})})
        skipped += header["skipped"]
    index = {"settings": settings, "chunks": chunks, "class_names": source.class_names,
             "latent_shape": list(vae.latent_shape(*size)), "images": sum(c["rows"] for c in chunks),
             "skipped": skipped}
    if buckets:
        index["buckets"] = [list(b) for b in buckets]
        index["bucket_shapes"] = [list(vae.latent_shape(*b)) for b in buckets]
    write_json(out / INDEX, index)
    return index

