"""Offline metrics for clips of the moving shapes (dit/data/shapes_video.py): does each frame show the
right shape, does it move coherently, does a prediction continue the given motion?

Clips are uint8 (N, F, H, W, 3) (dit/io/video.py's layout). Two fixed networks judge them, both
trained once on real clips and cached by data VERSION, size and training setting:
- a frame judge naming each frame's class: the shapes classifier's network and recipe
  (dit/eval/shapes_judge.py, with its OTHER output for wrong-colour shapes) trained on video frames.
  The image judge itself (`frame_judge="image"`) misreads video frames: the clips' shapes are
  smaller (18-26% of the side against the images' 22-36%) and may be cut at a wall, and it calls
  them OTHER. Measured on 2,000 real clips (16 px, 8 frames): per-frame accuracy 0.76 with the
  image judge (3% on shapes of radius < 3.2 px, 97% above 4 px), 0.998 with the frame judge.
- the motion judge (dit/eval/motion.py) naming the direction.

`VideoShapesMetric.compute(clips, labels)` (generation) reports, over N clips:
- class_acc: the share of frames the frame judge assigns to the clip's label;
- frames_agree: the share of clips whose frames the judge assigns to one class, any class but
  OTHER (noise, which it calls OTHER throughout, does not agree); all_frames_correct: to the label
  in every frame;
- motion_confidence: the mean over clips of the largest probability the motion judge, shown all
  frames, gives one direction (its NONE output excluded); motion_confident: the share of clips
  where that is >= CONFIDENCE (0.9);
- coherent_motion: the share of clips whose shape is tracked in every frame (centroids.track_centroids)
  along a straight line at a steady speed (centroids.track_fit R^2 >= R2_MIN = 0.9, net
  displacement >= MIN_DISPLACEMENT = 2 px at 16 px, scaled with the size like the data's speeds)
  and which the motion judge assigns to one direction with probability >= CONFIDENCE;
- consistency: frame-to-frame feature consistency, the mean over clips and consecutive frame pairs
  of the cosine similarity of the frame judge's features, each centred on the mean feature of
  real frames (uncentred, the all-positive ReLU features make every pair similar: a clip whose
  frames come from different clips scores 0.47 against real clips' 0.99; centred, 0.005);
- fd_video: the Fréchet distance between Gaussian fits of clip features (per-frame frame-judge
  features concatenated in frame order, F x 128, then the motion judge's 64 features) of the clips
  and of REFERENCE_CLIPS fresh real clips (statistics cached). The offline stand-in for FVD, NOT
  comparable with any FVD (dit/eval/fvd.py computes that); like any Fréchet distance it is biased
  upwards at small N: compare at equal clip counts.

`prediction_metrics(generated, real, given_frames)` (prediction: frames 0..g-1 given, g..F-1
generated): direction_agree_given, the share of clips whose generated continuation the motion judge
assigns the direction of the given frames (judged on the real frames 0..g-1); direction_agree_true,
the direction of the true continuation (real frames g..F-1: differs after a bounce); centroid_error,
the mean distance (px) between the tracked centroids of the generated and the real frames g..F-1
(clips whose shape is lost in some generated frame are averaged over the frames where it is found;
missing_frames counts the lost ones).

Every metric is a mean of per-clip values (the Fréchet distance: a function of per-clip features),
returned under "per_sample"; `statistics(per_sample, idx)` recomputes the metrics on a resample
idx, as benchmarks/sampler_quality/sampler_quality.py's bootstrap does.

Ceilings and trivial baselines, measured at 16 px x 8 frames with the default judges (frame judge
0.995 per frame held out, 98.2% of wrong-colour shapes to OTHER; motion judge: dit/eval/motion.py).
Real = 2,000 held-out clips (seed 30,000); fd_video at 2,000 clips (real: 10.7 at 1,000, 20.7 at 500):

    clips                              class_acc  frames_agree  coherent  confident  consistency  fd_video
    real                                 0.998       0.992       0.781      0.851       0.986        6.1
    real, frames in one shuffled order   0.998       0.992       0.000      0.000       0.978       86.5
    real, frame 0 held for 8 frames      0.999       0.999       0.000      0.000       1.000      124.9
    each frame from another real clip    0.212       0.000       0.000      0.000       0.005     4641
    uniform noise                        0.000       0.000       0.000      0.000       0.965    11583
    real, with the image judge           0.758       0.546       0.781      0.851       0.977        5.3

The coherent-motion ceiling is 0.78, not 1, because 29% of real clips bounce off a wall: 0.994 of
the clips that do not bounce count as coherent, 0.27 of those that do (bounce late, or barely).
Consistency tells identity changes from a steady shape (0.005 against 0.986), not quality (noise
frames look alike: 0.965); read it with class_acc.

Prediction with frames 0-3 given, 2,000 real clips as the truth:

    continuation                   direction_agree_given  direction_agree_true  centroid_error px
    the true one                          0.815                  1.000                0.000
    frame 3 repeated                      0.021                  0.016                1.04
    the true one, reversed                0.152                  0.011                0.85
    uniform noise                         0.021                  0.016                4.06

direction_agree_given's ceiling is 0.815: the true continuation of a clip that bounces after its
given frames moves against their direction (0.999 agree among clips that never bounce, 0.37
among those that bounce anywhere). A held frame and noise are judged NONE, which agrees with no direction.
Costs: building the metric the first time (training both judges, reference statistics) ~100 s on
one core; then ~4 ms per clip (compute on 2,000 clips: 7.7 s).
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from dit.data import shapes_video
from dit.data.shapes import MAX_ROTATION, draw_background, draw_color, draw_shape
from dit.errors import UserError
from dit.eval import centroids, motion, shapes_judge
from dit.eval.metrics import FrechetToReference, feature_statistics, frechet_distance
from dit.io.atomic import atomic_path

VERSION = "1"  # bump when the frame judge's recipe or a metric's definition changes: caches are keyed by it
R2_MIN = 0.9
MIN_DISPLACEMENT = 2.0  # px at 16 px (the data's slowest clips move 2.1 px over 8 frames); scaled with size
CONFIDENCE = 0.9
REFERENCE_CLIPS = 5000
REFERENCE_SEED = 20_000  # fresh clips: no judge trains on this seed
FRAME_JUDGE_STEPS = 1500  # held out: 0.995 per frame, 98.2% OTHER (600, the image judge's: 0.987, 95.4%)
OTHER = shapes_judge.OTHER


# --- the frame judge: the shapes classifier, trained on video frames -------------------------------


def mismatched_frames(num_frames: int, image_size: int = 16, seed: int = 0) -> np.ndarray:
    """uint8 (N, H, W, 3): single frames with the clips' geometry (radius, margin, frame noise), shape
    k painted in the colour of class k + j, j in 1..9: the frame judge's OTHER examples."""
    out = np.empty((num_frames, image_size, image_size, 3), np.uint8)
    for i in range(num_frames):
        rng = np.random.default_rng([seed, 2, i])  # not [seed, i]: independent of the clips
        label, shift = i % OTHER, 1 + rng.integers(OTHER - 1)
        bg = draw_background(rng, image_size)
        radius = rng.uniform(*shapes_video.RADIUS) * image_size
        lo, hi = shapes_video.MARGIN * radius, image_size - shapes_video.MARGIN * radius
        cx, cy = rng.uniform(lo, hi, size=2)
        angle = rng.uniform(-MAX_ROTATION[label], MAX_ROTATION[label])
        color = draw_color(label, rng, color=(label + shift) % OTHER)
        alpha = draw_shape(label, image_size, cx / image_size, cy / image_size, radius / image_size, angle)
        img = bg * (1 - alpha) + color * alpha + rng.normal(0, shapes_video.FRAME_NOISE, bg.shape)
        out[i] = shapes_video.to_uint8_clip(img)
    return out


def _to_float(frames_uint8: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames_uint8))
    return x.movedim(-1, -3).float().div(127.5).sub(1)


def train_frame_judge(image_size: int = 16, frames: int = shapes_video.FRAMES, seed: int = 0,
                      steps: int = FRAME_JUDGE_STEPS, batch_size: int = 64, num_clips: int = motion.DEFAULT_CLIPS,
                      device: str | torch.device = "cpu", verbose: bool = False,
                      ) -> shapes_judge.ShapesClassifier:  # fmt: skip
    """shapes_judge.train_classifier's recipe (Adam 3e-3, cosine, random horizontal flips, half of each
    batch wrong-colour OTHER shapes) on frames of real clips of ShapesVideoDataset(seed); the
    defaults take 42 s on one core of a busy 2-core machine at 16 px.
    Held-out per-frame accuracy (`heldout_accuracy`, every frame of min(500, num_clips // 4) clips of
    seed + 10,000) and wrong-colour rejection (`heldout_other`, 2 frames per held-out clip) are set
    as attributes."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    clips, labels, _ = shapes_video.cached_uint8_clips(num_clips, image_size, frames, seed, None)
    positives = clips.flatten(0, 1)  # (N * F, 3, H, W) uint8
    pos_labels = labels.repeat_interleave(frames)
    negatives = _to_float(mismatched_frames(len(positives) // 4, image_size, seed))
    model = shapes_judge.ShapesClassifier().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    model.train()
    half = batch_size // 2
    for step in range(steps):
        i = torch.randint(len(positives), (half,), generator=gen)
        j = torch.randint(len(negatives), (batch_size - half,), generator=gen)
        x = torch.cat([positives[i].float().div(127.5).sub(1), negatives[j]])
        y = torch.cat([pos_labels[i], torch.full((batch_size - half,), OTHER)])
        flip = torch.rand(batch_size, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        shapes_judge.cross_entropy_step(model, opt, sched, x, y, device, "frame judge", step, steps, t0, verbose)
    model.eval()
    model.train_seconds = time.time() - t0
    heldout = max(min(500, num_clips // 4), 1)
    test, test_labels, _ = shapes_video.cached_uint8_clips(heldout, image_size, frames, seed + 10_000, None)
    model.heldout_accuracy = shapes_judge.accuracy(model, test.flatten(0, 1).float().div(127.5).sub(1),
                                                 test_labels.repeat_interleave(frames))
    wrong = _to_float(mismatched_frames(2 * heldout, image_size, seed + 10_000))
    model.heldout_other = shapes_judge.accuracy(model, wrong, torch.full((len(wrong),), OTHER))
    if verbose:
        print(f"frame judge held-out accuracy {model.heldout_accuracy:.4f}, wrong colour -> OTHER "
              f"{model.heldout_other:.4f}, trained in {model.train_seconds:.1f}s")
    return model


def load_or_train_frame_judge(cache_dir: str | os.PathLike, image_size: int = 16, frames: int = shapes_video.FRAMES,
                              seed: int = 0, steps: int = FRAME_JUDGE_STEPS, num_clips: int = motion.DEFAULT_CLIPS,
                              device: str | torch.device = "cpu", verbose: bool = False,
                              ) -> shapes_judge.ShapesClassifier:  # fmt: skip
    """The cached frame judge for this setting, trained and cached first if needed (eval mode)."""
    name = (f"shapes-video-frame-cnn-v{VERSION}-cnn{shapes_judge.VERSION}-data{shapes_video.VERSION}-{image_size}px-"
            f"{frames}f-seed{seed}-steps{steps}-clips{num_clips}.safetensors")
    return shapes_judge.cached_judge(Path(cache_dir) / name, shapes_judge.ShapesClassifier(), lambda: train_frame_judge(
        image_size, frames, seed, steps, num_clips=num_clips, device=device, verbose=verbose),
        ("heldout_accuracy", "heldout_other", "train_seconds"), device)


# --- the metric --------------------------------------------------------------------------------------


def check_clips(clips_uint8: np.ndarray, image_size: int | None = None, frames: int | None = None,
                what: str = "clips") -> np.ndarray:  # fmt: skip
    clips = np.asarray(clips_uint8)
    if clips.dtype != np.uint8 or clips.ndim != 5 or clips.shape[-1] != 3:
        raise UserError(f"{what}: expected uint8 clips (N, F, H, W, 3), got {clips.dtype} {clips.shape}; "
                        "convert float clips in [-1, 1] with dit.autoencoders.pixels.to_uint8")
    if image_size is not None and clips.shape[2:4] != (image_size, image_size):
        raise UserError(f"{what} are {clips.shape[3]}x{clips.shape[2]} px but the metric was built for "
                        f"{image_size} px: build VideoShapesMetric(image_size={clips.shape[2]}, ...)")
    if frames is not None and clips.shape[1] != frames:
        raise UserError(f"{what} have {clips.shape[1]} frames but the metric was built for {frames}: "
                        f"build VideoShapesMetric(frames={clips.shape[1]}, ...)")
    return clips


class VideoShapesMetric:
    """The generation and prediction metrics of the module docstring for clips of one size and length.

    frame_judge: "video" (the default, the classifier trained on video frames) or "image" (the
    image classifier of dit/eval/shapes_judge.py as it is, for comparison: it misreads small shapes).
    """

    def __init__(self, image_size: int, frames: int, cache_dir: str | os.PathLike,
                 device: str | torch.device = "cpu", reference_clips: int = REFERENCE_CLIPS,
                 frame_judge: str = "video", frame_judge_steps: int | None = None,
                 motion_steps: int | None = None, judge_clips: int = motion.DEFAULT_CLIPS,
                 verbose: bool = False, speed: float = 1.0):  # fmt: skip
        if frames < motion.MIN_WINDOW:
            raise UserError(f"the video metrics need clips of at least {motion.MIN_WINDOW} frames, got {frames}")
        if frame_judge not in ("video", "image"):
            raise UserError(f"frame_judge must be 'video' or 'image', got {frame_judge!r}")
        self.image_size, self.frames, self.device = image_size, frames, torch.device(device)
        self.min_displacement = MIN_DISPLACEMENT * image_size / 16
        fsteps = frame_judge_steps or (FRAME_JUDGE_STEPS if frame_judge == "video" else shapes_judge.DEFAULT_STEPS)
        msteps = motion_steps or motion.DEFAULT_STEPS
        if frame_judge == "video":
            self.frame_judge = load_or_train_frame_judge(cache_dir, image_size, frames, steps=fsteps,
                                                         num_clips=judge_clips, device=self.device, verbose=verbose)
        else:
            self.frame_judge = shapes_judge.load_or_train(cache_dir, image_size, steps=fsteps, device=self.device,
                                                        verbose=verbose)
        # The motion judge and the reference clips move at `speed` (the data's, train.py --shapes-speed); the
        # frame judge reads single frames, which speed does not change.
        self.speed = speed
        self.motion_judge = motion.load_or_train(cache_dir, image_size, frames, steps=msteps, num_clips=judge_clips,
                                                 device=self.device, verbose=verbose, speed=speed)
        ref_path = Path(cache_dir) / (
            f"shapes-video-ref-v{VERSION}-m{motion.VERSION}-c{shapes_judge.VERSION}-data{shapes_video.VERSION}-"
            f"{image_size}px-{frames}f-{frame_judge}{fsteps}-motion{msteps}-clips{judge_clips}-"
            f"ref{reference_clips}{shapes_video.speed_tag(speed)}.npz")
        if ref_path.exists():
            with np.load(ref_path) as ref:
                self.ref_mu, self.ref_sigma, self.frame_mu = ref["mu"], ref["sigma"], ref["frame_mu"]
        else:
            clips, _, _ = shapes_video.cached_uint8_clips(reference_clips, image_size, frames, REFERENCE_SEED, None,
                                                          speed)
            clips = clips.permute(0, 1, 3, 4, 2).numpy()
            frame_feats = self._frame_outputs(clips)[1]  # (N, F, 128)
            self.frame_mu = frame_feats.reshape(-1, frame_feats.shape[-1]).mean(0)
            feats = np.concatenate([frame_feats.reshape(len(clips), -1), self.motion_judge.judge(clips)["features"]], 1)
            self.ref_mu, self.ref_sigma = feature_statistics(feats)
            ref_path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(ref_path) as tmp:
                np.savez(tmp, mu=self.ref_mu, sigma=self.ref_sigma, frame_mu=self.frame_mu)
        self._fd_to_ref = FrechetToReference(self.ref_mu, self.ref_sigma)

    @torch.no_grad()
    def _frame_outputs(self, clips: np.ndarray, batch: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """(predicted class (N, F), features (N, F, 128) float64) of every frame."""
        n, f = clips.shape[:2]
        frames = clips.reshape(n * f, *clips.shape[2:])
        preds, feats = [], []
        for i in range(0, len(frames), batch):
            h = self.frame_judge.features(_to_float(frames[i : i + batch]).to(self.device))
            preds.append(self.frame_judge.head(h).argmax(1).cpu())
            feats.append(h.double().cpu())
        if not preds:
            return np.zeros((n, f), np.int64), np.zeros((n, f, shapes_judge.FEATURE_DIM))
        return torch.cat(preds).numpy().reshape(n, f), torch.cat(feats).numpy().reshape(n, f, -1)

    # -- generation

    def per_sample(self, clips_uint8: np.ndarray, labels: np.ndarray | None = None) -> dict:
        """What each clip contributes to every metric, (N, ...) arrays: frame_pred (N, F) the frame
        judge's classes, frame_hits (N, F) bool (with labels), frames_agree, consistency,
        motion_confidence, motion_direction, track_r2 / track_net_displacement / track_speed /
        track_direction / track_tracked (centroids.track_fit), coherent, and features (N, F * 128 + 64)
        for the Fréchet distance. `statistics` turns them into the metrics."""
        clips = check_clips(clips_uint8, self.image_size, self.frames)
        n = len(clips)
        pred, feats = self._frame_outputs(clips)
        judged = self.motion_judge.judge(clips)
        fit = centroids.track_fit(centroids.track_centroids(clips))
        centred = feats - self.frame_mu
        unit = centred / np.maximum(np.linalg.norm(centred, axis=-1, keepdims=True), 1e-12)
        confidence = judged["confidence"]
        out = {
            "frame_pred": pred,
            "frames_agree": (pred == pred[:, :1]).all(1) & (pred[:, 0] != OTHER),  # OTHER is no class
            "consistency": (unit[:, 1:] * unit[:, :-1]).sum(-1).mean(1),
            "motion_confidence": confidence,
            "motion_direction": judged["direction"],
            **{f"track_{k}": v for k, v in fit.items()},
            "coherent": ((fit["tracked"] == self.frames) & (np.nan_to_num(fit["r2"]) >= R2_MIN)
                         & (np.nan_to_num(fit["net_displacement"]) >= self.min_displacement)
                         & (confidence >= CONFIDENCE)),  # fmt: skip
            "features": np.concatenate([feats.reshape(n, -1), judged["features"]], 1),
        }
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (n,):
                raise UserError(f"labels have shape {labels.shape} for {n} clips: give one class per clip")
            out["frame_hits"] = pred == labels[:, None]
        return out

    def statistics(self, data: dict, idx: np.ndarray | None = None) -> dict:
        """The metrics of all clips (idx None) or of the resample idx (an index array, repeats allowed)."""
        d = data if idx is None else {k: v[idx] for k, v in data.items()}
        out = {
            "frames_agree": float(d["frames_agree"].mean()),
            "motion_confidence": float(d["motion_confidence"].mean()),
            "motion_confident": float((d["motion_confidence"] >= CONFIDENCE).mean()),
            "coherent_motion": float(d["coherent"].mean()),
            "consistency": float(d["consistency"].mean()),
            "num_clips": int(len(d["coherent"])),
        }
        if "frame_hits" in d:
            out["class_acc"] = float(d["frame_hits"].mean())
            out["all_frames_correct"] = float(d["frame_hits"].all(1).mean())
        if len(d["features"]) >= 2:
            out["fd_video"] = (frechet_distance(*feature_statistics(d["features"]), self.ref_mu, self.ref_sigma)
                               if idx is None else self._fd_to_ref(d["features"]))  # fmt: skip
        return out

    def compute(self, clips_uint8: np.ndarray, labels: np.ndarray | None = None) -> dict:
        """The generation metrics (module docstring) of uint8 clips (N, F, H, W, 3) drawn for `labels`
        (N,) (class_acc and all_frames_correct need them), with the per-clip values under "per_sample"."""
        data = self.per_sample(clips_uint8, labels)
        return {**self.statistics(data), "per_sample": data}

    # -- prediction

    def prediction_per_sample(self, generated: np.ndarray, real: np.ndarray, given_frames: int) -> dict:
        """Per-clip values of the prediction metrics: see `prediction_metrics`."""
        real = check_clips(real, self.image_size, self.frames, "real clips")
        generated = check_clips(generated, what="generated clips")
        if generated.shape != real.shape:
            raise UserError(f"generated clips {generated.shape} and real clips {real.shape} differ: give the "
                            "full generated clips (given frames included), one per real clip")
        if not 2 <= given_frames <= self.frames - 2:  # the judge needs 2 frames; it was trained on 4 or more
            raise UserError(f"given_frames must leave at least 2 frames on each side: 2..{self.frames - 2}, "
                            f"got {given_frames}")
        rest = slice(given_frames, self.frames)
        given_dir = self.motion_judge.judge(real, frames=slice(0, given_frames))["direction"]
        true_dir = self.motion_judge.judge(real, frames=rest)["direction"]
        judged = self.motion_judge.judge(generated, frames=rest)
        gen_dir = judged["direction"]
        true_c = centroids.track_centroids(real)[:, rest]
        gen_c = centroids.track_centroids(generated)[:, rest]
        err = np.linalg.norm(gen_c - true_c, axis=-1)  # (N, F - g), NaN where either is lost
        missing = np.isnan(gen_c).any(-1) & ~np.isnan(true_c).any(-1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a clip lost in every frame: NaN, on purpose
            per_clip = np.nanmean(err, axis=1)
        return {"direction_agree_given": gen_dir == given_dir, "direction_agree_true": gen_dir == true_dir,
                "given_direction": given_dir, "generated_direction": gen_dir,
                "generated_confidence": judged["confidence"], "centroid_error": per_clip,
                "missing_frames": missing.mean(1)}  # fmt: skip

    @staticmethod
    def prediction_statistics(data: dict, idx: np.ndarray | None = None) -> dict:
        d = data if idx is None else {k: v[idx] for k, v in data.items()}
        err = d["centroid_error"]
        return {
            "direction_agree_given": float(d["direction_agree_given"].mean()),
            "direction_agree_true": float(d["direction_agree_true"].mean()),
            "centroid_error": float(np.nanmean(err)) if np.isfinite(err).any() else float("nan"),
            "missing_frames": float(d["missing_frames"].mean()),
            "num_clips": int(len(err)),
        }

    def prediction_metrics(self, generated: np.ndarray, real: np.ndarray, given_frames: int) -> dict:
        """Prediction metrics (module docstring) of generated clips (N, F, H, W, 3) whose frames
        0..given_frames-1 were given from the real clips (N, F, H, W, 3): direction agreement with the
        given frames and with the true continuation, mean centroid error (px) against the true
        continuation, the share of generated frames g..F-1 where the shape is lost (`missing_frames`,
        per frame), with the per-clip values under "per_sample"."""
        data = self.prediction_per_sample(generated, real, given_frames)
        return {**self.prediction_statistics(data), "per_sample": data}
