"""Completing given clips (sample.py --video-in): VDT's prediction, backward prediction, interpolation,
animation and spatial in-painting with one model; the mask says which (dit/data/video_masks.py's
`completion` builds it, dit/layout.py owns the GIVEN/CLEAN keys).

Clips are uint8 (N, F, H, W, 3) outside, as in dit/io/video.py. Clip i uses seed spec.seed + i and its
own label (a file without labels: the null class, i.e. unconditional). The given pixels of the output
are the input's byte for byte: a VAE's round trip is not exact, so they are copied back after decoding.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from dit.autoencoders.pixels import from_uint8
from dit.data.video_masks import completion
from dit.errors import UserError
from dit.io.video import read_clip_npz
from dit.pipelines.images import check_labels, report
from dit.pipelines.pipeline import Pipeline
from dit.pipelines.spec import SamplingSpec


def check_clips(clips: np.ndarray, path: str, model_frames: int, side: int, downsample: int) -> None:
    """The clips fit the network: square frames of its size (through the VAE), at most its F frames
    (the temporal table covers any shorter clip)."""
    n, frames, h, w, _ = clips.shape
    px = side * downsample
    if n == 0 or frames == 0:
        raise UserError(f"--video-in {path} holds no clips or no frames ({n} clips of {frames} frames)")
    if frames > model_frames or h != w or h != px:
        raise UserError(f"--video-in {path} holds {frames}-frame {h}x{w} clips; this checkpoint completes clips of "
                        f"at most {model_frames} frames of {px}x{px} px")


def complete_clips(clips: np.ndarray, labels: np.ndarray, mask: np.ndarray, keep: np.ndarray, vae, generate,
                   batch_size: int, device, show: bool = True) -> np.ndarray:
    """The completed clips, uint8 (N, F, H, W, 3). mask: (F, 1, side, side), 1 = given, in the
    network's input space; keep: the pixels copied from the input (broadcasts over (F, H, W, 3));
    generate(indices, labels, given) draws sample i from its own seed with the positions of
    given = (mask, clean) held exactly (dit.sampling.generate.generate_images)."""
    mask = torch.from_numpy(mask)
    out = []
    for a in tqdm(range(0, len(clips), batch_size), desc="completing", disable=not show):
        b = min(a + batch_size, len(clips))
        pixels = from_uint8(torch.from_numpy(clips[a:b]).permute(0, 1, 4, 2, 3)).to(device)  # (B, F, 3, H, W)
        clean = vae.encode_moments(pixels)[0]  # the posterior mean: given frames are not resampled
        done = generate(range(a, b), labels[a:b], (mask.expand(b - a, *mask.shape), clean))
        out.append(np.where(keep, clips[a:b], done))
    return np.concatenate(out)


def complete(pipe: Pipeline, spec: SamplingSpec, batch_size: int, device, show: bool = True):
    """The clips of spec.video_in completed from spec.given_frames (or around spec.inpaint_box):
    (clips uint8 NFHWC, their labels (the null class where the file has none), what was given in words)."""
    clips, labels = read_clip_npz(spec.video_in)
    max_frames, _, side, _ = pipe.network.input_shape
    downsample = pipe.autoencoder.downsample
    check_clips(clips, spec.video_in, max_frames, side, downsample)
    n, frames, h = clips.shape[:3]
    task = completion(spec.given_frames, spec.inpaint_box, frames, h, side, downsample)
    if labels is None:
        labels = np.full(n, pipe.network.null_class)
        print(f"{spec.video_in} has no labels (arr_1): completing unconditionally (the null class)")
    else:
        check_labels(labels, pipe.network.num_classes)
    stats = {}
    out = complete_clips(clips, labels, task.mask, task.keep, pipe.autoencoder,
                         lambda idx, y, given: pipe.generate(spec, idx, y, device, stats, given),
                         batch_size, device, show)
    report(stats, spec)
    return out, labels, task.what
