"""Samplers of the vq-diffusion process (dit/processes/vq_diffusion.py), and its guidance in log space.

`ancestral` (the registry default) runs the reverse chain from x_T = all [MASK] over `steps` evenly
spaced times T = t_0 > ... > t_steps = 0 (process.time_points): steps = T is the paper's chain
(eq. 11), fewer steps are its fast inference (§3.3): x_s ~ sum_x0 q(x_s | x_t, x0) p(x~0 | x_t)
with the closed-form q over the skip s -> t, so every step is one the model was trained at (unlike
diffusers' set_timesteps(n < T), which starts all-[MASK] at t = n and walks one step at a time,
nor the released sample_fast, which reads x_t through the tables of t - dt). The last step, to
s = 0, draws x0 from p(x~0 | x_t) itself: q(x_0 | x_t, x0) is x0's one-hot.

Randomness: one uniform per token per step, read as a categorical draw by inverse CDF (exact, and
K times cheaper than Gumbel-max over K + 1 ids). Uniforms come from the sampler's `noise`
(standard normals, e.g. a PerSampleNoise) through the normal CDF, so sample i depends only on its
seed, whatever the batching. `categorical="gumbel"` draws by Gumbel-max instead, as diffusers'
VQDiffusionScheduler.step does (argmax of log p + g over all C ids, g = -log(-log(u + 1e-30) + 1e-30)
from one uniform per token and id, C times the noise): the same distribution, a different map from
noise to ids, so that a chain fed the Gumbel noise diffusers draws takes diffusers' tokens
(tests/test_vq_pipeline.py).

Truncation r (the released `truncation_rate`, 0.86 for ImageNet): per token, only the most likely
ids of p(x~0 | x_t) whose cumulative probability before them is below r are kept (the most likely
always), then renormalised: nucleus (top-p) truncation, applied after guidance as improved
VQ-Diffusion does. r = 1 keeps everything.

Classifier-free guidance (improved VQ-Diffusion, Tang et al. 2022, §3.1) is on log-probabilities:
log p = log p(x~0 | x_t, null) + s (log p(x~0 | x_t, y) - log p(x~0 | x_t, null)), renormalised over
K by the sampler. The unconditional input is the label table's learned null row (DiT's null class),
trained by label dropout: improved VQ-Diffusion's learnable null condition.
"""

from __future__ import annotations

import math

import torch

from dit.errors import UserError
from dit.networks.conditioning import as_cond, cat_cond
from dit.processes.vq_schedule import LOG_ZERO


def truncate(log_p: torch.Tensor, r: float) -> torch.Tensor:
    """Nucleus truncation of log p (B, K, ...) over axis 1, renormalised; r = 1 returns it unchanged."""
    if r >= 1.0:
        return log_p
    sorted_lp, order = log_p.sort(1, descending=True)
    before = sorted_lp.exp().cumsum(1) - sorted_lp.exp()  # mass of the more likely ids
    keep_sorted = before < r
    keep_sorted[:, :1] = True
    keep = torch.empty_like(keep_sorted).scatter_(1, order, keep_sorted)
    return torch.log_softmax(torch.where(keep, log_p, torch.full_like(log_p, LOG_ZERO)), 1).clamp_min(LOG_ZERO)


def sample_categorical(log_p: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """ids (B, ...) from log-probabilities (B, C, ...) over axis 1 and uniforms u (B, ...) in [0, 1):
    the first id whose cumulative probability exceeds u (inverse CDF, in float64)."""
    p = torch.softmax(log_p.to(torch.float64), 1)
    cdf = p.movedim(1, -1).cumsum(-1)  # (B, ..., C)
    u = u.to(torch.float64).unsqueeze(-1) * cdf[..., -1:]  # scaled to the total (1 up to rounding)
    idx = torch.searchsorted(cdf.contiguous(), u.contiguous(), right=True).squeeze(-1)
    return idx.clamp(max=log_p.shape[1] - 1)


def gumbel(u: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise from uniforms, in diffusers' form (scheduling_vq_diffusion.gumbel_noised)."""
    return -torch.log(-torch.log(u + 1e-30) + 1e-30)


def sample_gumbel(log_p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """ids (B, ...) = argmax over axis 1 of log p + g, g (B, C, ...) standard Gumbel noise (Gumbel-max)."""
    return (log_p.to(torch.float64) + g.to(torch.float64)).argmax(1)


CATEGORICAL = ("inverse-cdf", "gumbel")


def draw(log_p: torch.Tensor, noise, categorical: str = "inverse-cdf") -> torch.Tensor:
    """One categorical draw per position from log p (B, C, ...) with the sampler's noise: one uniform
    per position (inverse CDF) or one per position and id (Gumbel-max)."""
    if categorical == "gumbel":
        return sample_gumbel(log_p, gumbel(uniforms(noise, log_p)))
    return sample_categorical(log_p, uniforms(noise, log_p[:, 0]))


def uniforms(noise, like: torch.Tensor) -> torch.Tensor:
    """Uniforms in [0, 1) of like's shape (float64) from a standard-normal noise callable, Phi(z)."""
    z = noise(torch.empty(like.shape, device=like.device, dtype=torch.float32)).to(torch.float64)
    return torch.special.ndtr(z).clamp(max=1 - 2 ** -53)


@torch.no_grad()
def ancestral(denoiser, process, x_T, steps, noise=None, progress=False, truncation: float = 1.0, callback=None,
              categorical: str = "inverse-cdf"):
    """Registry entry "ancestral": x_T (B, H, W) ids (all [MASK]) -> x_0 ids, in `steps` <= T steps.
    callback(t, x_s, log_x0) is called after every step; categorical: "inverse-cdf" or "gumbel" (module
    docstring)."""
    if not 0.0 < truncation <= 1.0:
        raise UserError(f"truncation r must be in (0, 1] (1: none), got {truncation}")
    if categorical not in CATEGORICAL:
        raise UserError(f"unknown categorical draw {categorical!r}; choose one of {', '.join(CATEGORICAL)}")
    noise = torch.randn_like if noise is None else noise
    times = process.time_points(steps)
    pairs = list(zip(times[:-1], times[1:]))
    if progress:
        from tqdm.auto import tqdm
        pairs = tqdm(pairs)
    x, B = x_T, x_T.shape[0]
    for t, s in pairs:
        tt = torch.full((B,), t, dtype=torch.long, device=x.device)
        log_x0 = truncate(process.read_output(denoiser(x, process.network_time(tt))), truncation)
        if s == 0:
            x = draw(log_x0, noise, categorical)
        else:
            x = draw(process.schedule.posterior(log_x0, x, tt, torch.full_like(tt, s)), noise, categorical)
        if callback is not None:
            callback(s, x, log_x0)
    return x


def check_steps(process, steps) -> None:
    process.time_points(steps)


ancestral.check = check_steps


def guided_log_probs(model, cond, uncond, scale: float):
    """Classifier-free guided denoiser over log-probabilities (B, K, ...) (not guidance.guided, which
    reads channels off x's shape: ids have none). scale 1 is the conditional model."""
    scale = float(scale)
    if not math.isfinite(scale) or scale < 0:
        raise UserError(f"guidance scale must be a finite number >= 0 (1 = no guidance), got {scale}")
    if scale == 1.0:
        return lambda x, t: model(x, t, cond)
    both = cat_cond(as_cond(cond), as_cond(uncond))

    def denoiser(x, t):
        B = x.shape[0]
        out = model(torch.cat([x, x]), torch.cat([t, t]), both)  # (2B, K, ...): conditional rows first
        log_c = torch.log_softmax(out[:B].float(), 1)
        log_u = torch.log_softmax(out[B:].float(), 1)
        return torch.log_softmax(log_u + scale * (log_c - log_u), 1)

    return denoiser
