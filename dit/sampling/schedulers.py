"""diffusers' schedulers as samplers of the Gaussian process, through one adapter.

Every scheduler is built from the diffusion's own betas (`trained_betas`), so linear and cosine
schedules are both exact, with prediction_type "epsilon". "trailing" timestep spacing makes the
first step start at t = T-1 (pure noise), like our DDPM/DDIM; the default "linspace"/"leading"
spacings of some schedulers start lower and leave visible residual noise at few steps.

Quirks worth knowing:
- DDIMScheduler clips pred_x0 to [-1, 1] by default (clip_sample=True): wrong for latents, so off.
- Euler's sigmas run sigma_max = sqrt((1-abar_{T-1})/abar_{T-1}) (~157 for linear T=1000) .. 0 and
  its init_noise_sigma is sigma_max, not sqrt(sigma_max^2 + 1): x_T is scaled to the VE space and
  scale_model_input divides by sqrt(sigma^2 + 1) before the denoiser (relative error ~2e-5).
- Heun makes two model calls per step except the last: `steps` n costs 2n - 1 evaluations.
- Schedulers are stateful (multistep history, step index): a fresh one is built for every call.
"""

import inspect

import torch

from dit.errors import UserError
from dit.layout import first_channels, num_channels
from dit.processes.gaussian import GaussianDiffusion
from dit.sampling.noise import PerSampleNoise

# name -> (diffusers class name, options). Classes are resolved lazily: importing diffusers takes
# seconds, and most runs use the built-in ddpm sampler.
SCHEDULERS = {
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "diffusers-ddim": ("DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": True}),
}


def make_scheduler(name: str, diffusion: GaussianDiffusion):
    """A fresh diffusers scheduler for the full (un-respaced) process of `diffusion`."""
    if name not in SCHEDULERS:
        raise UserError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    if diffusion.is_respaced:
        raise ValueError("diffusers schedulers need the full T-step process, not a respaced one")
    import diffusers

    cls_name, options = SCHEDULERS[name]
    cls = getattr(diffusers, cls_name)
    kwargs = {"num_train_timesteps": diffusion.num_timesteps, "trained_betas": diffusion.betas.numpy(),
              "prediction_type": "epsilon", "timestep_spacing": "trailing", **options}
    # Drop options an installed diffusers version does not know rather than fail on them.
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in kwargs.items() if k in accepted})


def _generator(noise):
    """Our noise object -> the `generator=` diffusers' step() takes (None: global RNG)."""
    if noise is None or noise is torch.randn_like:
        return None
    if isinstance(noise, PerSampleNoise):
        return noise.generators
    raise TypeError("diffusers schedulers take noise=None, torch.randn_like or a PerSampleNoise")


@torch.no_grad()
def scheduler_sample(denoiser, diffusion: GaussianDiffusion, x_T: torch.Tensor, name: str, steps: int,
                     noise=None, progress: bool = False, eta: float = 0.0, clip_denoised: bool = False) -> torch.Tensor:
    """Sample with diffusers scheduler `name` in `steps` steps. x_T (B, C, ...) ~ N(0, I) -> x_0.
    The denoiser sees VP-scaled x and the scheduler's (original, integer-valued) timesteps."""
    if clip_denoised:
        raise UserError(f"clip_denoised is only supported by ddpm and ddim, not {name!r}")
    if diffusion.is_respaced:
        raise ValueError("diffusers schedulers need the full T-step process, not a respaced one")
    check_steps(name, diffusion, steps)
    scheduler = make_scheduler(name, diffusion)
    scheduler.set_timesteps(steps, device=x_T.device)
    step_params = inspect.signature(scheduler.step).parameters
    step_kwargs = {}
    if "generator" in step_params:
        step_kwargs["generator"] = _generator(noise)
    if eta != 0.0:
        if "eta" not in step_params:
            raise UserError(f"eta only applies to ddim and diffusers-ddim, not {name!r}")
        step_kwargs["eta"] = eta

    B, C = x_T.shape[0], num_channels(x_T)
    x = x_T * scheduler.init_noise_sigma
    timesteps = scheduler.timesteps
    if progress:
        from tqdm.auto import tqdm
        timesteps = tqdm(timesteps)
    for t in timesteps:
        t_batch = torch.full((B,), float(t), device=x.device)  # (B,) original timestep indices
        eps = first_channels(denoiser(scheduler.scale_model_input(x, t), t_batch), C)  # drop variance channels
        x = scheduler.step(eps, t, x, **step_kwargs).prev_sample
    return x.to(x_T.dtype)


def scheduler_sampler(name: str):
    """The sampler-registry entry for scheduler `name` (dit/sampling/catalog.py)."""
    def run(denoiser, process, x_T, steps, noise=None, progress=False, **options):
        return scheduler_sample(denoiser, process, x_T, name, steps, noise, progress, **options)
    run.__name__ = f"sample_{name.replace('-', '_').replace('+', 'p')}"
    run.check = lambda diffusion, steps: check_steps(name, diffusion, steps)
    return run


def check_steps(name: str, diffusion: GaussianDiffusion, steps) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= diffusion.num_timesteps:
        raise UserError(f"{name} steps must be an int in 1..{diffusion.num_timesteps}, got {steps!r}")
