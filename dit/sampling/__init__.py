"""Sampling: samplers are functions over a denoiser; guidance wraps the denoiser.

    noise.py        per-sample noise: sample i comes from seed base + i, whatever the batching
    registry.py     samplers registered per process; run_sampler, the one entry point
    ancestral.py    DDPM and DDIM loops of the Gaussian process
    schedulers.py   diffusers' schedulers (DPM-Solver++, UniPC, Euler, Heun, DDIM) as Gaussian samplers
    guidance.py     class conditioning and classifier-free guidance as denoiser wrappers
    generate.py     network + process + autoencoder -> uint8 images (sample.py, previews, evaluation)

Importing this package registers the Gaussian process's samplers.
"""

from dit.sampling import ancestral, schedulers
from dit.sampling.registry import check_sampler, get_sampler, register_sampler, run_sampler, sampler_names

register_sampler("gaussian", "ddpm", ancestral.ddpm)
register_sampler("gaussian", "ddim", ancestral.ddim)
for _name in schedulers.SCHEDULERS:
    register_sampler("gaussian", _name, schedulers.scheduler_sampler(_name))

__all__ = ["check_sampler", "get_sampler", "register_sampler", "run_sampler", "sampler_names"]
