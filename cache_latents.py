"""Encode a dataset once through the VAE, for training from latents (dit/data/latent_cache.py).

    python cache_latents.py --data /imagenet/train --out /data/imagenet256-latents --image-size 256
    accelerate launch --num_processes 8 cache_latents.py --data ... --out ...   # split over GPUs

Then: `accelerate launch train.py imagenet-256 --data /data/imagenet256-latents`.
--data is anything train.py reads as images: a folder (class sub-directories, or flat: unlabelled), a
Hugging Face dataset (metadata.jsonl folder, save_to_disk folder, parquet, hub id; --dataset-split,
--image-column, --label-column) or WebDataset shards of images. Other sizes and aspect ratios:
    python cache_latents.py --data DIR --out CACHE --image-size 256 384            # one 256x384 size
    python cache_latents.py --data DIR --out CACHE --image-size 256 --buckets auto  # each image in its bucket
A bucketed cache trains with its buckets (train.py needs no --buckets). `--out-format webdataset`
writes the chunks as WebDataset tar shards (dit/data/latent_shards.py) for data spread over nodes;
train.py reads them as it reads the default safetensors chunks.
Through a VQ tokenizer (a train_vq.py run as --vae) the cache holds token ids (of each image and its
flip) instead of posterior moments, for `train.py vq-diffusion-cpu --data CACHE --vae TOKENIZER_DIR`:
    python cache_latents.py --data /data/shapes --out /data/shapes-ids --image-size 16 --vae results/vq-cpu
With --captions each image's caption is kept beside its latents (a Hugging Face dataset's --caption-column,
default text; shards' .txt or json caption), for `train.py --arch text-dit --data CACHE`:
    python cache_latents.py --data DIR_WITH_METADATA_JSONL --out CACHE --image-size 256 --captions
and with a frozen encoder's features of each caption (PixArt-α's T5 cache), read by `train.py --arch text-dit
--text-encoder T5_DIR --text-length 120 --data CACHE`:
    python cache_latents.py --data DIR --out CACHE --captions --text-encoder T5_DIR --text-length 120
Re-running the same command resumes an interrupted run and repairs missing or damaged chunks.
A finished cache also gets its per-channel latent statistics (stats.json, for `--latent-norm
channel`); for a cache written before they existed, measure them without re-encoding:
    python cache_latents.py --stats-only --out /data/imagenet256-latents
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from dit.dist import check_world, force_cpu
from dit.cli import ArgumentParser, image_hw, image_size_token, positive, run_cli
from dit.errors import UserError
from dit.data.latent_cache import DTYPES, FORMATS, LatentCache, is_cache, write_stats
from dit.autoencoders import DEFAULT_VAE, load_autoencoder
from dit.networks.text_config import TextSection


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", help="images: a folder (<root>/<class>/<image>, or flat), a Hugging Face dataset or "
                                  "WebDataset shards (required unless --stats-only)")
    p.add_argument("--out", required=True, help="cache directory to create (or to resume)")
    p.add_argument("--image-size", type=image_size_token, nargs="+", default=[(256,)], metavar="H[xW]",
                   help="height x width: 256, 256x384 or 256 384 (with --buckets: the pixel count of the buckets)")
    p.add_argument("--buckets", default="", help="aspect-ratio buckets: auto, or sizes HxW,HxW (dit/data/buckets.py)")
    p.add_argument("--patch", type=positive(), default=2, help="with --buckets: the patch of the model to train (every "
                                                               "bucket a multiple of the VAE's factor x the patch)")
    p.add_argument("--out-format", choices=list(FORMATS), default="safetensors",
                   help="chunk files: safetensors, or WebDataset tar shards")
    p.add_argument("--dataset-split", default="train", help="a Hugging Face dataset's split")
    p.add_argument("--image-column", default="image", help="a Hugging Face dataset's image column")
    p.add_argument("--captions", action="store_true", help="keep each image's caption beside its latents, for train.py "
                   "--arch text-dit: a Hugging Face dataset's --caption-column, shards' .txt or json caption")
    p.add_argument("--caption-column", default="", help="with --captions: a Hugging Face dataset's caption column "
                   "(default text)")
    p.add_argument("--text-encoder", default="", help="with --captions: a local transformers text encoder directory "
                   "(CLIP text model, T5 encoder) whose features of each caption are stored too, for train.py "
                   "--text-encoder with the same directory")
    p.add_argument("--text-length", type=positive(), default=TextSection.text_length,
                   help="with --text-encoder: tokens a caption is padded or cut to (train.py --text-length)")
    p.add_argument("--label-column", default="", help="a Hugging Face dataset's label column (default: label, "
                                                       "where present; none: unlabelled)")
    p.add_argument("--vae", default=DEFAULT_VAE, help="ema, mse, a hub id, a local diffusers AutoencoderKL directory, "
                                                     "or a VQ tokenizer (train_vq.py run): token ids")
    p.add_argument("--batch-size", type=positive(), default=64, help="per process")
    p.add_argument("--chunk-size", type=positive(), default=10_000, help="images per chunk file")
    p.add_argument("--dtype", choices=list(DTYPES), help="storage type of the moments (default float16; a "
                                                          "tokenizer's ids are int16, or int32 for K > 32767)")
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--stats-only", action="store_true",
                   help="(re)measure the per-channel statistics of the finished cache --out; encode nothing")
    args = p.parse_args(argv)
    if args.stats_only:
        if not is_cache(args.out):
            raise UserError(f"--stats-only: --out {args.out} is not a latent cache; write one with cache_latents.py "
                            "--data ... --out ...")
        return args
    if args.data is None:
        raise UserError("--data is required (an ImageFolder root to encode), unless --stats-only")
    if args.caption_column and not args.captions:
        raise UserError(f"--caption-column {args.caption_column}: add --captions to store the captions")
    if args.text_encoder and not args.captions:
        raise UserError(f"--text-encoder {args.text_encoder} encodes the captions: add --captions")
    if args.text_encoder and args.out_format == "webdataset":
        raise UserError("--text-encoder: its features are stored in safetensors chunks; drop --out-format webdataset")
    if args.text_encoder:
        from dit.networks.frozen_text import describe_encoder

        describe_encoder(args.text_encoder)  # a transformers text encoder with safetensors and a tokenizer, or one line
    if args.num_workers < 0:
        raise UserError(f"--num-workers must be >= 0, got {args.num_workers}")
    args.image_hw = image_hw(args.image_size)
    # Cheap checks before the (possibly absent) VAE is sought.
    from dit.data.sources import check_data_path

    check_data_path(args.data)
    if is_cache(args.data):
        raise UserError(f"--data {args.data} is a latent cache already; give the images it was encoded from")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out {args.out} is a file; give a directory for the cache")
    return args


def print_stats(out) -> None:
    norm = LatentCache(out).read_channel_norm()
    print(f"per-channel latent statistics of {out} (for train.py --latent-norm channel): mean "
          f"{[round(v, 4) for v in norm.mean]}, std {[round(v, 4) for v in norm.std]}")


def main(argv=None):
    args = parse_args(argv)
    if args.stats_only:
        write_stats(args.out)
        return print_stats(args.out)
    from accelerate import PartialState

    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda, but no CUDA device is visible; use --device auto or cpu")
    state = PartialState(cpu=force_cpu(args.device == "cpu"))
    check_world(state)
    vae = load_autoencoder(args.vae, state.device)
    if vae.identity:
        raise UserError(f"--vae {args.vae}: pixel-space training reads the image folder directly, there is nothing "
                        "to cache")
    vae.latent_shape(*args.image_hw)  # the VAE's factor must divide the image size
    tokens = not vae.has_moments  # the cache holds encode()'s ids, not posterior moments
    if tokens and args.dtype is not None:
        raise UserError(f"--dtype: {args.vae} is a VQ tokenizer, whose ids are stored as integers; drop --dtype")
    buckets = None
    if args.buckets:  # every bucket whole patches of latents (train.py checks it against its network)
        from dit.data.buckets import parse_buckets

        buckets = parse_buckets(args.buckets, args.image_hw, vae.downsample * args.patch)
    from dit.data.cache_writer import build_cache
    from dit.data.sources import open_source

    from dit.training.captions import DEFAULT_CAPTION_COLUMN

    source = open_source(args.data, None, args.dataset_split, args.image_column, args.label_column,
                         (args.caption_column or DEFAULT_CAPTION_COLUMN) if args.captions else "")
    index = build_cache(source, args.data, args.out, args.image_hw, vae, state, args.batch_size, args.chunk_size,
                        args.dtype or "float16", args.num_workers,
                        progress=state.is_main_process and not args.no_progress, buckets=buckets,
                        fmt=args.out_format, captions=args.captions, text_encoder=args.text_encoder,
                        text_length=args.text_length)
    if state.is_main_process:
        what = f"token ids (K = {vae.codebook_size})" if tokens else "latents"
        sizes = (f"{len(index['buckets'])} buckets" if "buckets" in index
                 else "x".join(map(str, index["latent_shape"])))
        print(f"wrote {args.out}: {index['images']} images in {len(index['chunks'])} chunks, {what} "
              f"{sizes}; skipped {len(index['skipped'])} unreadable files"
              + (f" (e.g. {index['skipped'][0]})" if index["skipped"] else ""))
        if not tokens:
            print_stats(args.out)


if __name__ == "__main__":
    sys.exit(run_cli(main))
