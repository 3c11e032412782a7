"""DDPM and DDIM samplers of the Gaussian process: plain loops over a denoiser (k-diffusion style).

A denoiser is `denoiser(x, t) -> network output`: x is (B, C, ...), t a float tensor (B,) of ORIGINAL
timestep indices (see dit/processes/gaussian.py), the output has C (eps) or 2C (eps, variance)
channels. Conditioning and guidance are bound by the caller (dit/sampling/guidance.py). The per-step
math lives in GaussianDiffusion.p_sample / ddim_step; only the loops are here.

The loops follow the public DiT p_sample_loop / ddim_sample_loop: the same step order and the noise
drawn at EVERY step, also the last one where it is masked out, so that feeding the same noise
stream reproduces the public trajectory to float32 rounding.
"""

from collections.abc import Callable

import torch

from dit.errors import UserError
from dit.processes.gaussian import GaussianDiffusion

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
                callback: Callable | None = None, classifier_grad: Callable | None = None) -> torch.Tensor:
    """Ancestral sampling (DDPM Algorithm 2) over every step of `diffusion` (respace it first: the
    DiT paper uses 250 of T = 1000). x_T (B, C, ...) -> x_0 of the same shape.
    classifier_grad(x_t, original t) -> s * grad log p(y | x_t): ADM's mean shift (Algorithm 1,
    dit/sampling/classifier_guidance.py), called with the ORIGINAL timestep like the denoiser."""
    x = x_T
    B = x.shape[0]
    for i in _steps(diffusion, progress):
        t = torch.full((B,), i, device=x.device, dtype=torch.long)
        t_model = diffusion.model_timesteps(t)
        shift = None if classifier_grad is None else classifier_grad(x, t_model)
        out = diffusion.p_sample(denoiser(x, t_model), x, t, noise(x), clip_denoised, shift)
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


def check_steps(name: str, diffusion: GaussianDiffusion, steps) -> None:
    # One evenly spaced step would be t = 0 alone: the sampler would never see t = T-1.
    if not isinstance(steps, int) or isinstance(steps, bool) or not 2 <= steps <= diffusion.num_timesteps:
        raise UserError(f"{name} steps must be an int in 2..{diffusion.num_timesteps}, got {steps!r}")


def _respaced(diffusion: GaussianDiffusion, name: str, steps) -> GaussianDiffusion:
    if diffusion.is_respaced:
        raise ValueError("the sampler respaces the process itself: pass the full T-step process")
    check_steps(name, diffusion, steps)
    return diffusion.respace(steps)


def ddpm(denoiser, diffusion: GaussianDiffusion, x_T, steps, noise=None, progress=False, eta=0.0, clip_denoised=False,
         classifier_grad=None):
    """Registry entry "ddpm": the full process respaced evenly to `steps` (DiT: 250 of 1000)."""
    if eta != 0.0:
        raise UserError("eta only applies to ddim and diffusers-ddim, not ddpm")
    return ddpm_sample(denoiser, _respaced(diffusion, "ddpm", steps), x_T, torch.randn_like if noise is None else noise, clip_denoised,
                       progress, classifier_grad=classifier_grad)


def ddim(denoiser, diffusion: GaussianDiffusion, x_T, steps, noise=None, progress=False, eta=0.0, clip_denoised=False):
    """Registry entry "ddim": the full process respaced evenly to `steps`."""
    return ddim_sample(denoiser, _respaced(diffusion, "ddim", steps), x_T, eta, torch.randn_like if noise is None else noise,
                       clip_denoised, progress)


ddpm.check = lambda diffusion, steps: check_steps("ddpm", diffusion, steps)
ddim.check = lambda diffusion, steps: check_steps("ddim", diffusion, steps)
