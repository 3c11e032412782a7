"""k-means in torch for a batch of small point sets (one image's tokens or pixels each).

k-means++ seeding (Arthur & Vassilvitskii 2007) from a generator per image, then Lloyd steps. Each
image is clustered alone, with its own seed, so its labels do not depend on the batch it came in.
Labels are put in a canonical order (cluster 0 holds the first point in raster order, cluster 1
the first point not in cluster 0, ...): the same partition always gets the same label values.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

LLOYD_STEPS = 10  # small sets (tens to hundreds of points) converge in a few steps


def kmeans_pp(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeds for one set, points (T, D) -> centroids (k, D). The first seed is uniform, each
    next one drawn with probability proportional to the squared distance to the nearest seed so far."""
    T = points.shape[0]
    first = int(torch.randint(T, (1,), generator=generator))
    centroids = [points[first]]
    d2 = ((points - points[first]) ** 2).sum(-1)  # (T,)
    for _ in range(1, k):
        if d2.sum() <= 0:  # fewer distinct points than clusters: repeat one (it stays empty)
            nxt = first
        else:
            nxt = int(torch.multinomial(d2 / d2.sum(), 1, generator=generator))
        centroids.append(points[nxt])
        d2 = torch.minimum(d2, ((points - points[nxt]) ** 2).sum(-1))
    return torch.stack(centroids)


def canonical(labels: torch.Tensor, k: int) -> torch.Tensor:
    """Relabel (N, T) so that clusters are numbered in the order their first point appears."""
    out = torch.empty_like(labels)
    for n, row in enumerate(labels):
        order = []
        for v in row.tolist():
            if v not in order:
                order.append(v)
        order += [c for c in range(k) if c not in order]  # empty clusters last
        out[n] = torch.argsort(torch.tensor(order, device=row.device))[row]
    return out


@torch.no_grad()
def kmeans(points: torch.Tensor, k: int, seeds: Sequence[int], steps: int = LLOYD_STEPS) -> torch.Tensor:
    """Cluster each set of a batch, points (N, T, D) -> labels (N, T) in 0..k-1 (canonical order).

    seeds[n] seeds set n's k-means++ draw. An emptied cluster keeps its last centroid.
    """
    N, T, _ = points.shape
    if not 1 <= k <= T:
        raise ValueError(f"k must be in 1..{T} (the points per set), got {k}")
    if len(seeds) != N:
        raise ValueError(f"{len(seeds)} seeds for {N} sets")
    points = points.float()
    centroids = torch.stack([kmeans_pp(p, k, torch.Generator().manual_seed(int(s))) for p, s in zip(points.cpu(), seeds)])
    centroids = centroids.to(points.device)  # (N, k, D)
    labels = None
    for _ in range(steps):
        labels = torch.cdist(points, centroids).argmin(-1)  # (N, T)
        onehot = torch.nn.functional.one_hot(labels, k).to(points.dtype)  # (N, T, k)
        counts = onehot.sum(1)  # (N, k)
        sums = onehot.transpose(1, 2) @ points  # (N, k, D)
        centroids = torch.where(counts[..., None] > 0, sums / counts.clamp_min(1)[..., None], centroids)
    labels = torch.cdist(points, centroids).argmin(-1)
    return canonical(labels, k)
