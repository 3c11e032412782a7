"""The motion judge: a small network that names the direction a moving shape takes
(dit/data/shapes_video.py's DIRECTIONS), or NONE; the tracker and the track fit are in centroids.py.

Motion judge (`MotionJudge`, `train_motion_judge`): direction from the pixels, with a fifth output
NONE for clips with no steady direction. The default (600 steps on 4,000 clips) trains in 31 s on
one core of a busy 2-core machine at 16 px (122 s at 32 px). Held out (2,000 clips of another seed):

                                        16 px    32 px
    whole clips that do not bounce      1.000    1.000   (p >= 0.9 for 99.5% / 98.3% of them)
    frames 4-7, no wall in them         1.000    0.999
    bounced clips, majority direction   0.887    0.903   (against the initial one: 0.48 / 0.50)
    still / shuffled / noise -> NONE    0.997    0.996

A bounced clip has two directions; the judge is never trained on a window with a wall inside,
names the one most of its steps take, and says NONE or is unsure on the rest.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dit.data import shapes_video
from dit.data.shapes_video import DIRECTIONS, STEPS
from dit.errors import UserError
from dit.eval import shapes_judge
from dit.eval.centroids import as_float_clips

# --- motion judge --------------------------------------------------------------------------------

VERSION = "1"  # bump when the judge's architecture or training recipe changes: cached weights are keyed by it
DEFAULT_STEPS = 600
DEFAULT_CLIPS = 4000  # training clips
FEATURE_DIM = 64
NONE = len(DIRECTIONS)  # the judge's fifth output: no single steady direction (still, shuffled, noise)
MIN_WINDOW = 4  # the judge is trained on windows of MIN_WINDOW..F frames: frames 4-7 of 8 can be judged
DIFF_GAIN = 4.0  # frame differences of sub-pixel motion are ~0.3 x the contrast: brought to the frames' scale
NEGATIVE_SHARE = 0.25  # of each training batch: NONE examples
# Label maps (index = label before, value = after; NONE stays NONE); image y points down.
OPPOSITE = np.array([1, 0, 3, 2, NONE])  # right <-> left, up <-> down: the direction of a clip played backwards
HFLIP = np.array([1, 0, 2, 3, NONE])  # mirror W: right <-> left
VFLIP = np.array([0, 1, 3, 2, NONE])  # mirror H: up <-> down
TRANSPOSE = np.array([3, 2, 1, 0, NONE])  # swap H and W: (dx, dy) -> (dy, dx), right -> down, left -> up


class MotionJudge(nn.Module):
    """Direction of motion of clips (B, F, 3, H, W) in [-1, 1]: logits over the 4 DIRECTIONS and NONE.

    Each step t -> t+1 is one 6-channel image, the frame and the frame difference (x_t, x_{t+1} -
    x_t): the difference shows where the shape gained and lost coverage, the frame which side is
    the shape. A 2-D CNN (three conv blocks, global average pool: any size) maps each step to a
    FEATURE_DIM vector; the clip's features are their mean over the steps, and a linear head gives
    the logits, so they are the mean of per-step logits and a clip whose steps disagree gets low
    confidence. Any number of frames >= 2 can be judged (trained on MIN_WINDOW..F). 2-D over steps
    rather than 3-D convolutions: ~4x cheaper, and on these clips one step already shows the direction.

    NONE (output 4) is trained on windows with no steady direction: a frame held still, frames in
    shuffled order, uniform noise. Without it the judge, which has only seen moving shapes, called
    noise clips one direction with probability 1.0 (measured); like the shapes classifier's OTHER,
    it lets "probability >= 0.9 of one direction" mean something on clips unlike the data.
    """

    def __init__(self, width: int = 32):
        super().__init__()
        chans = [6, width, 2 * width, FEATURE_DIM]
        blocks = []
        for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:])):
            blocks += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            if i < len(chans) - 2:
                blocks.append(nn.MaxPool2d(2))  # 16 px -> 8 -> 4
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(FEATURE_DIM, NONE + 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F, 3, H, W) in [-1, 1], F >= 2 -> (B, FEATURE_DIM): per-step features averaged over steps."""
        b, f = x.shape[:2]
        if f < 2:
            raise UserError(f"the motion judge needs at least 2 frames, got {f}")
        steps = torch.cat([x[:, :-1], DIFF_GAIN * (x[:, 1:] - x[:, :-1])], dim=2)  # (B, F-1, 6, H, W)
        h = self.blocks(steps.flatten(0, 1)).mean(dim=(2, 3))  # (B * (F-1), FEATURE_DIM)
        return h.view(b, f - 1, -1).mean(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, 5) logits, the last one NONE

    @torch.no_grad()
    def judge(self, clips_uint8: np.ndarray, frames: slice | None = None, batch: int = 500) -> dict:
        """Judge uint8 clips (N, F, H, W, 3) on `frames` (a slice, e.g. slice(4, 8); default all):
        {"probs" (N, 5) softmax over DIRECTIONS + NONE, "direction" (N,) argmax (NONE = 4 included),
        "confidence" (N,) the largest probability of a direction (NONE excluded), "features" (N, 64)}."""
        clips = np.asarray(clips_uint8)
        as_float_clips(clips[:0])  # layout check only
        if frames is not None:
            clips = clips[:, frames]
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        probs = [torch.zeros(0, NONE + 1, dtype=torch.float64)]  # so that zero clips give (0, 5)
        feats = [torch.zeros(0, FEATURE_DIM, dtype=torch.float64)]
        for i in range(0, len(clips), batch):
            x = torch.from_numpy(np.ascontiguousarray(clips[i : i + batch])).to(device)
            x = x.permute(0, 1, 4, 2, 3).float().div(127.5).sub(1)  # (B, F, 3, H, W) in [-1, 1]
            h = self.features(x)
            probs.append(F.softmax(self.head(h), -1).double().cpu())
            feats.append(h.double().cpu())
        self.train(was_training)
        p = torch.cat(probs).numpy()
        return {"probs": p, "direction": p.argmax(1), "confidence": p[:, :NONE].max(1),
                "features": torch.cat(feats).numpy()}


def step_directions(direction: np.ndarray, speed: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Direction of every step t -> t+1 from the ground truth: (N,), (N,), (N, F, 2) -> (N, F-1) int,
    the clip's direction or its opposite (after a bounce), -1 for the step in which the shape hits
    a wall (part forward, part back: no single direction). The parametric `center` moves exactly
    `speed` per step along the axis except in that step."""
    along = np.einsum("nfk,nk->nf", np.diff(center, axis=1), STEPS[direction])  # (N, F-1)
    full = np.abs(np.abs(along) - speed[:, None]) < 1e-3 * np.maximum(speed[:, None], 1e-6) + 1e-5
    d = np.where(along > 0, direction[:, None], OPPOSITE[direction][:, None])
    return np.where(full, d, -1)


def judge_training_set(num_clips: int, image_size: int, frames: int, seed: int, speed: float = 1.0):
    """(uint8 clips (N, F, H, W, 3), step directions (N, F-1), initial direction (N,)) of
    ShapesVideoDataset(seed), rendered here rather than through cached_uint8_clips because the step
    labels need the parametric centre, which that cache does not keep."""
    ds = shapes_video.ShapesVideoDataset(num_clips, image_size, frames, seed, speed)
    clips = np.empty((num_clips, frames, image_size, image_size, 3), np.uint8)
    direction, speeds, center = np.empty(num_clips, np.int64), np.empty(num_clips), np.empty((num_clips, frames, 2))
    for i in range(num_clips):
        clip, truth = ds.render(i)
        clips[i] = shapes_video.to_uint8_clip(clip)
        direction[i], speeds[i], center[i] = truth["direction"], truth["speed"], truth["center"]
    return clips, step_directions(direction, speeds, center), direction


def clean_windows(steps: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clip index, first frame, direction) of every window of `length` frames whose steps all share
    one direction (no wall inside): the judge's training and held-out examples."""
    out = []
    for start in range(steps.shape[1] - length + 2):
        w = steps[:, start : start + length - 1]
        idx = np.nonzero((w[:, 0] >= 0) & (w == w[:, :1]).all(1))[0]
        out.append((idx, np.full(len(idx), start), w[idx, 0]))
    return tuple(np.concatenate(a) for a in zip(*out))


def no_motion(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """NONE examples made from windows x (B, L, 3, H, W) in [-1, 1], one kind per window, in turn:
    one frame held (with fresh frame noise), the frames shuffled (never in or against their order),
    uniform noise."""
    b, length = x.shape[:2]
    out = torch.empty_like(x)
    for i in range(b):
        kind = i % 3
        if kind == 0:
            t = int(torch.randint(length, (1,), generator=gen))
            noise = torch.randn(x[i].shape, generator=gen) * (2 * shapes_video.FRAME_NOISE)
            out[i] = (x[i, t].expand_as(x[i]) + noise).clamp(-1, 1)
        elif kind == 1:
            while True:
                perm = torch.randperm(length, generator=gen)
                steps = perm.diff()
                if not ((steps == 1).all() or (steps == -1).all()):
                    break
            out[i] = x[i, perm]
        else:
            out[i] = torch.rand(x[i].shape, generator=gen) * 2 - 1
    return out


def _augment(x: torch.Tensor, labels: np.ndarray, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random element of the square's symmetry group times time reversal, drawn per clip, with
    the matching relabelling: x (B, F, 3, H, W) with H == W, labels (B,) -> (x, labels)."""
    ops = torch.randint(0, 2, (4, len(x)), generator=gen).bool()  # transpose, mirror W, mirror H, reverse
    lab = np.asarray(labels).copy()
    for op, (apply, relabel) in zip(ops, [(lambda v: v.transpose(-1, -2), TRANSPOSE), (lambda v: v.flip(-1), HFLIP),
                                          (lambda v: v.flip(-2), VFLIP), (lambda v: v.flip(1), OPPOSITE)]):
        x = torch.where(op[:, None, None, None, None], apply(x), x)
        lab = np.where(op.numpy(), relabel[lab], lab)
    return x, torch.from_numpy(lab)


def heldout_scores(judge: MotionJudge, num_clips: int, image_size: int, frames: int, seed: int,
                   speed: float = 1.0) -> dict:
    """The judge on fresh clips (a seed far from any training seed):
    - heldout_acc: accuracy on whole clips that do not bounce;
    - heldout_acc_bounced: on clips that do, against the majority direction of their steps (ties:
      the first); heldout_acc_bounced_initial: against the direction they start with;
    - heldout_acc_tail: on the last MIN_WINDOW frames of clips with no wall inside them (frames
      4-7 of 8: the continuation that prediction judges);
    - heldout_confident: share of whole non-bounced clips given one direction with p >= 0.9;
    - heldout_none: share of NONE examples (no_motion of whole clips) called NONE."""
    clips, steps, direction = judge_training_set(num_clips, image_size, frames, seed, speed)
    bounced = (steps != steps[:, :1]).any(1)  # a wall in some step (steps -1 or reversed)
    out = judge.judge(clips)
    counts = np.stack([(steps == k).sum(1) for k in range(NONE)], 1)
    tail = slice(frames - MIN_WINDOW, frames)  # frames 4-7 of 8
    tail_steps = steps[:, tail.start :]
    tail_clean = (tail_steps[:, 0] >= 0) & (tail_steps == tail_steps[:, :1]).all(1)
    tail_pred = judge.judge(clips[tail_clean], frames=tail)["direction"]
    gen = torch.Generator().manual_seed(seed)
    fake = no_motion(torch.from_numpy(clips[:999]).float().div(127.5).sub(1), gen)
    fake_u8 = fake.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    nb = ~bounced
    return {
        "heldout_acc": float((out["direction"][nb] == steps[nb, 0]).mean()),
        "heldout_acc_bounced": float((out["direction"][bounced] == counts[bounced].argmax(1)).mean()),
        "heldout_acc_bounced_initial": float((out["direction"][bounced] == direction[bounced]).mean()),
        "heldout_acc_tail": float((tail_pred == tail_steps[tail_clean, 0]).mean()),
        "heldout_confident": float((out["confidence"][nb] >= 0.9).mean()),
        "heldout_none": float((judge.judge(fake_u8)["direction"] == NONE).mean()),
    }


HELDOUT_KEYS = ("heldout_acc", "heldout_acc_bounced", "heldout_acc_bounced_initial", "heldout_acc_tail",
                "heldout_confident", "heldout_none", "train_seconds")


def train_motion_judge(
    image_size: int = 16, frames: int = shapes_video.FRAMES, seed: int = 0, steps: int = DEFAULT_STEPS,
    batch_size: int = 32, num_clips: int = DEFAULT_CLIPS, heldout_clips: int | None = None,
    device: str | torch.device = "cpu", verbose: bool = False, speed: float = 1.0,
) -> MotionJudge:  # fmt: skip
    """Train on real clips of ShapesVideoDataset(seed), deterministically (seeded torch and sampling).

    Examples are windows of L frames, L uniform in MIN_WINDOW..F per step (one L per batch), drawn
    among the windows with no wall inside (`clean_windows`): a bounced clip contributes its windows
    before and after the bounce, never the bounce, because a window with two directions has no
    right label. NEGATIVE_SHARE of each batch are NONE examples (`no_motion`). Each example is
    transposed, mirrored and played backwards at random, relabelled to match (8 x 2 symmetries:
    the four directions are equally likely and the data has no arrow of time; a transposed bar
    stands upright, a pose the data lacks, which only widens what the judge has seen).
    Adam at 3e-3 with a cosine decay, as the shapes classifier. Held-out scores (`heldout_scores` on
    `heldout_clips` clips of seed + 10,000, default half the training clips up to 2,000) are set as
    attributes when heldout_clips is not 0.
    """
    if frames < MIN_WINDOW:
        raise UserError(f"the motion judge needs clips of at least {MIN_WINDOW} frames, got {frames}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    clips, step_dirs, _ = judge_training_set(num_clips, image_size, frames, seed, speed)
    clips_t = torch.from_numpy(clips).permute(0, 1, 4, 2, 3)  # (N, F, 3, H, W) uint8
    windows = {length: clean_windows(step_dirs, length) for length in range(MIN_WINDOW, frames + 1)}
    lengths = sorted(windows)
    num_negative = round(batch_size * NEGATIVE_SHARE)
    model = MotionJudge().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    model.train()
    for step in range(steps):
        length = lengths[int(torch.randint(len(lengths), (1,), generator=gen))]
        idx, start, label = windows[length]
        pick = torch.randint(len(idx), (batch_size,), generator=gen).numpy()
        x = torch.stack([clips_t[idx[p], start[p] : start[p] + length] for p in pick])  # (B, L, 3, H, W) uint8
        x = x.float().div(127.5).sub(1)
        y = label[pick].copy()
        x[:num_negative], y[:num_negative] = no_motion(x[:num_negative], gen), NONE
        x, y = _augment(x, y, gen)
        shapes_judge.cross_entropy_step(model, opt, sched, x, y, device, "motion judge", step, steps, t0, verbose)
    model.eval()
    model.train_seconds = time.time() - t0
    heldout_clips = min(num_clips // 2, 2000) if heldout_clips is None else heldout_clips
    if heldout_clips:
        for key, value in heldout_scores(model, heldout_clips, image_size, frames, seed + 10_000, speed).items():
            setattr(model, key, value)
    if verbose:
        print(f"motion judge trained in {model.train_seconds:.1f}s: " +
              ", ".join(f"{k} {getattr(model, k):.4f}" for k in HELDOUT_KEYS if hasattr(model, k)))
    return model


def cache_path(cache_dir: str | os.PathLike, image_size: int = 16, frames: int = shapes_video.FRAMES,
               seed: int = 0, steps: int = DEFAULT_STEPS, num_clips: int = DEFAULT_CLIPS,
               speed: float = 1.0) -> Path:  # fmt: skip
    """Weights file for one setting: any change to data, recipe or network gets a new name."""
    name = (f"motion-judge-v{VERSION}-data{shapes_video.VERSION}-{image_size}px-{frames}f-seed{seed}-steps{steps}-"
            f"clips{num_clips}{shapes_video.speed_tag(speed)}.safetensors")
    return Path(cache_dir) / name


def load_or_train(
    cache_dir: str | os.PathLike, image_size: int = 16, frames: int = shapes_video.FRAMES, seed: int = 0,
    steps: int = DEFAULT_STEPS, num_clips: int = DEFAULT_CLIPS, device: str | torch.device = "cpu",
    verbose: bool = False, speed: float = 1.0,
) -> MotionJudge:  # fmt: skip
    """The cached motion judge for this setting (clips of `speed`: a judge per speed, trained on the
    motion it judges), training and caching it first if needed (eval mode); its held-out scores
    (HELDOUT_KEYS) are attributes, measured when it was trained."""
    path = cache_path(cache_dir, image_size, frames, seed, steps, num_clips, speed)
    return shapes_judge.cached_judge(path, MotionJudge(), lambda: train_motion_judge(
        image_size, frames, seed, steps, num_clips=num_clips, device=device, verbose=verbose, speed=speed),
        HELDOUT_KEYS, device)
