"""EmerDiff (Namekata et al., ICLR 2024) on a DiT: coarse masks from k-means on token features,
refined to pixels by a modulated denoising pass.

1. Coarse masks: k-means (kmeans.py) over a middle block's token features at a small t, null label
   (features.py): one label per token, an (H/p) x (W/p) map.
2. Modulation: invert the image to t_m (inversion.py), denoise it once plainly (recording every
   attention map and the round-trip corrections), then 2K more times in one batch: for each region
   i, once with +lam * M_i * u added to block `block`'s output at t_m and once with -lam * M_i * u,
   every attention map replayed from the plain pass (attention_replay.py). The per-pixel distance
   |I- - I+| (after decoding, for latent models) shows which pixels region i's tokens render.
3. Assignment (assign.py): blur, normalise per region, argmax.

Why u has zero channel mean: the paper adds a constant to every channel of the masked features of
SD's cross-attention output. A DiT block reads its residual stream only through LayerNorm (norm1,
norm2, and the final layer's norm_final), which subtracts each token's channel mean: a constant
added to every channel of a token is removed exactly and changes nothing downstream. u is therefore a
fixed random direction with its channel mean removed, unit length (a per-region "contrast"
direction, from the other regions' mean feature to the region's own, did worse on the benchmark's
validation set); lam is measured in units of the block output's mean (centred) token norm, so one
value fits networks of any width and scale.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from dit.errors import UserError

from dit.segmentation.assign import bilinear_labels, region_scores, upsample_labels
from dit.segmentation.attention_replay import AttentionTape
from dit.segmentation.features import capture, null_labels, num_tokens, token_features
from dit.segmentation.inversion import invert, levels, noise_estimate, step
from dit.segmentation.kmeans import kmeans

# "random": one fixed direction for every region; "contrast": per image and region, from the region's
# mean feature away from the other regions' (pushes a region to look more or less like itself);
# "constant": the paper's all-channel offset, which a DiT ignores (the ablation).
DIRECTIONS = ("random", "contrast", "constant")


# Defaults: the benchmark's choices on its validation set (benchmarks/segmentation/segmentation.py, RESULTS.md
# "Segmentation"); the flow's times have the gaussian ones' signal-to-noise ratio a/s on the linear
# path (t / (1 - t) = sqrt(abar / (1 - abar))): 50 -> 0.85, 500 -> 0.225 (not measured on a flow model).
DEFAULT_TIMES = {"gaussian": {"feature_t": 50, "t_m": 500}, "flow": {"feature_t": 0.85, "t_m": 0.225}}


@dataclass(frozen=True)
class Settings:
    """Everything that decides a segmentation besides the network and the image. Times are the
    process's own (gaussian: timestep index, 999 = noise; flow: t, 1 = data); None: `resolve` fills it."""

    k: int = 2
    feature: str = "hidden"  # "hidden" (the block's output) or "query" (its attention queries)
    feature_block: int | None = None  # None: the middle block, depth // 2
    feature_t: float | None = None  # None: DEFAULT_TIMES
    block: int | None = None  # the modulated block; None: the last
    t_m: float | None = None  # None: DEFAULT_TIMES (the paper's is 281 of 1000, on SD)
    lam: float = 1.0  # offset size, in units of the block output's mean centred token norm
    steps: int = 10  # DDIM steps between the image and t_m
    blur: float = 0.0  # sigma of the difference maps' Gaussian blur, in pixels (0: none)
    direction: str = "random"  # one of DIRECTIONS
    seed: int = 0  # the random direction's draw (per image seeds come from the caller)

    def resolve(self, model, process) -> "Settings":
        depth, times = len(model.blocks), DEFAULT_TIMES.get(process.key)
        if times is None and (self.feature_t is None or self.t_m is None):
            raise UserError(f"no default EmerDiff times for the {process.key} process (tuned for "
                            f"{', '.join(DEFAULT_TIMES)}): give --t-m and --feature-t in its own time")
        times = times or {}
        return dataclasses.replace(
            self,
            feature_block=depth // 2 if self.feature_block is None else self.feature_block % depth,
            block=depth - 1 if self.block is None else self.block % depth,
            feature_t=times.get("feature_t") if self.feature_t is None else self.feature_t,
            t_m=times.get("t_m") if self.t_m is None else self.t_m,
        )


@dataclass
class Segmentation:
    coarse: torch.Tensor  # (N, h, w) token labels in 0..K-1, h = H / patch (latent models: / the VAE's factor too)
    features: torch.Tensor  # (N, h, w, D) the token features k-means clustered
    diffs: torch.Tensor  # (N, K, H, W) per-pixel |I- - I+| of each region
    scores: torch.Tensor  # (N, K, H, W) blurred, normalised: the assignment's evidence
    labels: torch.Tensor  # (N, H, W) refined labels (argmax of scores)

    def coarse_up(self, mode: str = "nearest") -> torch.Tensor:
        """Coarse labels at the image's resolution (the baselines EmerDiff is compared with): "nearest"
        repeats each token's label, "bilinear" interpolates the features and takes the nearest cluster mean."""
        size, k = tuple(self.labels.shape[-2:]), self.diffs.shape[1]
        if mode == "nearest":
            return upsample_labels(self.coarse, k, size)
        if mode == "bilinear":
            return bilinear_labels(self.features, self.coarse, k, size)
        raise ValueError(f"mode must be nearest or bilinear, got {mode!r}")


def image_seeds(seed: int, indices) -> list[int]:
    """Per-image seeds from (seed, image index): an image's segmentation does not depend on its batch."""
    return [int(np.random.default_rng([seed, int(i)]).integers(2**62)) for i in indices]


def direction(dim: int, kind: str, seed: int) -> torch.Tensor:
    """The unit offset direction (D,): random with zero channel mean, or constant (the paper's, ablation)."""
    if kind == "constant":
        return torch.full((dim,), dim**-0.5)
    if kind != "random":
        raise ValueError(f"direction must be random or constant here, got {kind!r}")
    u = torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    u = u - u.mean()  # LayerNorm removes any channel mean: only this part can matter
    return (u / u.norm()).float()


def contrast_directions(h: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per region, the unit direction from the other regions' mean feature to its own, channel mean
    removed: h (N, T, D) block outputs, masks (N, K, T) -> (N, K, D); an empty region gets 0."""
    sizes = masks.sum(-1, keepdim=True)  # (N, K, 1)
    centroids = (masks @ h) / sizes.clamp_min(1)  # (N, K, D)
    present = (sizes > 0).to(h.dtype)
    others = ((centroids * present).sum(1, keepdim=True) - centroids * present) / (present.sum(1, keepdim=True) - present).clamp_min(1)
    u = centroids - others
    u = u - u.mean(-1, keepdim=True)
    return u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12) * present


def coarse_masks(model, process, x0: torch.Tensor, s: Settings, seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means of token features, (N, C, H, W) model inputs -> (token labels (N, T), features (N, T, D))."""
    noise = torch.stack([torch.randn(x0.shape[1:], generator=torch.Generator().manual_seed(sd)) for sd in seeds])
    feats = token_features(model, process, x0, s.feature_t, s.feature_block, s.feature, noise.to(x0.device))
    return kmeans(feats, s.k, seeds), feats


@torch.no_grad()
def modulated_passes(model, process, vae, x0: torch.Tensor, coarse: torch.Tensor, s: Settings) -> torch.Tensor:
    """The 2K denoised images of each image, (N, C, h, w) model inputs and coarse token labels (N, T) ->
    (N, K, 2, 3, H, W) in pixels: [n, i, 0] with -lam * M_i * u, [n, i, 1] with +lam. With lam = 0 every
    pass is the unmodulated one and gives the image back (to float rounding; decoded, for latent models)."""
    N, K, T = x0.shape[0], s.k, num_tokens(model)
    B = 2 * K  # per image: region 0 -, region 0 +, region 1 -, ...
    path = levels(process, s.t_m, s.steps)
    cond = null_labels(model, N, x0.device)
    xs = invert(model, process, x0, path, cond)

    # The plain pass along the inversion's points: attention maps and corrections of every step.
    tape, maps, fixes, outs = AttentionTape(model), [], [], []
    with tape.recording():
        for i in range(len(path) - 1, 0, -1):
            with capture(model.blocks[s.block], outs if i == len(path) - 1 else []):
                eps = noise_estimate(model, process, xs[i], path[i], cond)
            maps.append(tape.take())
            fixes.append(xs[i - 1] - step(xs[i], eps, path[i], path[i - 1]))

    # The offsets: sign * lam * scale * M_i * u, scale the block output's mean centred token norm per image.
    h = outs[0][:, :T].float()
    scale = (h - h.mean(-1, keepdim=True)).norm(dim=-1).mean(-1)  # (N,)
    masks = torch.nn.functional.one_hot(coarse.long(), K).permute(0, 2, 1).float()  # (N, K, T)
    if s.direction == "contrast":
        u = contrast_directions(h, masks).view(N, K, 1, 1, -1)
    else:
        u = direction(h.shape[-1], s.direction, s.seed).to(h.device)
    sign = torch.tensor([-1.0, 1.0], device=h.device)
    offset = s.lam * scale.view(N, 1, 1, 1, 1) * sign.view(1, 1, 2, 1, 1) * masks.view(N, K, 1, T, 1) * u
    offset = offset.reshape(N * B, T, -1).to(outs[0].dtype)  # (N * 2K, T, D)

    def add_offset(_module, _inputs, out):
        return torch.cat([out[:, :T] + offset, out[:, T:]], dim=1)

    x = xs[-1].repeat_interleave(B, dim=0)
    cond_b = null_labels(model, N * B, x0.device)
    with tape.replaying():
        for n, i in enumerate(range(len(path) - 1, 0, -1)):
            tape.load(maps[n], repeats=B)
            hook = model.blocks[s.block].register_forward_hook(add_offset) if n == 0 else None  # at t_m only
            try:
                eps = noise_estimate(model, process, x, path[i], cond_b)
            finally:
                if hook is not None:
                    hook.remove()
            x = step(x, eps, path[i], path[i - 1]) + fixes[n].repeat_interleave(B, dim=0)
    images = vae.decode(x).float()  # (N * 2K, 3, H, W): differences are taken in pixel space
    return images.view(N, K, 2, *images.shape[1:])


def modulated_differences(model, process, vae, x0: torch.Tensor, coarse: torch.Tensor, s: Settings) -> torch.Tensor:
    """|I- - I+| per pixel (RGB distance) for each region: (N, K, H, W)."""
    images = modulated_passes(model, process, vae, x0, coarse, s)
    return (images[:, :, 0] - images[:, :, 1]).norm(dim=2)


@torch.no_grad()
def segment(model, process, vae, images: torch.Tensor, s: Settings, seeds: list[int]) -> Segmentation:
    """Segment images (N, 3, H, W) in [-1, 1] at the model's resolution into s.k regions.

    `s` must be resolved (Settings.resolve); seeds[n] is image n's (noise of its features, k-means).
    """
    x0 = vae.encode_moments(images)[0]  # the posterior mean: no sampling noise in the inversion
    coarse, feats = coarse_masks(model, process, x0, s, seeds)
    diffs = modulated_differences(model, process, vae, x0, coarse, s)
    scores = region_scores(diffs, s.blur)
    side = model.input_size // model.patch_size
    return Segmentation(coarse.view(-1, side, side), feats.view(len(feats), side, side, -1), diffs, scores,
                        scores.argmax(1))
