"""Where the moving shape is (dit/data/shapes_video.py), measured on any clip: a centroid tracker
and a straight-line fit of the track (the direction judge is in motion.py).

Tracker (`track_centroids`). Generated clips come without masks, so the shape is found against an
estimate of the clip's static background, in three steps per clip:
1. a plane a + b x + c y per channel (the dataset's background is a linear gradient) fitted by
   trimmed least squares to every pixel of every frame: first against the clip's median colour,
   then twice more against the previous fit, keeping pixels within BG_THRESHOLD of it;
2. per pixel, the mean of the frames in which it lies within BG_THRESHOLD of the plane (this
   recovers the background's static pixel noise, std 0.015, which the plane cannot); pixels the
   shape covers in every frame keep the plane;
3. per frame, foreground = pixels farther than FG_THRESHOLD (RGB distance, [0, 1] units) from the
   background. The shape's colour c is the median of the frame's clearly covered pixels (distance
   at least 0.7 of the frame's 95th percentile), and each pixel's coverage is its projection
   alpha = (x - bg).(c - bg) / |c - bg|^2 clipped to [0, 1], counted only on the foreground grown
   by one pixel (antialiased edges fall below the threshold; pixel noise elsewhere would bias the
   centroid towards the middle). The centroid is the alpha-weighted mean pixel centre: the
   estimator of the ground truth `centroid` (pixel (i, j) centred at (j + 0.5, i + 0.5)).
A frame with no foreground pixel gives NaN. The per-pixel temporal median, the usual background
for moving objects, fails here: a shape 6-8 px across that moves 2-4 px over 8 frames covers its
central pixels in most frames, so the median there is the shape (measured below).

Measured on 2,000 real clips of 16 px x 8 frames (seed 10,000) against the ground truth centroid:
mean error 0.014 px, 99th percentile 0.064 px, max 0.17 px, no frame lost; at 32 px: mean 0.007 px,
max 0.055 px. (With the temporal median as background instead: mean 0.52 px, max 4.7 px, and 163
frames lost, their shape taken for background.) 1 ms per clip at 16 px, 3.5 ms at 32 px.

Track fit (`track_fit`): see its docstring. On real clips (truth or tracker alike) R^2 >= 0.9 and
net displacement >= 2 px hold for 99.5% of the clips that do not bounce and 29% of those that do.
"""

from __future__ import annotations

import numpy as np

from dit.data.shapes_video import STEPS
from dit.errors import UserError

BG_THRESHOLD = 0.08  # RGB distance in [0, 1] units: background pixel noise is ~0.03 (static + per frame)
FG_THRESHOLD = 0.12  # a shape pixel at >= ~20% coverage clears it (every class colour is >= 0.5 from the background)


# --- tracker -------------------------------------------------------------------------------------


def as_float_clips(clips_uint8: np.ndarray) -> np.ndarray:
    clips = np.asarray(clips_uint8)
    if clips.dtype != np.uint8 or clips.ndim != 5 or clips.shape[-1] != 3:
        raise UserError(f"expected uint8 clips of shape (N, F, H, W, 3), got {clips.dtype} {clips.shape}: "
                        "convert float clips in [-1, 1] with dit.autoencoders.pixels.to_uint8")
    return clips.astype(np.float32) / 255.0


def _plane_fit(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Weighted least-squares plane a + b u + c v per clip and channel: x (N, F, H, W, 3), weight
    (N, F, H, W) -> the fitted planes (N, H, W, 3)."""
    n, f, h, w, _ = x.shape
    u = (np.arange(w) + 0.5) / w - 0.5
    v = (np.arange(h) + 0.5) / h - 0.5
    basis = np.stack(np.broadcast_arrays(np.ones((h, w)), u[None, :], v[:, None]), -1).reshape(h * w, 3)  # (P, 3)
    wt = weight.reshape(n, f, h * w).sum(1)  # (N, P): frames pool into pixels
    xs = (x.reshape(n, f, h * w, 3) * weight.reshape(n, f, h * w, 1)).sum(1)  # (N, P, 3)
    ata = np.einsum("np,pi,pj->nij", wt, basis, basis) + 1e-6 * np.eye(3)  # (N, 3, 3)
    atb = np.einsum("pi,npc->nic", basis, xs)  # (N, 3, 3 channels)
    coef = np.linalg.solve(ata, atb)  # (N, 3 basis, 3 channels)
    return np.einsum("pi,nic->npc", basis, coef).reshape(n, h, w, 3)


def estimate_background(x: np.ndarray) -> np.ndarray:
    """Static background (N, H, W, 3) of float clips (N, F, H, W, 3) in [0, 1]: steps 1-2 of the
    module docstring."""
    n, f, h, w, _ = x.shape
    plane = np.broadcast_to(np.median(x.reshape(n, -1, 3), axis=1)[:, None, None, :], (n, h, w, 3))
    inlier = np.ones(x.shape[:4], np.float32)
    for threshold in (2 * BG_THRESHOLD, BG_THRESHOLD, BG_THRESHOLD):
        inlier = (np.linalg.norm(x - plane[:, None], axis=-1) < threshold).astype(np.float32)
        plane = _plane_fit(x, np.maximum(inlier, 1e-3))  # a tiny floor: an all-outlier clip still gets a plane
    count = inlier.sum(1)[..., None]  # (N, H, W, 1) frames in which the pixel shows background
    mean = (x * inlier[..., None]).sum(1) / np.maximum(count, 1)
    return np.where(count > 0, mean, plane)


def coverage(clips_uint8: np.ndarray) -> np.ndarray:
    """Estimated shape coverage alpha (N, F, H, W) in [0, 1] of uint8 clips (step 3 of the module
    docstring); a frame with no foreground is all zeros."""
    x = as_float_clips(clips_uint8)
    bg = estimate_background(x)[:, None]  # (N, 1, H, W, 3)
    diff = x - bg
    dist = np.linalg.norm(diff, axis=-1)  # (N, F, H, W)
    fg = dist > FG_THRESHOLD
    n, f, h, w = dist.shape
    flat = np.where(fg, dist, 0).reshape(n, f, -1)
    strong = dist >= 0.7 * np.percentile(flat, 95, axis=-1)[..., None, None]
    strong &= fg
    # Colour of the shape per frame: median of its clearly covered pixels (NaN-free: empty frames get bg).
    color = np.full((n, f, 3), np.nan, np.float32)
    has = strong.reshape(n, f, -1).any(-1)
    for i, j in zip(*np.nonzero(has)):  # a median needs a loop; at most N * F small arrays
        color[i, j] = np.median(x[i, j][strong[i, j]], axis=0)
    c = np.where(has[..., None], color, 0)[:, :, None, None, :] - bg  # (N, F, 1, 1, 3) - (N, 1, H, W, 3)
    alpha = np.clip((diff * c).sum(-1) / np.maximum((c * c).sum(-1), 1e-6), 0, 1)
    grown = fg.copy()  # the foreground grown by one pixel (8-neighbourhood)
    pad = np.pad(fg, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            grown |= pad[:, :, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
    return np.where(grown & has[..., None, None], alpha, 0).astype(np.float32)


def track_centroids(clips_uint8: np.ndarray, batch: int = 1000) -> np.ndarray:
    """(N, F, 2) float64 centroid (x, y) in px of the shape in each frame of uint8 clips
    (N, F, H, W, 3), x right and y down, pixel centres at +0.5 (the ground truth's convention);
    NaN where a frame shows no foreground. Works on generated clips: no mask needed."""
    clips = np.asarray(clips_uint8)
    out = []
    for i in range(0, len(clips), batch):
        alpha = coverage(clips[i : i + batch]).astype(np.float64)
        h, w = alpha.shape[-2:]
        total = alpha.sum((-2, -1))
        with np.errstate(invalid="ignore", divide="ignore"):
            x = (alpha.sum(-2) * (np.arange(w) + 0.5)).sum(-1) / total
            y = (alpha.sum(-1) * (np.arange(h) + 0.5)).sum(-1) / total
        out.append(np.where(total[..., None] > 0, np.stack([x, y], -1), np.nan))
    return np.concatenate(out) if out else np.zeros((0, clips.shape[1], 2))


# --- track fit ----------------------------------------------------------------------------------


def track_fit(centroids: np.ndarray) -> dict:
    """Straight-line fit of tracks: centroids (F, 2) or (N, F, 2) px -> dict of (N,) arrays (or scalars).

    On the frames with a finite centroid, frame indices t (0, 1, ...), positions p_t = (x_t, y_t)
    are fitted by ordinary least squares p_t ~ a + b t, both coordinates at once (a, b in R^2).
    - r2: 1 - sum_t |p_t - a - b t|^2 / sum_t |p_t - mean_t p|^2, the coefficient of determination
      of the fit over both coordinates together (squared distances, not per axis); 1 for motion at
      constant velocity, lower for bounces, turns, speed changes and jitter. A track that does not
      move (sum_t |p_t - mean p|^2 < 1e-9 px^2) gets 0: standing still is not motion along a
      line. NaN with fewer than 3 finite frames.
    - net_displacement: |p_last - p_first| px, first and last finite frames (NaN with fewer than 2).
    - speed: |b|, px per frame along the fitted line (NaN with fewer than 2 finite frames).
    - direction: index into shapes_video.DIRECTIONS of the displacement p_last - p_first: its
      dominant axis and sign (the largest of STEPS . d); -1 with fewer than 2 finite frames.
    - tracked: number of finite frames.
    """
    c = np.asarray(centroids, np.float64)
    single = c.ndim == 2
    c = c[None] if single else c
    n, f, _ = c.shape
    ok = np.isfinite(c).all(-1)  # (N, F)
    t = np.broadcast_to(np.arange(f, dtype=np.float64), (n, f))
    m = ok.sum(1)
    w = ok.astype(np.float64)
    p = np.where(ok[..., None], c, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        t_mean = (w * t).sum(1) / m
        p_mean = p.sum(1) / m[:, None]  # (N, 2)
        dt = np.where(ok, t - t_mean[:, None], 0.0)
        dp = np.where(ok[..., None], p - p_mean[:, None], 0.0)
        b = (dt[..., None] * dp).sum(1) / (dt * dt).sum(1)[:, None]  # (N, 2) px / frame
        ss_res = (np.where(ok[..., None], dp - dt[..., None] * b[:, None], 0.0) ** 2).sum((1, 2))
        ss_tot = (dp**2).sum((1, 2))
        r2 = np.where(ss_tot < 1e-9, 0.0, 1 - ss_res / ss_tot)
    r2 = np.where(m >= 3, r2, np.nan)
    idx = np.arange(f)
    first = np.where(ok, idx, f).min(1).clip(max=f - 1)
    last = np.where(ok, idx, -1).max(1).clip(min=0)
    d = c[np.arange(n), last] - c[np.arange(n), first]  # (N, 2)
    moved = m >= 2
    out = {
        "r2": r2,
        "net_displacement": np.where(moved, np.linalg.norm(np.nan_to_num(d), axis=-1), np.nan),
        "speed": np.where(moved, np.linalg.norm(np.nan_to_num(b), axis=-1), np.nan),
        "direction": np.where(moved, np.argmax(np.nan_to_num(d) @ STEPS.T, axis=-1), -1),
        "tracked": m,
    }
    return {k: v[0] for k, v in out.items()} if single else out
