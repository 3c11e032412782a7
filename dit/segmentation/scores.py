"""Scoring unsupervised masks against a binary ground truth (shape against background).

Clusters carry no class, so each cluster of an image is mapped to the class most of its pixels have
in the truth (majority vote; a tie goes to the background); the binary mIoU of the image is then the
mean of the shape's and the background's IoU. The boundary F-score compares the inner boundary
pixels (shape pixels with a 4-neighbour in the background) of the mapped prediction and of the
truth: a boundary pixel counts as matched when one of the other side's lies within `tolerance`
pixels (Chebyshev; 0: the same pixel).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def majority_map(labels: torch.Tensor, truth: torch.Tensor, k: int) -> torch.Tensor:
    """Clusters (N, H, W) in 0..k-1 -> binary predictions (N, H, W): each cluster takes its majority class."""
    onehot = F.one_hot(labels.long(), k).flatten(1, 2).float()  # (N, HW, k)
    fg = (onehot * truth.flatten(1).float()[..., None]).sum(1)  # (N, k) shape pixels per cluster
    size = onehot.sum(1)
    cluster_class = (fg > size / 2).long()  # (N, k)
    return torch.gather(cluster_class, 1, labels.flatten(1).long()).view_as(labels)


def binary_miou(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per-image mean of the two classes' IoU, (N, H, W) binary -> (N,). A class absent from both
    prediction and truth counts as IoU 1."""
    pred, truth = pred.bool(), truth.bool()
    ious = []
    for p, t in ((pred, truth), (~pred, ~truth)):
        inter = (p & t).flatten(1).sum(1).float()
        union = (p | t).flatten(1).sum(1).float()
        ious.append(torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union)))
    return (ious[0] + ious[1]) / 2


def boundary(mask: torch.Tensor) -> torch.Tensor:
    """(N, H, W) binary masks -> bool (N, H, W): the inner boundary, shape pixels with a 4-neighbour in
    the background (one pixel thick; the image's edge is not a boundary)."""
    fg = mask.bool()
    bg_next = torch.zeros_like(fg)
    bg_next[:, 1:] |= ~fg[:, :-1]
    bg_next[:, :-1] |= ~fg[:, 1:]
    bg_next[:, :, 1:] |= ~fg[:, :, :-1]
    bg_next[:, :, :-1] |= ~fg[:, :, 1:]
    return fg & bg_next


def _dilate(b: torch.Tensor, r: int) -> torch.Tensor:
    return F.max_pool2d(b.float()[:, None], 2 * r + 1, stride=1, padding=r)[:, 0] > 0


def boundary_f(pred: torch.Tensor, truth: torch.Tensor, tolerance: int = 1) -> torch.Tensor:
    """Per-image boundary F-score (N,) within `tolerance` pixels. No boundary on either side: 1; on one side only: 0."""
    bp, bt = boundary(pred), boundary(truth)
    n_p, n_t = bp.flatten(1).sum(1).float(), bt.flatten(1).sum(1).float()
    precision = (bp & _dilate(bt, tolerance)).flatten(1).sum(1) / n_p.clamp_min(1)
    recall = (bt & _dilate(bp, tolerance)).flatten(1).sum(1) / n_t.clamp_min(1)
    f = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    both_empty = (n_p == 0) & (n_t == 0)
    return torch.where(both_empty, torch.ones_like(f), f)


def score(labels: torch.Tensor, truth: torch.Tensor, k: int) -> dict[str, np.ndarray]:
    """Per-image binary mIoU and boundary F-scores (within 1 px, and exact) of cluster labels against a binary truth."""
    pred = majority_map(labels, truth, k)
    return {"miou": binary_miou(pred, truth).numpy(), "boundary_f": boundary_f(pred, truth, 1).numpy(),
            "boundary_f0": boundary_f(pred, truth, 0).numpy()}

