"""Loader throughput of every --data layout, and the training step with aspect-ratio buckets. Run it ALONE.

    python benchmarks/data_loaders/data_loaders.py --out benchmarks/data_loaders
    python benchmarks/data_loaders/data_loaders.py --out benchmarks/data_loaders --report

The same --images JPEG photos-like images (random sizes, aspect ratios 1:2 to 2:1, four classes) are
written as each layout train.py reads (<out>/runs/data, git-ignored): class folders, a Hugging Face
save_to_disk dataset and parquet file, WebDataset tar shards, and a latent cache (cache_latents.py
through a small random diffusers AutoencoderKL: its cost is what reading a cache costs, whatever the
VAE), as safetensors chunks and as WebDataset shards (--out-format webdataset). `--sources` times only
those layouts (their rows are appended; the training rows are left as they are). Each source is read through train.py's own stream (dit/data/stream.py: TrainingItems, the
position-keyed batches, the DataLoader with --num-workers), --batches global batches of --batch at
--image-size; every batch's seconds are a row's `seconds`, images/s is the batch over their median
with a 95% bootstrap interval. Then train.py runs --steps steps of a small DiT on the folder with
square crops and with --buckets auto; its seconds per step (median over the steps after the first few)
come from each run's metrics.jsonl.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

from dit.cli import ArgumentParser, positive, run_cli
from dit.eval.records import ResultsLog, existing_log
from dit.eval.tables import benchmark_module

SOURCES = ("folder", "hf-disk", "hf-parquet", "shards", "latent-cache", "latent-shards")
CLASSES = ("a", "b", "c", "d")


def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/data_loaders")
    p.add_argument("--images", type=positive(), default=1024)
    p.add_argument("--image-size", type=positive(), default=64)
    p.add_argument("--batch", type=positive(), default=32)
    p.add_argument("--batches", type=positive(), default=24)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--steps", type=positive(), default=30, help="train.py steps per bucket setting")
    p.add_argument("--sources", nargs="+", choices=SOURCES, help="time only these layouts (default: all, and training)")
    p.add_argument("--report", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    tables = benchmark_module("data_loaders", "tables")
    if args.report:
        existing_log(out)
        print(tables.tables(out)["loaders"])
        return
    log = ResultsLog(out / "results.jsonl", quiet_keys=("seconds",))
    data = make_data(out / "runs" / "data", args)
    for source in args.sources or SOURCES:
        log.add(kind="loader", source=source, **time_source(source, data, args))
    for buckets in ("", "auto") if args.sources is None else ():
        log.add(kind="train", buckets=buckets or "none", **time_training(out / "runs", data["folder"], buckets, args))
    print(tables.tables(out)["loaders"])


def make_data(root: Path, args) -> dict:
    """Every layout of the same images (written once; a rerun reuses them)."""
    from PIL import Image

    folder = root / "folder"
    if not folder.is_dir():
        rng = np.random.default_rng(0)
        for i in range(args.images):
            ratio = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
            h = int(rng.integers(96, 161))
            w = int(round(h * ratio))
            img = (rng.random((h // 8, w // 8, 3)) * 255).astype(np.uint8)  # blocky: compresses like a photo, decodes real
            (folder / CLASSES[i % 4]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).resize((w, h), Image.BICUBIC).save(folder / CLASSES[i % 4] / f"{i:05d}.jpg", quality=90)
    files = sorted(folder.rglob("*.jpg"))
    out = {"folder": folder, "hf-disk": root / "hf-disk", "hf-parquet": root / "data.parquet", "shards": root / "shards",
           "latent-cache": root / "latent-cache", "latent-shards": root / "latent-shards", "vae": root / "vae"}
    if not out["hf-disk"].is_dir():
        import datasets

        ds = datasets.Dataset.from_dict({"image": [str(f) for f in files], "label": [CLASSES.index(f.parent.name) for f in files]},
                                        features=datasets.Features({"image": datasets.Image(),
                                                                    "label": datasets.ClassLabel(names=list(CLASSES))}))
        ds = ds.map(lambda r: r)  # embed the image bytes (not paths) in the arrow table
        ds.save_to_disk(str(out["hf-disk"]))
        ds.to_parquet(str(out["hf-parquet"]))
    if not out["shards"].is_dir():
        out["shards"].mkdir()
        for s in range(0, len(files), 256):
            with tarfile.open(out["shards"] / f"train-{s // 256:03d}.tar", "w") as tar:
                for f in files[s:s + 256]:
                    for ext, payload in (("jpg", f.read_bytes()), ("cls", str(CLASSES.index(f.parent.name)).encode())):
                        info = tarfile.TarInfo(f"{f.stem}.{ext}")
                        info.size = len(payload)
                        tar.addfile(info, io.BytesIO(payload))
    if not (out["vae"] / "config.json").is_file():
        import torch
        from diffusers import AutoencoderKL

        torch.manual_seed(0)
        AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8),
                      layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * 4,
                      up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=4).save_pretrained(out["vae"])
    for name, fmt in (("latent-cache", "safetensors"), ("latent-shards", "webdataset")):
        if not (out[name] / "index.json").is_file():
            cmd = [sys.executable, str(ROOT / "cache_latents.py"), "--data", str(folder), "--out", str(out[name]),
                   "--vae", str(out["vae"]), "--image-size", str(args.image_size), "--no-progress", "--device", "cpu",
                   "--out-format", fmt]
            subprocess.run(cmd, check=True, cwd=ROOT)
    return out


def base_of(source: str, data: dict, args):
    from dit.data.sources import Images

    if source == "folder":
        from dit.data.folders import ImageFolderDataset

        return Images(ImageFolderDataset(data["folder"], args.image_size), args.image_size, None, True)
    if source.startswith("hf-"):
        from dit.data.hf import HFImages, load_hf

        kind = source[3:]
        ds = load_hf(str(data[source]), "disk" if kind == "disk" else "parquet")
        return Images(HFImages(ds, source=source), args.image_size, None, True)
    if source == "shards":
        from dit.data.webdataset import ShardImages, shard_paths

        return Images(ShardImages(shard_paths(str(data["shards"])), data["shards"].parent / "cache"), args.image_size,
                      None, True)
    from dit.data.latent_cache import LatentCache

    return LatentCache(data[source], flip=True)


def time_source(source: str, data: dict, args) -> dict:
    """Seconds per global batch read through train.py's stream and DataLoader."""
    from dit.data.stream import StreamBatches, TrainingItems, make_loader
    from dit.processes.gaussian import GaussianDiffusion

    base = base_of(source, data, args)
    process = GaussianDiffusion.from_schedule()
    shape = tuple(base.latent_shape) if source.startswith("latent-") else (3, args.image_size, args.image_size)
    items = TrainingItems(base, 0, process, 0.1, shape)
    batches = StreamBatches(len(base), args.batch, 1, 0, 1, seed=0)
    stream = make_loader(items, batches, args.num_workers, pin_memory=False)
    next(stream)  # workers started, first files opened
    seconds = []
    for _ in range(args.batches):
        t0 = time.perf_counter()
        next(stream)
        seconds.append(time.perf_counter() - t0)
    return {"images": len(base), "batch": args.batch, "image_size": args.image_size, "num_workers": args.num_workers,
            "seconds": seconds}


def time_training(runs: Path, folder: Path, buckets: str, args) -> dict:
    import shutil

    name = f"train-buckets-{buckets or 'none'}"
    shutil.rmtree(runs / name, ignore_errors=True)  # a finished run would only be resumed: its old times re-read
    cmd = [sys.executable, str(ROOT / "train.py"), "cpu-demo", "--data", str(folder), "--image-size", str(args.image_size),
           "--model", "DiT-S/4", "--hidden-size", "64", "--depth", "2", "--num-heads", "2", "--global-batch-size",
           str(args.batch), "--max-steps", str(args.steps), "--log-every", "1", "--num-workers", str(args.num_workers),
           "--results-dir", str(runs), "--run-name", name, "--no-progress", "--sample-every", "0", "--ckpt-every",
           str(10 * args.steps), "--unconditional", *(["--buckets", buckets] if buckets else [])]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in (runs / name / "metrics.jsonl").read_text().splitlines()]
    per_step = [1 / r["steps_per_s"] for r in rows if "steps_per_s" in r][3:]  # the first steps warm up
    return {"steps": args.steps, "batch": args.batch, "image_size": args.image_size, "seconds": per_step}


if __name__ == "__main__":
    sys.exit(run_cli(main))
