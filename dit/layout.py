"""Tensor layouts every part of the package shares: the one place they are written down.

    image   (B, C, H, W)      latents or pixels in [-1, 1], RGB
    clip    (B, F, C, H, W)   F frames of an image each, in time order
    tokens  (B, L)            token ids (discrete processes)

A network's output has the layout of its input, with the channel axis doubled where the network
also predicts a variance (DiT's learned sigma): processes, guidance and samplers find the channels
with `channel_dim` instead of assuming axis 1, so every process runs on images and clips alike.
On disk and in npz files images are uint8 (N, H, W, 3) and clips uint8 (N, F, H, W, 3).

Given positions (mask modelling: video prediction, interpolation, in-painting) travel in `cond`
under two keys: GIVEN, broadcastable to x, 1 where a position is given (kept clean) and 0 where it
is generated (VDT writes the opposite, m = 1 to generate); CLEAN, x's shape, the given values. A
network that reads them replaces x by CLEAN where GIVEN is 1; a process averages its loss over the
rest (processes/base.py: mean_over_generated); a sampler needs to know nothing.

What an autoencoder gives (dit/autoencoders/base.py, `Autoencoder.data_kind`): CONTINUOUS float
latents (C, h, w) (pixels are the identity's), or TOKENS, integer ids (h, w) of a codebook.
"""

from __future__ import annotations

import torch

IMAGE_DIMS, CLIP_DIMS = 4, 5
CONTINUOUS, TOKENS = "continuous", "tokens"
GIVEN, CLEAN = "given", "clean"
# cond key of joint image-video training (Latte+IMG): per sample, how many frames after the full-length
# clip are independent images (they pass a video network's spatial blocks only).
IMAGES = "images"
# cond key of the few-step processes' second time (B,): the span h of the average velocity u(x_t, t, h)
# (MeanFlow's t - r, a shortcut model's step d; dit/processes/spans.py), in network-time units.
SPAN = "span"


def channel_dim(x: torch.Tensor) -> int:
    """The channel axis of a batch: 2 for clips, 1 for images and any other (B, C, ...) batch
    (vectors (B, C) in the closed-form tests)."""
    if x.dim() < 2:
        raise ValueError(f"a batch has a batch and a channel axis at least, got shape {tuple(x.shape)}")
    return 2 if x.dim() == CLIP_DIMS else 1


def num_channels(x: torch.Tensor) -> int:
    return x.shape[channel_dim(x)]


def split_output(output: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(the first C channels, the rest or None) of a network output for input x of C channels;
    the output must have C or 2C channels and otherwise x's shape."""
    d, C = channel_dim(x), num_channels(x)
    n = output.shape[d] if output.dim() == x.dim() else -1
    same = output.dim() == x.dim() and all(output.shape[i] == x.shape[i] for i in range(x.dim()) if i != d)
    if not same or n not in (C, 2 * C):
        raise ValueError(f"network output {tuple(output.shape)} does not fit input {tuple(x.shape)}: expected "
                         f"{C} (or {2 * C}) channels on axis {d} and the input's other sizes")
    if n == C:
        return output, None
    first, rest = output.split(C, dim=d)
    return first, rest


def first_channels(output: torch.Tensor, k: int) -> torch.Tensor:
    """A view of the first k channels of a batch (the slice guidance and schedulers act on)."""
    return output.narrow(channel_dim(output), 0, k)


def values_of(layout: str) -> str:
    """What the elements of a sample of `layout` ("image", "clip" or "tokens": an architecture's
    data_kind) are: TOKENS for token ids, CONTINUOUS otherwise."""
    return TOKENS if layout == TOKENS else CONTINUOUS


# How messages name an autoencoder that gives each kind of data, and the data itself.
AUTOENCODER_OF = {CONTINUOUS: "a VAE or pixel space", TOKENS: "a VQ tokenizer"}
DATA_OF = {CONTINUOUS: "continuous latents", TOKENS: "token ids"}
