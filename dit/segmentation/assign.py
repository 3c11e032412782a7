"""From per-region maps to per-pixel labels: EmerDiff's assignment (§3.3) and the up-sampling baselines.

A region's difference map says how much each pixel moved when that region's tokens were pushed;
maps of different regions are on different scales (a large region moves more), so each is blurred
slightly (neighbouring pixels vote together), divided by its own maximum, and every pixel takes the
region whose normalised map is highest there.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, K, H, W) maps, sigma in pixels, reflected borders; sigma 0: unchanged."""
    if sigma <= 0:
        return maps
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    N, K, H, W = maps.shape
    flat = maps.reshape(N * K, 1, H, W)
    mode = "reflect" if min(H, W) > radius else "replicate"  # reflect needs more pixels than the radius
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode=mode), kernel.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode=mode), kernel.view(1, 1, -1, 1))
    return flat.reshape(N, K, H, W)


def region_scores(diffs: torch.Tensor, sigma: float) -> torch.Tensor:
    """Difference maps (N, K, H, W) -> blurred, each divided by its maximum: scores in [0, 1].
    A region that moved nothing (an empty cluster) scores 0 everywhere."""
    blurred = gaussian_blur(diffs.float(), sigma)
    return blurred / blurred.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)


def assign(diffs: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per-pixel labels (N, H, W): the region with the highest normalised score."""
    return region_scores(diffs, sigma).argmax(1)


def upsample_labels(labels: torch.Tensor, k: int, size: tuple[int, int]) -> torch.Tensor:
    """Low-resolution labels (N, h, w) -> (N, *size), each token's label repeated over its pixels."""
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


def bilinear_labels(features: torch.Tensor, labels: torch.Tensor, k: int, size: tuple[int, int]) -> torch.Tensor:
    """The same clusters at pixel resolution through the features: token features (N, h, w, D) are
    interpolated bilinearly and each pixel takes the nearest cluster mean. (Interpolating the one-hot
    masks instead changes nothing at a factor of 2: the nearest token always outweighs the others.)"""
    N, h, w, D = features.shape
    flat, onehot = features.reshape(N, h * w, D), F.one_hot(labels.reshape(N, h * w).long(), k).float()  # (N, T, k)
    sizes = onehot.sum(1)  # (N, k)
    centroids = (onehot.transpose(1, 2) @ flat) / sizes.clamp_min(1)[..., None]  # (N, k, D)
    up = F.interpolate(features.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=False)  # (N, D, H, W)
    dist = torch.cdist(up.flatten(2).transpose(1, 2), centroids)  # (N, H*W, k)
    dist = dist.masked_fill(sizes[:, None, :] == 0, float("inf"))  # an empty cluster takes no pixel
    return dist.argmin(-1).view(N, *size)
