"""segment.py's driver: EmerDiff segmentation (dit/segmentation/) of an image folder or of the built-in shapes.

`load_segmenter` reads a checkpoint once and refuses what EmerDiff cannot segment with; `settings` turns
the flags into checked Settings; `segment_folder` and `segment_shapes` write label maps and overlays (and,
for the shapes, the images, their truths and the mIoU).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from dit.autoencoders.pixels import to_uint8
from dit.autoencoders import DEFAULT_VAE, ChannelNorm, load_autoencoder
from dit.errors import UserError
from dit.io.checkpoint import instantiate, load_weights
from dit.io.images import save_png
from dit.networks import GENERATOR, get_architecture
from dit.networks.base import PatchAttention, supports
from dit.processes import process_from_meta
from dit.segmentation import Settings, image_seeds, segment
from dit.segmentation.features import num_tokens
from dit.segmentation.files import labels_at, read_image, read_original, write_outputs
from dit.segmentation.inversion import check_time, time_range
from dit.segmentation.scores import score
from dit.segmentation.truth import SEED, shapes_with_truth


def load_segmenter(ckpt_path: str, device):
    """Network, process and autoencoder of --ckpt, refused unless EmerDiff can segment with it: a
    generator with patch-token attention blocks (networks/base.py PatchAttention) of a process that
    declares its marginal (deterministic inversion)."""
    ckpt = load_weights(ckpt_path)
    role = get_architecture(ckpt.arch).role  # an unknown key: one line listing the known ones
    if role != GENERATOR:
        raise UserError(f"{ckpt_path} holds a {role} ({ckpt.arch}), not a generator: segment.py needs an image DiT")
    process = process_from_meta(ckpt.meta)
    time_range(process)  # a process without a marginal is refused in one line
    model = instantiate(ckpt, None, device).requires_grad_(False)
    if not supports(model, PatchAttention):
        raise UserError(f"{ckpt_path} holds a {ckpt.arch!r} network: segment.py needs an image DiT (a network with "
                        "patch-token attention blocks)")
    vae = load_autoencoder(ckpt.meta.get("vae") or DEFAULT_VAE, device).with_norm(ChannelNorm.from_meta(ckpt.meta))
    if vae.latent_channels != model.in_channels:
        raise UserError(f"the VAE gives {vae.latent_channels}-channel inputs but the model takes {model.in_channels}")
    return model, process, vae


def settings(args, model, process) -> Settings:
    """The flags as Settings, every index and time checked against the network and process."""
    depth = len(model.blocks)
    for flag in ("block", "feature_block"):
        b = getattr(args, flag)
        if b is not None and not -depth <= b < depth:
            raise UserError(f"--{flag.replace('_', '-')} {b} is out of range: the network has {depth} blocks "
                            f"(0..{depth - 1}, or -{depth}..-1 from the end)")
    if args.k > num_tokens(model):
        raise UserError(f"--k {args.k} is more than the {num_tokens(model)} tokens of an image")
    s = Settings(k=args.k, feature=args.feature, feature_block=args.feature_block, feature_t=args.feature_t,
                 block=args.block, t_m=args.t_m, lam=args.lam, steps=args.steps, blur=args.blur,
                 direction=args.direction, seed=args.seed).resolve(model, process)
    check_time(process, s.t_m, "--t-m")
    check_time(process, s.feature_t, "--feature-t")
    return s


def segment_folder(model, process, vae, files, s, side, out, batch_size: int, device, show: bool = True):
    """Label maps (one channel, each image's own size) and overlays of every image in `files`."""
    for a in tqdm(range(0, len(files), batch_size), desc="segmenting", disable=not show):
        batch = files[a : a + batch_size]
        images, sizes = zip(*(read_image(f, side) for f in batch))
        seg = segment(model, process, vae, torch.stack(images).to(device), s,
                      image_seeds(s.seed, range(a, a + len(batch))))
        for f, size, scores in zip(batch, sizes, seg.scores.cpu()):
            write_outputs(out, f.stem, read_original(f), labels_at(scores, size))
    print(f"wrote {len(files)} label maps (values 0..{s.k - 1}) and overlays to {out}")


def segment_shapes(model, process, vae, n: int, s, side, out, batch_size: int, device, show: bool = True):
    """Segment `n` built-in shapes images (held out from training: a fixed seed) and score them against the
    renderer's coverage masks: writes the images, truths, label maps and overlays, prints binary mIoU."""
    images, truth, _ = shapes_with_truth(n, side, SEED)
    coarse, refined = [], []
    for a in tqdm(range(0, n, batch_size), desc="segmenting", disable=not show):
        b = min(a + batch_size, n)
        seg = segment(model, process, vae, images[a:b].to(device), s, image_seeds(s.seed, range(a, b)))
        coarse.append(seg.coarse_up("nearest").cpu())
        refined.append(seg.labels.cpu())
        pixels = to_uint8(images[a:b])
        for i, labels in zip(range(a, b), seg.labels.cpu()):
            stem = f"shape_{i:05d}"
            write_outputs(out, stem, pixels[i - a], labels.to(torch.uint8).numpy())
            save_png(pixels[i - a], out / f"{stem}_image.png")
            save_png((truth[i].numpy()[..., None] * np.uint8(255)).astype(np.uint8), out / f"{stem}_truth.png")
    low, high = score(torch.cat(coarse), truth, s.k), score(torch.cat(refined), truth, s.k)
    print(f"wrote {n} label maps (values 0..{s.k - 1}), overlays, images and truths to {out}")
    print(f"binary mIoU against the coverage masks: coarse (nearest) {low['miou'].mean():.3f}, "
          f"refined {high['miou'].mean():.3f}")
