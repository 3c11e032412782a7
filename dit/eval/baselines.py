"""Completions of the moving shapes without a network: the floors a video model's prediction must clear.

Both see only the given frames of each clip (the frames a model is given) and return whole clips with
the given frames unchanged:
- `copy_nearest`: every other frame is a copy of the nearest given one (the earlier on a tie). For
  prediction from frames 0-3 it is "copy the last frame": where the shape was, nothing of how it moves.
- `constant_velocity`: a tracker. The shape's centroid is tracked in the given frames (dit/eval/centroids.py,
  no mask needed), a straight line x(t) = a + v t is fitted to those centroids by least squares, and each
  other frame f is the nearest given frame g with its shape moved by v (f - g) over the background:
  frame = bg (1 - alpha') + colour alpha', alpha' the shape's coverage in g shifted (bilinear) by
  v (f - g), bg the static background estimated from the given frames, colour the shape's in g. It
  knows nothing of walls: on a clip that bounces after the given frames it runs on through the wall,
  which is where a model that learned the data can beat it.
"""

from __future__ import annotations

import numpy as np

from dit.eval.centroids import as_float_clips, coverage, estimate_background, track_centroids


def copy_nearest(clips: np.ndarray, given: list[int]) -> np.ndarray:
    """uint8 clips (N, F, H, W, 3) -> each frame replaced by the nearest given frame."""
    nearest = [min(given, key=lambda g: (abs(g - f), g)) for f in range(clips.shape[1])]
    return clips[:, nearest]


def fitted_velocity(centroids: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Least-squares slope (N, 2) px per frame of centroids (N, G, 2) at `times` (G,); frames without a
    centroid (NaN) are left out, and a clip with fewer than two gets 0 (it stays where it is)."""
    ok = np.isfinite(centroids).all(-1)  # (N, G)
    t = np.where(ok, times[None, :], 0.0)
    n = ok.sum(1)
    t_mean = t.sum(1) / np.maximum(n, 1)
    c = np.where(ok[..., None], centroids, 0.0)
    c_mean = c.sum(1) / np.maximum(n, 1)[:, None]
    dt = np.where(ok, times[None, :] - t_mean[:, None], 0.0)
    var = (dt ** 2).sum(1)
    slope = (dt[..., None] * (c - c_mean[:, None])).sum(1) / np.maximum(var, 1e-12)[:, None]
    return np.where((n >= 2)[:, None] & (var > 0)[:, None], slope, 0.0)


def _shift(alpha: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """alpha (H, W) moved by (dx, dy) px, bilinear, zero where it comes from outside the frame."""
    from scipy.ndimage import shift

    return np.clip(shift(alpha, (dy, dx), order=1, mode="constant", cval=0.0), 0, 1)


def constant_velocity(clips: np.ndarray, given: list[int]) -> np.ndarray:
    """uint8 clips (N, F, H, W, 3) -> the tracker's completion (module docstring), uint8."""
    given = sorted(given)
    seen = np.ascontiguousarray(clips[:, given])
    x = as_float_clips(seen)  # (N, G, H, W, 3)
    bg = estimate_background(x)  # (N, H, W, 3), from the given frames only
    alpha = coverage(seen)  # (N, G, H, W)
    velocity = fitted_velocity(track_centroids(seen), np.asarray(given, dtype=np.float64))  # (N, 2) x, y
    out = as_float_clips(clips).copy()
    for i in range(len(clips)):
        for f in range(clips.shape[1]):
            if f in given:
                continue
            k = min(range(len(given)), key=lambda j: (abs(given[j] - f), given[j]))
            a = alpha[i, k]
            covered = a > 0.5
            colour = (x[i, k][covered].mean(0) if covered.any()
                      else (x[i, k] * a[..., None]).sum((0, 1)) / max(float(a.sum()), 1e-6))
            moved = _shift(a, *(velocity[i] * (f - given[k])))[..., None]
            out[i, f] = bg[i] * (1 - moved) + colour * moved
    return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)
