"""DDPM and DDIM samplers: plain loops over a denoiser (k-diffusion style).

A denoiser is `denoiser(x, t) -> model_output`: x is (B, C, ...), t a float tensor (B,) of ORIGINAL
timestep indices (see dit/diffusion.py), the output has C (eps) or 2C (eps, variance) channels.
Class labels and guidance are bound by the caller (dit/guidance.py). The per-step math lives in
GaussianDiffusion.p_sample / ddim_step; only the loops are here.

The loops follow the public DiT p_sample_loop / ddim_sample_loop: the same step order and the noise
drawn at EVERY step, also the last one where it is masked out, so that feeding the same noise
stream reproduces the public trajectory to float32 rounding.
"""

from collections.abc import Callable

import torch

from dit.diffusion import GaussianDiffusion

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Noise = Callable[[torch.Tensor], torch.Tensor]


def _steps(diffusion: GaussianDiffusion, progress: bool):
    """Indices S-1, ..., 0 of the (respaced) process: sampling runs time downward."""
    indices = range(diffusion.num_timesteps - 1, -1, -1)
    if progress:
        from tqdm.auto import tqdm
        indices = tqdm(indices)
    return indices


@torch.no_grad()
def ddpm_sample(denoiser: Denoiser, diffusion: GaussianDiffusion, x_T: torch.Tensor,
                noise: Noise = torch.randn_like, clip_denoised: bool = False, progress: bool = False,
                callback: Callable | None = None) -> torch.Tensor:
    """Ancestral sampling (DDPM Algorithm 2) over every step of `diffusion` (respace it first: the
    DiT paper uses 250 of T = 1000). x_T (B, C, ...) -> x_0 of the same shape."""
    x = x_T
    B = x.shape[0]
    for i in _steps(diffusion, progress):
        t = torch.full((B,), i, device=x.device, dtype=torch.long)
        out = diffusion.p_sample(denoiser(x, diffusion.model_timesteps(t)), x, t, noise(x), clip_denoised)
        x = out["sample"]
        if callback is not None:
            callback(i, x, out["pred_xstart"])
    return x


@torch.no_grad()
def ddim_sample(denoiser: Denoiser, diffusion: GaussianDiffusion, x_T: torch.Tensor, eta: float = 0.0,
                noise: Noise = torch.randn_like, clip_denoised: bool = False, progress: bool = False,
                callback: Callable | None = None) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12) over every step of `diffusion`; eta = 0 is the deterministic
    ODE-like sampler, eta = 1 has DDPM's posterior variance. x_T (B, C, ...) -> x_0."""
    x = x_T
    B = x.shape[0]
    for i in _steps(diffusion, progress):
        t = torch.full((B,), i, device=x.device, dtype=torch.long)
        out = diffusion.ddim_step(denoiser(x, diffusion.model_timesteps(t)), x, t, noise(x), eta, clip_denoised)
        x = out["sample"]
        if callback is not None:
            callback(i, x, out["pred_xstart"])
    return x
